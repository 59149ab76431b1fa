//! `trainer infer`: runs the `engine` crate (what a device runs, not the luminal graph) on a
//! model file and a task given as `.npy` arrays, so a device can be debugged on the host.
//!
//! The engine is statically sized, so only the configurations it has types for can run
//! ([`engine::COMPILED`]): the paper's (D = 640, d = 128, 4 heads, 5-way, G = 256) and the
//! edge one (D = 64, d = 32, 4 heads, 5-way, G = 64), each with K = 1 or K = 5.
// Sizes are AWGIM.md's letters (`D` and `d` are different sizes), as locals and as the
// engine's size parameters.
#![allow(non_snake_case, non_upper_case_globals)]

use std::io::BufWriter;
use std::path::Path;

use npyz::WriterBuilder;

use crate::error::TrainerError;

/// Queries the engine classifies together.
const BATCH: usize = 8;

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
    let s = file.config().sizes();
    let (support_shape, support) = read_npy(support_path)?;
    let (query_shape, queries) = read_npy(queries_path)?;
    let (D, N, K) = (s.D as u64, s.N as u64, s.K as u64);
    let support_ok = support_shape == [N, K, D] || support_shape == [N * K, D];
    if !support_ok {
        return Err(TrainerError::Npy {
            path: support_path.to_path_buf(),
            reason: format!("support must be {N} x {K} x {D} (or {} x {D}) for this model, found {support_shape:?}", N * K),
        });
    }
    if query_shape.len() != 2 || query_shape[1] != D {
        return Err(TrainerError::Npy {
            path: queries_path.to_path_buf(),
            reason: format!("queries must be M x {D} for this model, found {query_shape:?}"),
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
    Ok((m, s.N, logits))
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
    use engine::{EDGE_1SHOT, EDGE_5SHOT, PAPER_1SHOT, PAPER_5SHOT};
    // A workspace for the engine compiled for the sizes `$s`; its type picks `run`'s sizes.
    macro_rules! workspace {
        ($s:expr) => {
            Box::new(<engine::awgim_workspace!($s; BATCH)>::new())
        };
    }
    let sizes = formats::parse(bytes)
        .map_err(|e| EngineRun::Engine(engine::EngineError::Format(e)))?
        .config()
        .sizes();
    let logits = if sizes == PAPER_1SHOT {
        run(bytes, support, queries, workspace!(PAPER_1SHOT))
    } else if sizes == PAPER_5SHOT {
        run(bytes, support, queries, workspace!(PAPER_5SHOT))
    } else if sizes == EDGE_1SHOT {
        run(bytes, support, queries, workspace!(EDGE_1SHOT))
    } else if sizes == EDGE_5SHOT {
        run(bytes, support, queries, workspace!(EDGE_5SHOT))
    } else {
        return Err(EngineRun::NotCompiled(format!(
            "no engine is compiled for {sizes:?}; compiled: {:?}",
            engine::COMPILED
        )));
    };
    logits.map_err(EngineRun::Engine)
}

/// The engine of `workspace`'s sizes on a model file, a support set (`N K x D`, class-major)
/// and queries (`M x D`).
fn run<
    const D: usize,
    const d: usize,
    const h: usize,
    const N: usize,
    const K: usize,
    const G: usize,
    const NK: usize,
    const d2: usize,
    const B: usize,
>(
    bytes: &[u8],
    support: &[f32],
    queries: &[f32],
    mut workspace: Box<engine::Workspace<D, d, h, N, K, G, NK, d2, B>>,
) -> Result<Vec<f32>, engine::EngineError> {
    let model = engine::Model::<D, d, h, N, K, G, NK, d2>::load(bytes)?;
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
