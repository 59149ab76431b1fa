//! `trainer infer`: runs the `engine` crate (what a device runs, not the luminal graph) on a
//! model file and a task given as `.npy` arrays, so a device can be debugged on the host.
//!
//! Any model file the trainer writes runs: the engine takes the sizes from the file's header
//! ([`engine::DynModel`], the same code the device runs with its sizes compiled in).
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
    write_npy_shaped(path, &[rows as u64, cols as u64], data)
}

/// Writes an f32 `.npy` of any shape (C order; `data` has the shape's element count).
pub fn write_npy_shaped(path: &Path, shape: &[u64], data: &[f32]) -> Result<(), TrainerError> {
    let io = |e| TrainerError::io(path, e);
    let file = std::fs::File::create(path).map_err(io)?;
    let mut writer = npyz::WriteOptions::<f32>::new()
        .default_dtype()
        .shape(shape)
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
    let logits =
        classify(bytes.as_bytes(), &support, &queries).map_err(|e| TrainerError::Engine {
            path: model_path.to_path_buf(),
            reason: e.to_string(),
        })?;
    Ok((m, s.N, logits))
}

/// The engine's logits (`M x N`) for `queries` (`M x D`) against `support` (`N*K x D`,
/// class-major), for a model file in `bytes` (64-byte aligned, e.g. [`formats::AlignedBuf`]):
/// the engine with the file's sizes ([`engine::DynModel`]), any configuration the trainer
/// writes, its workspace on the heap.
pub fn classify(
    bytes: &[u8],
    support: &[f32],
    queries: &[f32],
) -> Result<Vec<f32>, engine::EngineError> {
    let model = engine::DynModel::load(bytes)?;
    let mut workspace = vec![0.0f32; model.workspace_len(BATCH)];
    let mut task = model.prepare(&mut workspace, BATCH, support)?;
    let D = model.sizes().D.max(1);
    let mut logits = vec![0.0f32; queries.len() / D * model.sizes().N];
    task.classify_batch(queries, &mut logits)?;
    Ok(logits)
}
