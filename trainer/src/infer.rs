//! `trainer infer`: runs the `engine` crate (what a device runs, not the luminal graph) on a
//! model file and a task given as `.npy` arrays, so a device can be debugged on the host.
//!
//! The engine is statically sized, so only the configurations it is compiled for here can
//! run: the paper's (D = 640, d = 128, 4 heads, 5-way, G = 256) and the edge one (D = 64,
//! d = 32, 4 heads, 5-way, G = 64), each with K = 1 or K = 5.

use std::io::BufWriter;
use std::path::Path;

use npyz::WriterBuilder;

use crate::error::TrainerError;

/// The configurations `infer` can run, as `(D, d, heads, N, K, G)`.
pub const COMPILED: [(u32, u32, u32, u32, u32, u32); 4] = [
    (640, 128, 4, 5, 1, 256),
    (640, 128, 4, 5, 5, 256),
    (64, 32, 4, 5, 1, 64),
    (64, 32, 4, 5, 5, 64),
];

/// Reads a float `.npy` (f32 or f64, any order) as f32 values in C order with its shape.
pub fn read_npy(path: &Path) -> Result<(Vec<u64>, Vec<f32>), TrainerError> {
    let bad = |reason: String| TrainerError::Npy {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| TrainerError::io(path, e))?;
    let npy = npyz::NpyFile::new(&bytes[..]).map_err(|e| bad(format!("not a .npy file: {e}")))?;
    let shape = npy.shape().to_vec();
    if npy.order() != npyz::Order::C && shape.len() > 1 {
        return Err(bad(
            "Fortran-order arrays are not supported here; save it in C order".into(),
        ));
    }
    let dtype = npy.dtype();
    let type_str = match &dtype {
        npyz::DType::Plain(t) => t.to_string(),
        other => {
            return Err(bad(format!(
                "expected a float array, found dtype {other:?}"
            )))
        }
    };
    let data: Vec<f32> = match type_str.as_str() {
        "<f4" | ">f4" => npy.into_vec::<f32>().map_err(|e| bad(e.to_string()))?,
        "<f8" | ">f8" => npy
            .into_vec::<f64>()
            .map_err(|e| bad(e.to_string()))?
            .into_iter()
            .map(|x| x as f32)
            .collect(),
        other => return Err(bad(format!("expected float32 or float64, found {other}"))),
    };
    Ok((shape, data))
}

/// Writes a 2-D f32 `.npy`.
pub fn write_npy(path: &Path, rows: usize, cols: usize, data: &[f32]) -> Result<(), TrainerError> {
    let io = |e| TrainerError::io(path, e);
    let file = std::fs::File::create(path).map_err(io)?;
    let mut writer = npyz::WriteOptions::<f32>::new()
        .default_dtype()
        .shape(&[rows as u64, cols as u64])
        .writer(BufWriter::new(file))
        .begin_nd()
        .map_err(io)?;
    writer.extend(data.iter().copied()).map_err(io)?;
    writer.finish().map_err(io)
}

/// Classifies every query of `queries` (`M x D`) against `support` (`N x K x D`, or
/// `N*K x D` class-major) with the engine; returns `M x N` logits.
pub fn infer(
    model_path: &Path,
    support_path: &Path,
    queries_path: &Path,
) -> Result<(usize, usize, Vec<f32>), TrainerError> {
    let bytes = formats::read_aligned(model_path).map_err(|e| TrainerError::io(model_path, e))?;
    let file = formats::parse(bytes.as_bytes()).map_err(|source| TrainerError::Format {
        path: model_path.to_path_buf(),
        source,
    })?;
    let c = file.config();
    let (support_shape, support) = read_npy(support_path)?;
    let (query_shape, queries) = read_npy(queries_path)?;
    let (d, n, k) = (c.feature_dim as u64, c.ways as u64, c.shots as u64);
    let support_ok = support_shape == [n, k, d] || support_shape == [n * k, d];
    if !support_ok {
        return Err(TrainerError::Npy {
            path: support_path.to_path_buf(),
            reason: format!("support must be {n} x {k} x {d} (or {} x {d}) for this model, found {support_shape:?}", n * k),
        });
    }
    if query_shape.len() != 2 || query_shape[1] != d {
        return Err(TrainerError::Npy {
            path: queries_path.to_path_buf(),
            reason: format!("queries must be M x {d} for this model, found {query_shape:?}"),
        });
    }
    let m = query_shape[0] as usize;
    let logits = classify(bytes.as_bytes(), &support, &queries).map_err(|e| match e {
        EngineRun::NotCompiled(reason) => TrainerError::Mismatch {
            path: model_path.to_path_buf(),
            reason,
        },
        EngineRun::Engine(e) => TrainerError::Engine {
            path: model_path.to_path_buf(),
            reason: e.to_string(),
        },
    })?;
    Ok((m, c.ways as usize, logits))
}

/// Why the engine could not classify.
#[derive(Debug)]
pub enum EngineRun {
    /// No engine is compiled for the file's configuration (the reason names it).
    NotCompiled(String),
    /// The engine refused the model or an input.
    Engine(engine::EngineError),
}

/// The engine's logits (`M x N`) for `queries` (`M x D`) against `support` (`N*K x D`,
/// class-major), for a model file in `bytes` (64-byte aligned, e.g. [`formats::AlignedBuf`]).
pub fn classify(bytes: &[u8], support: &[f32], queries: &[f32]) -> Result<Vec<f32>, EngineRun> {
    let c = formats::parse(bytes)
        .map_err(|e| EngineRun::Engine(engine::EngineError::Format(e)))?
        .config();
    let key = (
        c.feature_dim,
        c.latent_dim,
        c.heads,
        c.ways,
        c.shots,
        c.generator_hidden,
    );
    let logits = match key {
        (640, 128, 4, 5, 1, 256) => run::<640, 128, 4, 5, 1, 256, 5, 256>(bytes, support, queries),
        (640, 128, 4, 5, 5, 256) => run::<640, 128, 4, 5, 5, 256, 25, 256>(bytes, support, queries),
        (64, 32, 4, 5, 1, 64) => run::<64, 32, 4, 5, 1, 64, 5, 64>(bytes, support, queries),
        (64, 32, 4, 5, 5, 64) => run::<64, 32, 4, 5, 5, 64, 25, 64>(bytes, support, queries),
        _ => {
            return Err(EngineRun::NotCompiled(format!(
                "no engine is compiled for (D, d, heads, N, K, G) = {key:?}; compiled: {COMPILED:?}"
            )))
        }
    };
    logits.map_err(EngineRun::Engine)
}

/// One compiled engine configuration.
#[allow(clippy::type_complexity)]
fn run<
    const D: usize,
    const L: usize,
    const H: usize,
    const N: usize,
    const K: usize,
    const G: usize,
    const NK: usize,
    const L2: usize,
>(
    bytes: &[u8],
    support: &[f32],
    queries: &[f32],
) -> Result<Vec<f32>, engine::EngineError> {
    let model = engine::Model::<D, L, H, N, K, G, NK, L2>::load(bytes)?;
    let mut workspace = Box::new(engine::Workspace::<D, L, H, N, K, G, NK, L2, 8>::new());
    let mut support_rows = Box::new([[0.0f32; D]; NK]);
    for (row, src) in support_rows.iter_mut().zip(support.chunks_exact(D)) {
        row.copy_from_slice(src);
    }
    let rows: Vec<[f32; D]> = queries
        .chunks_exact(D)
        .map(|q| {
            let mut row = [0.0f32; D];
            row.copy_from_slice(q);
            row
        })
        .collect();
    let mut task = model.prepare(&mut workspace, &support_rows)?;
    let mut out = vec![engine::Prediction::<N>::zeroed(); rows.len()];
    task.classify_batch(&rows, &mut out)?;
    Ok(out.iter().flat_map(|p| p.logits).collect())
}
