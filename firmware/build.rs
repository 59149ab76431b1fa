//! Build-time choices, all read from files: the board's memory map, and the model and the task
//! to embed, whose sizes the firmware is compiled for.
//!
//! - The board feature (`mps2-an386`, `mps2-an500` or `netduinoplus2`) picks
//!   `memory/<board>.x` (`AWGIM_MEMORY` names another file, for another part).
//! - `AWGIM_MODEL` names the model file (as the trainer writes it). Its header gives the sizes
//!   (`$OUT_DIR/sizes.rs`: `SIZES`, `QUERIES`); the whole file is checked here as the engine
//!   will check it when loading, so a model the engine cannot run is a build error.
//! - `AWGIM_SUPPORT` and `AWGIM_QUERIES` name the task as `trainer infer` takes it: two float
//!   `.npy` arrays, `N x K x D` (or `N K x D`, class-major) and `M x D`. They are embedded as
//!   little-endian f32 rows (`$OUT_DIR/support.f32`, `$OUT_DIR/queries.f32`).
//!
//! Paths are absolute or relative to this directory. The build fails, naming the file, the
//! limit and the numbers, when the model cannot run or the image cannot fit the board.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use formats::Sizes;

/// The boards, each with its memory map `memory/<board>.x`; exactly one feature is enabled.
const BOARDS: [&str; 3] = ["mps2-an386", "mps2-an500", "netduinoplus2"];

/// Flash the program itself takes besides the embedded files: 91 to 125 KB measured
/// (README.md), rounded up; a larger image still fails at link time.
const CODE_BYTES: u64 = 128 * 1024;
/// RAM the stack and the program's other statics take besides the workspace: the deepest
/// stack measured is under 5 KB (README.md), so 8 KiB.
const STACK_BYTES: u64 = 8 * 1024;

/// Queries the firmware's workspace classifies together: one, as a sensor delivers them.
const BATCH: usize = 1;

/// A build failure, shown to the user as its message.
struct BuildError(String);

impl std::fmt::Debug for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl<E: std::fmt::Display> From<E> for BuildError {
    fn from(e: E) -> Self {
        Self(e.to_string())
    }
}

fn main() -> Result<(), BuildError> {
    let out = PathBuf::from(env::var_os("OUT_DIR").ok_or("cargo did not set OUT_DIR")?);
    let board = board()?;
    let memory = memory_map(board, &out)?;

    let model_path = input(
        "AWGIM_MODEL",
        "the model file (`trainer ... --out model.awgim`)",
    )?;
    let model = formats::read_aligned(&model_path)
        .map_err(|e| format!("AWGIM_MODEL: cannot read {}: {e}", model_path.display()))?;
    let sizes = engine::DynModel::load(model.as_bytes())
        .map(|m| m.sizes())
        .map_err(|e| format!("AWGIM_MODEL {}: {e}", model_path.display()))?;
    // The classifier picks the compiled model type (the paper's, or one with the variants'
    // code and buffers) and the workspace's size.
    let classifier = formats::parse(model.as_bytes())
        .map_err(|e| format!("AWGIM_MODEL {}: {e}", model_path.display()))?
        .config()
        .classifier;

    let support_path = input("AWGIM_SUPPORT", "the support set (.npy, N x K x D)")?;
    let queries_path = input("AWGIM_QUERIES", "the queries (.npy, M x D)")?;
    let Sizes { D, N, K, .. } = sizes;
    let support = read_npy(&support_path, "AWGIM_SUPPORT", &[&[N, K, D], &[N * K, D]])?;
    let queries = read_npy(&queries_path, "AWGIM_QUERIES", &[&[0, D]])?;
    let m = queries.len() / D;
    if m == 0 {
        return Err(format!("AWGIM_QUERIES {}: no queries", queries_path.display()).into());
    }
    write_f32(&out.join("support.f32"), &support)?;
    write_f32(&out.join("queries.f32"), &queries)?;

    let workspace = 4 * engine::workspace_len(sizes, classifier, BATCH) as u64;
    let support_bytes = 4 * support.len() as u64;
    let flash = [
        ("model", model.as_bytes().len() as u64),
        ("support", support_bytes),
        ("queries", 4 * queries.len() as u64),
        ("code (about)", CODE_BYTES),
    ];
    // No support buffer: enrollment encodes each row into the workspace as it arrives.
    let ram = [("workspace", workspace), ("stack (about)", STACK_BYTES)];
    fits(board, &memory, "FLASH", &flash, &model_path)?;
    fits(board, &memory, "RAM", &ram, &model_path)?;

    let Sizes { d, h, G, .. } = sizes;
    fs::write(
        out.join("sizes.rs"),
        format!(
            "/// The sizes of `{model}` (its header).\n\
             pub const SIZES: formats::Sizes = formats::Sizes {{ D: {D}, d: {d}, h: {h}, N: {N}, K: {K}, G: {G} }};\n\
             /// The classifier of `{model}` (its header).\n\
             pub const CLASSIFIER: formats::Classifier = formats::Classifier {{ \
             features: formats::FeatureNorm::{features:?}, weights: formats::WeightsKind::{weights:?}, \
             logits: formats::LogitsKind::{logits:?} }};\n\
             /// Queries the workspace classifies together.\n\
             pub const BATCH: usize = {BATCH};\n\
             /// The board feature.\n\
             pub const BOARD: &str = \"{board}\";\n",
            model = model_path.display(),
            features = classifier.features,
            weights = classifier.weights,
            logits = classifier.logits,
        ),
    )?;
    println!("cargo:rustc-env=AWGIM_MODEL_FILE={}", model_path.display());
    Ok(())
}

/// The enabled board feature.
fn board() -> Result<&'static str, BuildError> {
    let enabled: Vec<&str> = BOARDS
        .into_iter()
        .filter(|b| {
            let feature = b.to_uppercase().replace('-', "_");
            env::var_os(format!("CARGO_FEATURE_{feature}")).is_some()
        })
        .collect();
    match enabled[..] {
        [board] => Ok(board),
        _ => Err(format!(
            "enable exactly one board feature of {BOARDS:?} (found {enabled:?}); for another \
             than the default: --no-default-features --features <board>"
        )
        .into()),
    }
}

/// Copies the board's memory map (or `AWGIM_MEMORY`) to where the linker (cortex-m-rt's
/// link.x) finds it and returns its text.
fn memory_map(board: &str, out: &Path) -> Result<(PathBuf, String), BuildError> {
    println!("cargo:rerun-if-env-changed=AWGIM_MEMORY");
    // The two MPS2 boards share one memory map.
    let map = if board.starts_with("mps2") {
        "mps2"
    } else {
        board
    };
    let path = env::var_os("AWGIM_MEMORY")
        .map_or_else(|| PathBuf::from(format!("memory/{map}.x")), PathBuf::from);
    let text =
        fs::read_to_string(&path).map_err(|e| format!("memory map {}: {e}", path.display()))?;
    fs::write(out.join("memory.x"), &text)?;
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed={}", path.display());
    Ok((path, text))
}

/// The `LENGTH` of the memory `region` in a memory map (`1M`, `128K` or bytes, decimal or hex).
fn region_length(text: &str, region: &str) -> Option<u64> {
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with(region) && l.contains("LENGTH"))?;
    let value = line
        .split("LENGTH")
        .nth(1)?
        .trim_start_matches([' ', '='])
        .trim();
    let value = value.trim_end_matches(|c: char| c == ',' || c.is_whitespace());
    let (digits, scale) = match value.chars().last()? {
        'K' | 'k' => (&value[..value.len() - 1], 1024),
        'M' | 'm' => (&value[..value.len() - 1], 1024 * 1024),
        _ => (value, 1),
    };
    let number = match digits.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok()?,
        None => digits.parse().ok()?,
    };
    Some(number * scale)
}

/// Fails, naming the model, the board's limit and the parts, if `parts` exceed the memory
/// `region` of the memory map.
fn fits(
    board: &str,
    (map, text): &(PathBuf, String),
    region: &str,
    parts: &[(&str, u64)],
    model: &Path,
) -> Result<(), BuildError> {
    let limit = region_length(text, region)
        .ok_or_else(|| format!("memory map {}: no LENGTH for {region}", map.display()))?;
    let needed: u64 = parts.iter().map(|(_, bytes)| bytes).sum();
    if needed <= limit {
        return Ok(());
    }
    let mut message = format!(
        "the model {} does not fit the board {board}: {region} needs {needed} bytes, the \
         limit is {limit} bytes ({region} LENGTH in {}); needed = ",
        model.display(),
        map.display()
    );
    for (i, (what, bytes)) in parts.iter().enumerate() {
        let plus = if i == 0 { "" } else { " + " };
        let _ = write!(message, "{plus}{what} {bytes}");
    }
    Err(message.into())
}

/// The file the environment variable `var` names, made absolute; the build reruns when
/// either changes.
fn input(var: &str, what: &str) -> Result<PathBuf, BuildError> {
    println!("cargo:rerun-if-env-changed={var}");
    let path = env::var_os(var).ok_or_else(|| {
        format!(
            "set {var} to {what}; the firmware is built for the model and task it embeds: \
             AWGIM_MODEL=model.awgim AWGIM_SUPPORT=support.npy AWGIM_QUERIES=queries.npy \
             cargo build --release (README.md)"
        )
    })?;
    let path = fs::canonicalize(&path)
        .map_err(|e| format!("{var}: cannot open {}: {e}", Path::new(&path).display()))?;
    println!("cargo:rerun-if-changed={}", path.display());
    Ok(path)
}

/// The values of a float `.npy` (C order, f32 or f64) whose shape is one of `shapes` (a 0 in
/// a shape matches any length), as f32.
fn read_npy(path: &Path, var: &str, shapes: &[&[usize]]) -> Result<Vec<f32>, BuildError> {
    let bad = |reason: String| format!("{var} {}: {reason}", path.display());
    let bytes = fs::read(path).map_err(|e| bad(e.to_string()))?;
    let npy = npyz::NpyFile::new(&bytes[..]).map_err(|e| bad(format!("not a .npy file: {e}")))?;
    let shape: Vec<usize> = npy.shape().iter().map(|&n| n as usize).collect();
    let matches = |want: &&[usize]| {
        want.len() == shape.len() && want.iter().zip(&shape).all(|(&w, &s)| w == 0 || w == s)
    };
    if !shapes.iter().any(matches) {
        return Err(bad(format!(
            "shape {shape:?}, this model needs {shapes:?} (0: any)"
        ))
        .into());
    }
    if npy.order() != npyz::Order::C && shape.len() > 1 {
        return Err(bad("Fortran order; save it in C order".into()).into());
    }
    let values = match npy.dtype() {
        npyz::DType::Plain(t) if t.size_field() == 4 => npy.into_vec::<f32>(),
        _ => npy
            .into_vec::<f64>()
            .map(|v| v.into_iter().map(|x| x as f32).collect()),
    };
    values.map_err(|e| bad(format!("expected float32 or float64: {e}")).into())
}

/// Writes `values` as little-endian f32.
fn write_f32(path: &Path, values: &[f32]) -> Result<(), BuildError> {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    fs::write(path, bytes).map_err(|e| format!("{}: {e}", path.display()).into())
}
