//! `trainer export --int8`: the int8 inference file of a trained model, and the accuracy of
//! the int8 model next to the f32 one on the same test tasks, both run through the host
//! engine ([`engine::DynModel`], the code a device runs) so that one code path evaluates both.
//!
//! The quantisation is `formats::quant::quantize` on every tensor
//! `formats::tensors::quant_axis` names (encoders, attention projections, feed-forward
//! layers, G1: a scale per output; G2mu: a scale per input row), per-row symmetric with no
//! calibration: weights only. The file is version 4: each int8 tensor's rows stored two at a
//! time, one i16 per pair of values (`formats::quant`'s row-pair layout, which the device
//! kernels read with one load per two rows); a version-3 int8 file, whose int8 rows are stored
//! one by one, is refused (`formats::FormatError::Int8LayoutRetired`): export its f32 model
//! again. The engine quantises the activations at run time, per column
//! to i16 with a range chosen from that column alone, so there is nothing to calibrate.
//! Layer norms, biases, scales and the classifier variants' tensors stay f32.

use std::path::Path;

use formats::{FileBuilder, FileKind, FormatError};

use crate::data::{EpisodeBatch, EpisodeSampler, EpisodeSpec, Split};
use crate::error::TrainerError;
use crate::evaluate::{task_accuracies, Accuracy};
use crate::model_file::{text, ModelParams};

/// What an int8 export records as the provenance's `tool` (at most 64 bytes): which
/// quantisation made the file. The file's table says which tensors are int8 and along which
/// axis.
pub const INT8_TOOL: &str = "awgim-trainer int8: per-row symmetric weights, no calibration";

/// Tasks the engine classifies per [`compare`] batch of the sampler.
const TASKS_PER_DRAW: usize = 20;

/// Queries the engine classifies together.
const QUERY_BATCH: usize = 8;

/// The int8 inference file of the f32 model file `bytes` (inference or training; `path`
/// names it in errors): every tensor [`formats::tensors::quant_axis`] names quantised along
/// its axis, the rest of the inference tensors as they are, the provenance kept but for its
/// tool ([`INT8_TOOL`]) and its validation result (measured on the f32 weights, so dropped).
///
/// Fails with [`TrainerError::AlreadyInt8`] on a file that has int8 tensors already, with
/// [`TrainerError::Quantize`] on a weight that is not finite, and with
/// [`TrainerError::Format`] on a file that does not parse.
pub fn int8_bytes(bytes: &[u8], path: &Path) -> Result<Vec<u8>, TrainerError> {
    let format = |source| TrainerError::Format {
        path: path.to_path_buf(),
        source,
    };
    let file = formats::parse(bytes).map_err(format)?;
    if let Some(entry) = file.entries().find(|e| e.quant.is_some()) {
        return Err(TrainerError::AlreadyInt8 {
            path: path.to_path_buf(),
            tensor: entry.name.to_string(),
        });
    }
    let params = ModelParams::from_bytes(bytes).map_err(format)?.inference();
    let mut provenance = params.provenance.clone();
    provenance.tool = text(INT8_TOOL);
    provenance.validation = None;
    let quantised = params
        .params
        .iter()
        .filter_map(|(name, w)| {
            let axis = formats::quant_axis(name)?;
            let shape = formats::required_tensor(&params.config, FileKind::Inference, name)?
                .1
                .shape;
            let (inputs, outputs) = (shape[0] as usize, shape[1] as usize);
            Some(
                formats::quant::quantize(w, inputs, outputs, axis)
                    .map(|(values, scales)| (name.as_str(), axis, values, scales))
                    .map_err(|source| TrainerError::Quantize {
                        path: path.to_path_buf(),
                        tensor: name.clone(),
                        source: Box::new(source),
                    }),
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut builder =
        FileBuilder::new(FileKind::Inference, params.config, provenance).map_err(format)?;
    for (name, w) in &params.params {
        if formats::quant_axis(name).is_none() {
            builder.tensor(name, w).map_err(format)?;
        }
    }
    for (name, axis, values, scales) in &quantised {
        builder
            .tensor_i8(name, *axis, values, scales)
            .map_err(format)?;
    }
    builder.build().map_err(format)
}

/// The f32 inference file of the f32 model file `bytes` (what plain `trainer export`
/// writes): the reference an int8 export is compared with.
pub fn f32_inference_bytes(bytes: &[u8], path: &Path) -> Result<Vec<u8>, TrainerError> {
    let format = |source: FormatError| TrainerError::Format {
        path: path.to_path_buf(),
        source,
    };
    ModelParams::from_bytes(bytes)
        .map_err(format)?
        .inference()
        .to_bytes()
        .map_err(format)
}

/// Per-task accuracies of several model files on the same tasks, each run through the host
/// engine.
#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    /// Per model (in the order given), its accuracy on each task.
    pub per_model: Vec<Vec<f32>>,
}

impl Comparison {
    /// The accuracy of model `i`.
    pub fn accuracy(&self, i: usize) -> Accuracy {
        Accuracy::from_tasks(&self.per_model[i])
    }

    /// The paired difference model `a` minus model `b`, task by task, with the 95% interval
    /// of its mean.
    pub fn paired_difference(&self, a: usize, b: usize) -> Accuracy {
        let diff: Vec<f32> = self.per_model[a]
            .iter()
            .zip(&self.per_model[b])
            .map(|(x, y)| x - y)
            .collect();
        Accuracy::from_tasks(&diff)
    }
}

/// Accuracy of each model file of `models` (`(path for errors, bytes)`, every one of the
/// same sizes) on the same `tasks` random N-way K-shot tasks of `split` (seeded, 15 queries
/// per class, the evaluation protocol of [`crate::evaluate`]), each classified by
/// [`engine::DynModel`].
pub fn compare(
    models: &[(&Path, &[u8])],
    split: &Split,
    tasks: usize,
    queries_per_class: usize,
    seed: u64,
) -> Result<Comparison, TrainerError> {
    let loaded = models
        .iter()
        .map(|(path, bytes)| {
            let aligned = formats::AlignedBuf::from_bytes(bytes);
            (path.to_path_buf(), aligned)
        })
        .collect::<Vec<_>>();
    let engine_error = |path: &Path, e: engine::EngineError| TrainerError::Engine {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let mut engines = Vec::with_capacity(loaded.len());
    for (path, aligned) in &loaded {
        let model =
            engine::DynModel::load(aligned.as_bytes()).map_err(|e| engine_error(path, e))?;
        engines.push((path.as_path(), model));
    }
    let Some((first_path, first)) = engines.first() else {
        return Ok(Comparison {
            per_model: Vec::new(),
        });
    };
    let sizes = first.sizes();
    if let Some((path, _)) = engines.iter().find(|(_, m)| m.sizes() != sizes) {
        return Err(TrainerError::Mismatch {
            path: path.to_path_buf(),
            reason: format!("its sizes differ from those of {}", first_path.display()),
        });
    }
    let spec = EpisodeSpec {
        n_way: sizes.N,
        k_shot: sizes.K,
        n_query: queries_per_class,
        shuffle_queries: false,
    };
    let mut sampler = EpisodeSampler::new(split, spec, seed)?;
    let queries_per_task = sizes.N * queries_per_class;
    let support_len = sizes.N * sizes.K * sizes.D;
    let query_len = queries_per_task * sizes.D;
    let mut per_model = vec![Vec::with_capacity(tasks); engines.len()];
    let mut workspaces: Vec<Vec<f32>> = engines
        .iter()
        .map(|(_, m)| vec![0.0; m.workspace_len(QUERY_BATCH)])
        .collect();
    let mut logits = vec![0.0f32; queries_per_task * sizes.N];
    let mut batch = EpisodeBatch::default();
    let mut done = 0;
    while done < tasks {
        sampler.sample_into(TASKS_PER_DRAW, &mut batch);
        let keep = (tasks - done).min(TASKS_PER_DRAW);
        for t in 0..keep {
            let support = &batch.support[t * support_len..(t + 1) * support_len];
            let queries = &batch.query[t * query_len..(t + 1) * query_len];
            let labels = &batch.query_labels[t * queries_per_task..(t + 1) * queries_per_task];
            for (((path, model), workspace), out) in
                engines.iter().zip(&mut workspaces).zip(&mut per_model)
            {
                let mut task = model
                    .prepare(workspace, QUERY_BATCH, support)
                    .map_err(|e| engine_error(path, e))?;
                task.classify_batch(queries, &mut logits)
                    .map_err(|e| engine_error(path, e))?;
                out.extend(task_accuracies(&logits, labels, sizes.N, queries_per_task));
            }
        }
        done += keep;
    }
    Ok(Comparison { per_model })
}
