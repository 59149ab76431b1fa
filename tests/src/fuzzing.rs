//! The fuzz harnesses: the functions the cargo-fuzz targets in `fuzz/` call, here so that the
//! committed corpus replays on stable Rust (`tests/tests/fuzz_corpus.rs`).
//!
//! Each harness takes the fuzzer's bytes, runs them through the library and checks what the
//! library promises; it panics (which the fuzzer reports as a crash) when a promise is broken,
//! and otherwise returns a short label of the path taken (`"accepted"`, or the error variant),
//! which the replay test uses to check the corpus still covers many paths.
//!
//! - [`parse_bytes`]: any bytes through [`formats::parse`]; an accepted file must answer every
//!   accessor consistently (f32 and int8 tensors each through their own accessors, the other
//!   refusing them) and be rewritable by [`FileBuilder`] into an equivalent file.
//! - [`parse_with_fixed_crc`]: the same after zero-filling the bytes up to the length the
//!   prefix declares and recomputing the CRC trailer, so mutations of a valid file get past
//!   the checksum and reach the header decoder and the table checks. The zero fill lets a
//!   valid file be stored without its payload (zero weights are valid), which keeps the
//!   inputs, the fuzzing and the committed corpus small.
//! - [`engine_edge`]: an edge model (K = 1 or 5) generated from a seed, a random task, and a
//!   list of edits overwriting bytes of the model file, the support features or the queries
//!   (the CRC is then recomputed unless the input says not to); the file goes through
//!   `Model::load`, `prepare`, `classify`, `classify_batch` and `generated_weights`, whose
//!   outcomes must match what the file and the features allow.

use std::sync::OnceLock;

use engine::{EngineError, Input, Model, Prediction, Workspace};
use formats::{
    expected_tensors, parse, AlignedBuf, Dtype, EncoderKind, FileBuilder, FileKind, FormatError,
    LayerNormKind, ModelConfig, ModelFile, Provenance, QuantAxis, Sizes, TensorEntry,
    TrainingState, Validation, MAX_TENSORS,
};

use crate::random::{RandomModel, RandomTask};

/// The name of an enum variant from its `Debug` form (`Truncated { .. }` -> `Truncated`).
fn variant(debug: &str) -> String {
    debug
        .split([' ', '(', '{'])
        .next()
        .unwrap_or(debug)
        .to_string()
}

fn format_label(e: &FormatError) -> String {
    // Exercise Display: it must not panic and must say something.
    assert!(!e.to_string().is_empty());
    format!("format: {}", variant(&format!("{e:?}")))
}

/// Replaces the last 4 bytes of `bytes` (if it has that many) by the CRC-32 of the rest.
pub fn fix_crc(bytes: &mut [u8]) {
    if let Some(body) = bytes.len().checked_sub(4) {
        let crc = crc32(&bytes[..body]);
        bytes[body..].copy_from_slice(&crc.to_le_bytes());
    }
}

/// The file's CRC-32 (ISO-HDLC), from `crc32fast`: a different implementation than the
/// `crc` crate `formats` uses.
fn crc32(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

/// Target `parse_bytes`: `data` through [`formats::parse`].
pub fn parse_bytes(data: &[u8]) -> String {
    match parse(data) {
        Ok(file) => {
            check_accepted(data, &file);
            "accepted".to_string()
        }
        Err(e) => format_label(&e),
    }
}

/// Most zero bytes [`parse_with_fixed_crc`] appends to reach the declared length.
pub const MAX_ZERO_FILL: usize = 256 * 1024;

/// The file length the 20-byte prefix of `bytes` declares (`align64(20 + H) + P + 4`).
fn declared_len(bytes: &[u8]) -> Option<u64> {
    let field = |at: usize| -> Option<u64> {
        let b = bytes.get(at..at + 4)?;
        Some(u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])))
    };
    let (header, payload) = (field(12)?, field(16)?);
    Some((20 + header).div_ceil(64) * 64 + payload + 4)
}

/// Target `parse_fixed_crc`: `data` zero-filled up to the length its prefix declares (if that
/// is at most [`MAX_ZERO_FILL`] more), with its CRC trailer recomputed, through
/// [`formats::parse`].
pub fn parse_with_fixed_crc(data: &[u8]) -> String {
    let mut bytes = data.to_vec();
    if let Some(declared) = declared_len(&bytes) {
        let missing = declared.saturating_sub(bytes.len() as u64);
        if missing > 0 && missing <= MAX_ZERO_FILL as u64 {
            bytes.resize(bytes.len() + missing as usize, 0);
        }
    }
    fix_crc(&mut bytes);
    let label = parse_bytes(&bytes);
    assert_ne!(
        label, "format: ChecksumMismatch",
        "a recomputed CRC must match"
    );
    label
}

/// Checks everything an accepted file promises.
fn check_accepted(data: &[u8], file: &ModelFile<'_>) {
    let config = file.config();
    assert_eq!(config.validate(), Ok(()));
    let kind = file.kind();
    assert!(!(kind == FileKind::Inference && file.training().is_some()));
    assert_eq!(
        file.trainer_options(),
        file.training().as_ref().map(|t| &t.trainer_options[..])
    );
    let count = file.tensor_count();
    assert!(count <= MAX_TENSORS);
    assert_eq!(file.entries().count(), count);

    // The payload is the file's bytes before the CRC trailer.
    let payload = file.payload();
    let payload_at = payload.as_ptr() as usize - data.as_ptr() as usize;
    assert_eq!(payload_at % 64, 0);
    assert_eq!(payload_at + payload.len() + 4, data.len());

    let mut previous_end = 0usize;
    let mut tensors = Vec::with_capacity(count);
    let mut quantised = Vec::new();
    for entry in file.entries() {
        let bytes = file.tensor_bytes(&entry.name).unwrap();
        let start = bytes.as_ptr() as usize - payload.as_ptr() as usize;
        assert_eq!(start, entry.offset as usize);
        assert_eq!(start % 64, 0);
        assert!(start >= previous_end, "{} overlaps", entry.name);
        assert_eq!(bytes.len() as u64, entry.byte_len().unwrap());
        previous_end = start + bytes.len();
        assert!(file.contains(&entry.name));
        assert_eq!(file.entry(&entry.name).unwrap(), entry);
        if entry.quant.is_some() {
            quantised.push(check_int8_entry(file, &entry, bytes));
            continue;
        }
        assert_eq!(file.dtype(&entry.name).unwrap(), Dtype::F32);
        assert!(matches!(
            file.tensor_i8(&entry.name),
            Err(FormatError::WrongDtype { .. })
        ));
        let values = file.to_vec(&entry.name).unwrap();
        let mut copy = vec![0.0; values.len()];
        file.copy_tensor(&entry.name, &mut copy).unwrap();
        assert!(same_bits(&values, &copy));
        match file.tensor(&entry.name) {
            Ok(borrowed) => assert!(same_bits(borrowed, &values)),
            Err(e) => assert!(matches!(e, FormatError::NotZeroCopy { .. })),
        }
        if !values.is_empty() {
            let mut short = vec![0.0; values.len() - 1];
            assert!(matches!(
                file.copy_tensor(&entry.name, &mut short),
                Err(FormatError::LengthMismatch { .. })
            ));
        }
        tensors.push((entry.name.to_string(), values));
    }
    for spec in expected_tensors(&config, kind) {
        assert!(file.contains(spec.name), "{} missing", spec.name);
    }
    assert!(file.entry("no such tensor").is_err());

    let header = file.to_header();
    assert_eq!(header.tensors.len(), count);
    assert_eq!(header.kind, kind);

    // In an aligned copy every tensor is borrowed in place.
    let aligned = AlignedBuf::from_bytes(data);
    let in_place = parse(&aligned).unwrap();
    for (name, values) in &tensors {
        assert!(same_bits(in_place.tensor(name).unwrap(), values));
    }
    for q in &quantised {
        q.check_in_place(&in_place);
    }

    // The writer can write what the reader accepts: an equivalent file, at most as long (the
    // writer's layout has no spare padding).
    let mut builder = FileBuilder::new(kind, config, file.provenance()).unwrap();
    if let Some(state) = file.training() {
        builder.training_state(state);
    }
    for (name, values) in &tensors {
        builder.tensor(name, values).unwrap();
    }
    for q in &quantised {
        builder
            .tensor_i8(&q.name, q.axis, &q.values, &q.scales)
            .unwrap();
    }
    let rebuilt = builder.build().unwrap();
    assert!(rebuilt.len() <= data.len());
    let reread = parse(&rebuilt).unwrap();
    assert_eq!(reread.kind(), kind);
    assert_eq!(reread.config(), config);
    assert!(same_provenance(&reread.provenance(), &file.provenance()));
    assert!(same_training(
        reread.training().as_ref(),
        file.training().as_ref()
    ));
    assert_eq!(reread.tensor_count(), count);
    for (name, values) in &tensors {
        assert!(same_bits(&reread.to_vec(name).unwrap(), values));
    }
    let names: Vec<_> = reread.entries().map(|e| e.name.to_string()).collect();
    let original: Vec<_> = file.entries().map(|e| e.name.to_string()).collect();
    assert_eq!(names, original);
    let rebuilt = AlignedBuf::from_bytes(&rebuilt);
    let reread = parse(&rebuilt).unwrap();
    for q in &quantised {
        q.check_in_place(&reread);
    }
}

/// An int8 tensor of an accepted file, copied out of its bytes.
struct Int8Tensor {
    name: String,
    axis: QuantAxis,
    /// The row-pair values (`formats::quant`), decoded from little-endian i16.
    values: Vec<i16>,
    scales: Vec<f32>,
}

impl Int8Tensor {
    /// The file (parsed from an aligned buffer) borrows the same values and scales in place,
    /// valid and dequantisable: every weight is in `[-127, 127]`, the row pairs repack to the
    /// stored values, and the dequantised matrix is each weight times its row's scale.
    fn check_in_place(&self, file: &ModelFile<'_>) {
        let q = file.tensor_i8(&self.name).unwrap();
        assert_eq!(q.axis, self.axis);
        assert_eq!(q.values, &self.values[..]);
        assert!(same_bits(q.scales, &self.scales));
        assert_eq!(q.check(&self.name), Ok(()));
        assert_eq!(q.pair_stride, formats::quant::pair_stride(q.depth));
        let mut rows = Vec::with_capacity(q.rows * q.depth);
        for r in 0..q.rows {
            for k in 0..q.depth {
                let w = q.weight(r, k).unwrap();
                assert!(w != i8::MIN);
                rows.push(w);
            }
        }
        assert_eq!(q.weight(q.rows, 0), None);
        assert_eq!(q.weight(0, q.depth), None);
        let mut packed = vec![0; q.values.len()];
        formats::quant::pack_pairs(q.rows, q.depth, &rows, &mut packed).unwrap();
        assert_eq!(packed, q.values);
        let mut out = vec![0.0; q.rows * q.depth];
        formats::quant::dequantize(&q, &mut out).unwrap();
        assert!(out.iter().all(|v| v.is_finite()));
        for (r, row) in rows.chunks_exact(q.depth.max(1)).enumerate() {
            for (k, &w) in row.iter().enumerate() {
                let at = match q.axis {
                    QuantAxis::Out => k * q.rows + r,
                    QuantAxis::In => r * q.depth + k,
                };
                assert_eq!(out[at].to_bits(), (f32::from(w) * q.scales[r]).to_bits());
            }
        }
    }
}

/// Checks what an accepted int8 tensor promises (only along the axis `quant_axis` gives, the
/// f32 accessors refuse it, borrowed in place where the buffer allows) and copies it out of
/// its stored bytes (values, then little-endian scales).
fn check_int8_entry(file: &ModelFile<'_>, entry: &TensorEntry, bytes: &[u8]) -> Int8Tensor {
    let name = entry.name.as_str();
    let axis = entry.quant.unwrap();
    assert_eq!(formats::quant_axis(name), Some(axis));
    assert_eq!(file.dtype(name).unwrap(), Dtype::I8);
    let wrong = |e: FormatError| matches!(e, FormatError::WrongDtype { .. });
    assert!(wrong(file.tensor(name).unwrap_err()));
    assert!(wrong(file.to_vec(name).unwrap_err()));
    let mut out = vec![0.0; entry.elements().unwrap() as usize];
    assert!(wrong(file.copy_tensor(name, &mut out).unwrap_err()));
    let (rows, depth) = entry.quant_rows_depth().unwrap();
    let count = formats::quant::pairs(rows) * formats::quant::pair_stride(depth);
    let (values, scales) = bytes.split_at(2 * count);
    let copy = Int8Tensor {
        name: name.to_string(),
        axis,
        values: values
            .chunks_exact(2)
            .map(|c| i16::from_le_bytes([c[0], c[1]]))
            .collect(),
        scales: scales
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    };
    match file.tensor_i8(name) {
        Ok(q) => {
            assert_eq!(q.values, &copy.values[..]);
            assert!(same_bits(q.scales, &copy.scales));
        }
        Err(e) => assert!(matches!(e, FormatError::NotZeroCopy { .. }), "{e:?}"),
    }
    copy
}

/// Bitwise equality of two float slices (NaNs included).
fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

fn same_f32(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits()
}

fn same_provenance(a: &Provenance, b: &Provenance) -> bool {
    let validation = match (a.validation, b.validation) {
        (None, None) => true,
        (Some(Validation { accuracy, ci95 }), Some(v)) => {
            same_f32(accuracy, v.accuracy) && same_f32(ci95, v.ci95)
        }
        _ => false,
    };
    validation
        && (
            &a.dataset,
            a.shots,
            a.steps,
            a.seed,
            &a.tool,
            &a.tool_version,
        ) == (
            &b.dataset,
            b.shots,
            b.steps,
            b.seed,
            &b.tool,
            &b.tool_version,
        )
}

fn same_training(a: Option<&TrainingState>, b: Option<&TrainingState>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => {
            same_f32(a.best_val_accuracy, b.best_val_accuracy)
                && (
                    a.step,
                    a.best_step,
                    a.skipped_steps,
                    a.rng_state,
                    &a.trainer_options,
                ) == (
                    b.step,
                    b.best_step,
                    b.skipped_steps,
                    b.rng_state,
                    &b.trainer_options,
                )
        }
        _ => false,
    }
}

// ---- the engine target ----------------------------------------------------------------------

/// Bytes of one edit record of [`engine_edge`]'s input.
pub const EDIT_LEN: usize = 11;
/// Model seeds [`engine_edge`] chooses from.
const MODEL_SEEDS: usize = 4;
/// Task seeds [`engine_edge`] chooses from.
const TASK_SEEDS: usize = 4;
/// Queries per class in [`engine_edge`]'s tasks.
const QUERIES_PER_CLASS: usize = 1;

/// How [`engine_edge`] reads its input's first two bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EngineCase {
    /// 5 shots (else 1).
    pub five_shot: bool,
    /// A training file (else inference).
    pub training: bool,
    /// Leave the CRC as the edits left it (else recompute it).
    pub keep_crc: bool,
    /// Which model seed (below [`MODEL_SEEDS`]).
    pub model_seed: u8,
    /// Which task seed (below [`TASK_SEEDS`]).
    pub task_seed: u8,
}

impl EngineCase {
    /// The case of an input's first two bytes.
    pub fn decode(flags: u8, task: u8) -> Self {
        Self {
            five_shot: flags & 1 != 0,
            training: flags & 2 != 0,
            keep_crc: flags & 4 != 0,
            model_seed: (flags >> 3) % MODEL_SEEDS as u8,
            task_seed: task % TASK_SEEDS as u8,
        }
    }

    /// The two bytes that decode to this case.
    pub fn encode(self) -> [u8; 2] {
        [
            u8::from(self.five_shot)
                | u8::from(self.training) << 1
                | u8::from(self.keep_crc) << 2
                | self.model_seed << 3,
            self.task_seed,
        ]
    }

    fn shots(self) -> u32 {
        if self.five_shot {
            5
        } else {
            1
        }
    }

    fn kind(self) -> FileKind {
        if self.training {
            FileKind::Training
        } else {
            FileKind::Inference
        }
    }
}

/// What an edit of [`engine_edge`]'s input overwrites.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EditTarget {
    /// The model file's bytes.
    Model,
    /// The support features (`N K x D` little-endian f32, class-major).
    Support,
    /// The queries (`N x D` little-endian f32).
    Queries,
}

/// One edit: `count` copies of the 4 bytes `value` written from byte `offset` of the target
/// (both taken modulo the target's length, and cut at its end).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Edit {
    /// What it overwrites.
    pub target: EditTarget,
    /// First byte.
    pub offset: u32,
    /// Copies of `value`.
    pub count: u16,
    /// The bytes written (an f32 in the features or the weights).
    pub value: [u8; 4],
}

impl Edit {
    /// The edit of an 11-byte record: target, offset (u32 LE), count (u16 LE), value.
    pub fn decode(record: &[u8; EDIT_LEN]) -> Self {
        let target = match record[0] % 3 {
            0 => EditTarget::Model,
            1 => EditTarget::Support,
            _ => EditTarget::Queries,
        };
        Self {
            target,
            offset: u32::from_le_bytes([record[1], record[2], record[3], record[4]]),
            count: u16::from_le_bytes([record[5], record[6]]),
            value: [record[7], record[8], record[9], record[10]],
        }
    }

    /// The record of this edit.
    pub fn encode(self) -> [u8; EDIT_LEN] {
        let mut out = [0u8; EDIT_LEN];
        out[0] = match self.target {
            EditTarget::Model => 0,
            EditTarget::Support => 1,
            EditTarget::Queries => 2,
        };
        out[1..5].copy_from_slice(&self.offset.to_le_bytes());
        out[5..7].copy_from_slice(&self.count.to_le_bytes());
        out[7..].copy_from_slice(&self.value);
        out
    }

    fn apply(self, bytes: &mut [u8]) {
        if bytes.is_empty() {
            return;
        }
        let mut at = self.offset as usize % bytes.len();
        for _ in 0..self.count.max(1) {
            for &b in &self.value {
                if at >= bytes.len() {
                    return;
                }
                bytes[at] = b;
                at += 1;
            }
        }
    }
}

/// The base model of a case, generated once per process.
fn base_model(case: EngineCase) -> &'static [u8] {
    static MODELS: [OnceLock<Vec<u8>>; 4 * MODEL_SEEDS] = [const { OnceLock::new() }; 16];
    let index = usize::from(case.five_shot) * 2 * MODEL_SEEDS
        + usize::from(case.training) * MODEL_SEEDS
        + usize::from(case.model_seed);
    MODELS[index].get_or_init(|| {
        let mut model =
            RandomModel::perturbed(ModelConfig::edge(case.shots()), case.model_seed.into());
        model.kind = case.kind();
        model.build().expect("the edge configuration is valid")
    })
}

/// The base task of a case (support rows, then query rows, as little-endian f32 bytes).
fn base_task(case: EngineCase) -> &'static (Vec<u8>, Vec<u8>) {
    static TASKS: [OnceLock<(Vec<u8>, Vec<u8>)>; 2 * TASK_SEEDS] = [const { OnceLock::new() }; 8];
    let index = usize::from(case.five_shot) * TASK_SEEDS + usize::from(case.task_seed);
    TASKS[index].get_or_init(|| {
        let config = ModelConfig::edge(case.shots());
        let task = RandomTask::new(&config, case.task_seed.into(), QUERIES_PER_CLASS, 0.5);
        let bytes = |rows: &[Vec<f32>]| -> Vec<u8> {
            rows.iter()
                .flatten()
                .flat_map(|v| v.to_le_bytes())
                .collect()
        };
        (bytes(&task.support), bytes(&task.queries))
    })
}

/// Little-endian `f32` bytes as rows of `D` values.
fn rows<const D: usize>(bytes: &[u8]) -> Vec<[f32; D]> {
    bytes
        .chunks_exact(4 * D)
        .map(|row| {
            let mut out = [0.0; D];
            for (v, b) in out.iter_mut().zip(row.chunks_exact(4)) {
                *v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
            out
        })
        .collect()
}

/// Target `engine_edge`. Input: two bytes of [`EngineCase`], then [`EDIT_LEN`]-byte
/// [`Edit`] records (a trailing partial record is ignored).
pub fn engine_edge(data: &[u8]) -> String {
    let (case, edits) = match data {
        [flags, task, rest @ ..] => (EngineCase::decode(*flags, *task), rest),
        _ => return "short input".to_string(),
    };
    let mut model = base_model(case).to_vec();
    let (support, queries) = base_task(case);
    let (mut support, mut queries) = (support.clone(), queries.clone());
    for record in edits.chunks_exact(EDIT_LEN) {
        let Ok(record) = record.try_into() else {
            continue; // chunks_exact yields EDIT_LEN bytes
        };
        let edit = Edit::decode(record);
        match edit.target {
            EditTarget::Model => edit.apply(&mut model),
            EditTarget::Support => edit.apply(&mut support),
            EditTarget::Queries => edit.apply(&mut queries),
        }
    }
    if !case.keep_crc {
        fix_crc(&mut model);
    }
    let model = AlignedBuf::from_bytes(&model);
    if case.five_shot {
        let workspace = Box::new(engine::Edge5ShotWorkspace::new());
        run_engine::<64, 32, 4, 5, 5, 64, 25, 64, _, _>(&model, &support, &queries, workspace)
    } else {
        let workspace = Box::new(engine::Edge1ShotWorkspace::new());
        run_engine::<64, 32, 4, 5, 1, 64, 5, 64, _, _>(&model, &support, &queries, workspace)
    }
}

/// The first non-finite value of `rows`, as (row, column).
fn first_non_finite<const D: usize>(rows: &[[f32; D]]) -> Option<(usize, usize)> {
    rows.iter()
        .enumerate()
        .find_map(|(r, row)| row.iter().position(|v| !v.is_finite()).map(|c| (r, c)))
}

/// What `load` must answer for a file `formats::parse` accepted, given the compiled sizes.
fn expected_load(config: &ModelConfig, compiled: Sizes) -> Result<(), &'static str> {
    if config.layer_norm == LayerNormKind::TaskWide {
        return Err("TaskWideLayerNorm");
    }
    if config.encoder == EncoderKind::Mlp {
        return Err("MlpEncoder");
    }
    if config.sizes() != compiled {
        return Err("ConfigMismatch");
    }
    Ok(())
}

/// A prediction must have finite logits and name the first largest.
fn check_prediction<const N: usize>(p: &Prediction<N>) {
    assert!(p.logits.iter().all(|l| l.is_finite()), "{p:?}");
    let best = p
        .logits
        .iter()
        .enumerate()
        .fold(0, |best, (i, &l)| if l > p.logits[best] { i } else { best });
    assert_eq!(p.class, best, "{p:?}");
}

/// The engine of `workspace`'s sizes on the model file `bytes` and the support and query
/// rows (little-endian `f32` bytes); returns the label of the path taken.
fn run_engine<
    const D: usize,
    const d: usize,
    const h: usize,
    const N: usize,
    const K: usize,
    const G: usize,
    const NK: usize,
    const d2: usize,
    const LEN: usize,
    const B: usize,
>(
    bytes: &[u8],
    support: &[u8],
    queries: &[u8],
    mut workspace: Box<Workspace<LEN, B>>,
) -> String {
    let (support_rows, query_rows) = (rows::<D>(support), rows::<D>(queries));
    let (support, queries) = (support_rows.as_slice(), query_rows.as_slice());
    let compiled = Model::<D, d, h, N, K, G, NK, d2>::SIZES;
    let loaded = Model::<D, d, h, N, K, G, NK, d2>::load(bytes);
    let model = match (parse(bytes), loaded) {
        (Err(expected), Err(e)) => {
            // Compared as text: an error may hold a NaN (an invalid epsilon), and NaN != NaN.
            let expected_error = EngineError::Format(expected.clone());
            assert_eq!(format!("{e:?}"), format!("{expected_error:?}"));
            return format_label(&expected);
        }
        (Err(expected), Ok(_)) => panic!("load accepted a file parse refuses: {expected}"),
        (Ok(file), loaded) => match (expected_load(&file.config(), compiled), loaded) {
            (Ok(()), Ok(model)) => model,
            (Err(expected), Err(e)) => {
                assert!(!e.to_string().is_empty());
                assert_eq!(variant(&format!("{e:?}")), expected, "{e:?}");
                return format!("load: {expected}");
            }
            (expected, loaded) => panic!(
                "load of {:?}: expected {expected:?}, got {:?}",
                file.config(),
                loaded.err()
            ),
        },
    };

    let support: &[[f32; D]; NK] = support.try_into().expect("NK support rows");
    let mut task = match model.prepare(&mut workspace, support) {
        Ok(task) => {
            assert_eq!(
                first_non_finite(support),
                None,
                "prepare took a non-finite feature"
            );
            task
        }
        Err(EngineError::NonFiniteInput {
            input: Input::Support,
            row,
            column,
        }) => {
            assert_eq!(first_non_finite(support), Some((row, column)));
            return "prepare: NonFiniteInput".to_string();
        }
        Err(EngineError::NonFinite { stage }) => {
            assert_eq!(first_non_finite(support), None);
            return format!("prepare: NonFinite {stage}");
        }
        Err(e) => panic!("prepare: unexpected {e:?}"),
    };

    let mut label = "classified".to_string();
    for query in queries {
        match task.classify(query) {
            Ok(p) => {
                assert!(query.iter().all(|v| v.is_finite()));
                check_prediction(&p);
            }
            Err(EngineError::NonFiniteInput {
                input: Input::Query,
                row: 0,
                column,
            }) => {
                assert_eq!(
                    first_non_finite(core::slice::from_ref(query)),
                    Some((0, column))
                );
                label = "classify: NonFiniteInput".to_string();
            }
            Err(EngineError::NonFinite { stage }) => {
                assert!(query.iter().all(|v| v.is_finite()));
                label = format!("classify: NonFinite {stage}");
            }
            Err(e) => panic!("classify: unexpected {e:?}"),
        }
    }

    let mut out = vec![Prediction::zeroed(); queries.len()];
    match task.classify_batch(queries, &mut out) {
        Ok(()) => {
            assert_eq!(first_non_finite(queries), None);
            out.iter().for_each(check_prediction);
        }
        Err(EngineError::NonFiniteInput {
            input: Input::Query,
            row,
            column,
        }) => assert_eq!(first_non_finite(queries), Some((row, column))),
        Err(EngineError::NonFinite { .. }) => {}
        Err(e) => panic!("classify_batch: unexpected {e:?}"),
    }
    let mut short = vec![Prediction::zeroed(); queries.len().saturating_sub(1)];
    assert_eq!(
        task.classify_batch(queries, &mut short),
        Err(EngineError::BatchLength {
            queries: queries.len(),
            outputs: short.len()
        })
    );

    if let Some(query) = queries.first() {
        let mut weights = [[0.0f32; D]; N];
        match task.generated_weights(query, &mut weights) {
            Ok(()) => assert!(weights.as_flattened().iter().all(|w| w.is_finite())),
            Err(EngineError::NonFiniteInput { .. }) => {
                assert!(first_non_finite(core::slice::from_ref(query)).is_some())
            }
            Err(EngineError::NonFinite { .. }) => {}
            Err(e) => panic!("generated_weights: unexpected {e:?}"),
        }
    }
    label
}

// ---- seeds ----------------------------------------------------------------------------------

/// A small configuration (D = 8, d = 4, 2 heads, 2-way 1-shot, G = 6) whose files are a few
/// KiB: seeds for the parser targets.
pub fn tiny_config() -> ModelConfig {
    ModelConfig::new(8, 4, 2, 2, 1, 6)
}

fn provenance(shots: u32) -> Provenance {
    Provenance {
        dataset: "fuzz".try_into().unwrap_or_default(),
        shots,
        steps: 1,
        seed: 2,
        validation: Some(Validation {
            accuracy: 0.5,
            ci95: 0.01,
        }),
        tool: "tests::fuzzing".try_into().unwrap_or_default(),
        tool_version: env!("CARGO_PKG_VERSION").try_into().unwrap_or_default(),
    }
}

/// A file of `config` and `kind` whose tensor `t` holds `t + i / 8`, optionally with a
/// training state and Adam moments.
fn seed_file(config: ModelConfig, kind: FileKind, state: bool, adam: bool) -> Vec<u8> {
    let mut tensors: Vec<(String, Vec<f32>)> = expected_tensors(&config, kind)
        .enumerate()
        .map(|(t, spec)| {
            let n = spec.elements() as usize;
            let values = (0..n).map(|i| t as f32 + i as f32 / 8.0).collect();
            (spec.name.to_string(), values)
        })
        .collect();
    if adam {
        let base = tensors.clone();
        for prefix in [formats::ADAM_M_PREFIX, formats::ADAM_V_PREFIX] {
            for (name, values) in &base {
                tensors.push((format!("{prefix}{name}"), values.clone()));
            }
        }
    }
    let mut builder =
        FileBuilder::new(kind, config, provenance(config.shots)).expect("valid seed config");
    if state {
        builder.training_state(TrainingState {
            step: 10,
            best_val_accuracy: 0.5,
            best_step: 5,
            skipped_steps: 1,
            rng_state: [1, 2, 3, 4],
            trainer_options: (&b"{\"lr\":0.001}"[..]).try_into().unwrap_or_default(),
        });
    }
    for (name, values) in &tensors {
        builder.tensor(name, values).expect("seed tensor");
    }
    builder.build().expect("seed file")
}

/// The bytes of a valid file before its payload (prefix, header, padding): a seed for
/// [`parse_with_fixed_crc`], which zero-fills the rest.
pub fn without_payload(file: &[u8]) -> Vec<u8> {
    let header = declared_len(file).map_or(0, |_| {
        let h = u32::from_le_bytes([file[12], file[13], file[14], file[15]]);
        (20 + h as usize).div_ceil(64) * 64
    });
    file[..header.min(file.len())].to_vec()
}

/// Seed files for the parser targets: valid small files of every kind and variant.
pub fn parser_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let tiny = tiny_config();
    let mut mlp = tiny;
    mlp.encoder = EncoderKind::Mlp;
    let mut task_wide = tiny;
    task_wide.layer_norm = LayerNormKind::TaskWide;
    vec![
        (
            "tiny-inference",
            seed_file(tiny, FileKind::Inference, false, false),
        ),
        (
            "tiny-training",
            seed_file(tiny, FileKind::Training, false, false),
        ),
        (
            "tiny-training-state",
            seed_file(tiny, FileKind::Training, true, false),
        ),
        (
            "tiny-training-adam",
            seed_file(tiny, FileKind::Training, true, true),
        ),
        (
            "tiny-mlp",
            seed_file(mlp, FileKind::Inference, false, false),
        ),
        (
            "tiny-task-wide",
            seed_file(task_wide, FileKind::Inference, false, false),
        ),
        ("tiny-int8", int8_seed_file()),
        ("tiny-int8-v3", retired_int8_seed_file()),
    ]
}

/// A version-4 inference file: every tensor `quant_axis` names int8 in row pairs
/// (`formats::quant`), with `D` = 5 and `G` = 5 so the layout pads: the encoders (4 rows of
/// depth 5) have a padding column, `gen.g1` (5 rows of depth 8) a pad row, `gen.g2_mu` (5
/// rows of depth 5) both.
fn int8_seed_file() -> Vec<u8> {
    let config = ModelConfig::new(5, 4, 2, 2, 1, 5);
    let tensors: Vec<(&str, Vec<f32>, formats::Shape)> =
        expected_tensors(&config, FileKind::Inference)
            .enumerate()
            .map(|(t, spec)| {
                let n = spec.elements() as usize;
                let values = (0..n).map(|i| t as f32 - i as f32 / 8.0).collect();
                (spec.name, values, spec.shape)
            })
            .collect();
    let quantised: Vec<_> = tensors
        .iter()
        .filter_map(|(name, w, shape)| {
            let axis = formats::quant_axis(name)?;
            let (inputs, outputs) = (shape[0] as usize, shape[1] as usize);
            let (values, scales) = formats::quant::quantize(w, inputs, outputs, axis).ok()?;
            Some((*name, axis, values, scales))
        })
        .collect();
    let mut builder = FileBuilder::new(FileKind::Inference, config, provenance(config.shots))
        .expect("valid seed config");
    for (name, values, _) in &tensors {
        if formats::quant_axis(name).is_none() {
            builder.tensor(name, values).expect("seed tensor");
        }
    }
    for (name, axis, values, scales) in &quantised {
        builder
            .tensor_i8(name, *axis, values, scales)
            .expect("seed int8 tensor");
    }
    builder.build().expect("seed file")
}

/// [`int8_seed_file`] marked version 3 (CRC recomputed): what yesterday's int8 files look
/// like to the reader (the same header; only their int8 layout differs), which it refuses
/// with `Int8LayoutRetired`.
fn retired_int8_seed_file() -> Vec<u8> {
    let mut file = int8_seed_file();
    file[8..10].copy_from_slice(&formats::QUANT_VERSION.to_le_bytes());
    fix_crc(&mut file);
    file
}

/// Seed inputs for [`engine_edge`]: every case unedited, and a few edits that put NaN,
/// infinity and extreme values in the features and weights.
pub fn engine_seeds() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for five_shot in [false, true] {
        for training in [false, true] {
            let case = EngineCase {
                five_shot,
                training,
                keep_crc: false,
                model_seed: 0,
                task_seed: 0,
            };
            out.push((
                format!(
                    "plain-k{}-{}",
                    case.shots(),
                    if training { "training" } else { "inference" }
                ),
                case.encode().to_vec(),
            ));
        }
    }
    let case = EngineCase {
        five_shot: true,
        training: false,
        keep_crc: false,
        model_seed: 1,
        task_seed: 1,
    };
    let edits: [(&str, Edit); 6] = [
        (
            // Header bytes 23..27 of an edge file are the configuration's h, N, K, G (one
            // varint byte each): 2 heads still fit every tensor, so the file parses and `load`
            // refuses the configuration.
            "config-two-heads",
            Edit {
                target: EditTarget::Model,
                offset: 23,
                count: 1,
                value: [2, 5, 5, 64],
            },
        ),
        (
            "support-nan",
            Edit {
                target: EditTarget::Support,
                offset: 4 * 70,
                count: 1,
                value: f32::NAN.to_le_bytes(),
            },
        ),
        (
            "query-inf",
            Edit {
                target: EditTarget::Queries,
                offset: 4 * 3,
                count: 1,
                value: f32::INFINITY.to_le_bytes(),
            },
        ),
        (
            "support-huge",
            Edit {
                target: EditTarget::Support,
                offset: 0,
                count: 64,
                value: 1e30f32.to_le_bytes(),
            },
        ),
        (
            "weights-max",
            Edit {
                target: EditTarget::Model,
                offset: 4096,
                count: 2048,
                value: f32::MAX.to_le_bytes(),
            },
        ),
        (
            "weights-nan",
            Edit {
                target: EditTarget::Model,
                offset: 8192,
                count: 16,
                value: f32::NAN.to_le_bytes(),
            },
        ),
    ];
    for (name, edit) in edits {
        let mut input = case.encode().to_vec();
        input.extend_from_slice(&edit.encode());
        out.push((name.to_string(), input));
    }
    out
}
