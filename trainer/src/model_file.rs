//! Model files (the `formats` contract) as the trainer reads and writes them, and exports:
//! the inference-only file for the engine and safetensors for PyTorch/JAX users.

use std::collections::HashMap;
use std::path::Path;

use autodiff::OptimizerState;
use formats::{FileBuilder, FileKind, ModelConfig, Provenance, Text, TrainingState, Validation};

use crate::error::TrainerError;

/// Everything a model file holds, as owned values.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelParams {
    /// Inference or training file.
    pub kind: FileKind,
    /// The model configuration.
    pub config: ModelConfig,
    /// Where the weights came from.
    pub provenance: Provenance,
    /// Parameters by `formats` name, in canonical order.
    pub params: Vec<(String, Vec<f32>)>,
    /// Adam moments (training checkpoints only).
    pub optimizer: Option<OptimizerState>,
    /// Resumable run state (training checkpoints only).
    pub training: Option<TrainingState>,
}

/// A short text for the header (cut at a character boundary to the header's capacity).
pub fn text(s: &str) -> Text {
    let mut out = Text::new();
    for c in s.chars() {
        if out.push(c).is_err() {
            break;
        }
    }
    out
}

/// Provenance of weights written by this trainer.
pub fn provenance(
    dataset: &str,
    shots: u32,
    steps: u64,
    seed: u64,
    validation: Option<Validation>,
) -> Provenance {
    Provenance {
        dataset: text(dataset),
        shots,
        steps,
        seed,
        validation,
        tool: text("awgim-trainer"),
        tool_version: text(env!("CARGO_PKG_VERSION")),
    }
}

impl ModelParams {
    /// Encodes the file (tensors checked against the configuration by `formats`).
    pub fn to_bytes(&self) -> Result<Vec<u8>, formats::FormatError> {
        let mut builder = FileBuilder::new(self.kind, self.config, self.provenance.clone())?;
        if let Some(state) = &self.training {
            builder.training_state(state.clone());
        }
        let mut names = Vec::new();
        for (name, data) in &self.params {
            if formats::allowed_tensor(&self.config, self.kind, name).is_some() {
                builder.tensor(name, data)?;
            }
        }
        if let Some(opt) = &self.optimizer {
            for (name, m, v) in &opt.moments {
                names.push((format!("{}{name}", formats::ADAM_M_PREFIX), m));
                names.push((format!("{}{name}", formats::ADAM_V_PREFIX), v));
            }
        }
        for (name, data) in &names {
            builder.tensor(name, data)?;
        }
        builder.build()
    }

    /// Writes the file atomically (temporary file, flush, rename): a crash leaves either the
    /// old file or the new one.
    pub fn write(&self, path: &Path) -> Result<(), TrainerError> {
        let bytes = self.to_bytes().map_err(|source| TrainerError::Format {
            path: path.to_path_buf(),
            source,
        })?;
        formats::write_atomic(path, &bytes).map_err(|e| TrainerError::io(path, e))
    }

    /// Reads and fully validates a model file (checksum, header, every tensor's shape).
    pub fn read(path: &Path) -> Result<Self, TrainerError> {
        let bytes = std::fs::read(path).map_err(|e| TrainerError::io(path, e))?;
        Self::from_bytes(&bytes).map_err(|source| TrainerError::Format {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Decodes a file held in memory.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, formats::FormatError> {
        let file = formats::parse(bytes)?;
        let (kind, config, training) = (file.kind(), file.config(), file.training());
        let mut params = Vec::new();
        for spec in formats::expected_tensors(&config, kind) {
            params.push((spec.name.to_string(), file.to_vec(spec.name)?));
        }
        let mut moments = Vec::new();
        for (name, _) in &params {
            let m = format!("{}{name}", formats::ADAM_M_PREFIX);
            let v = format!("{}{name}", formats::ADAM_V_PREFIX);
            if file.contains(&m) && file.contains(&v) {
                moments.push((name.clone(), file.to_vec(&m)?, file.to_vec(&v)?));
            }
        }
        let optimizer = match (&training, moments.is_empty()) {
            (Some(state), false) => Some(OptimizerState {
                // Adam's step count: every step either updated or was skipped.
                t: state.step.saturating_sub(state.skipped_steps),
                moments,
            }),
            _ => None,
        };
        Ok(ModelParams {
            kind,
            config,
            provenance: file.provenance(),
            params,
            optimizer,
            training,
        })
    }

    /// The inference-only file a device needs (encoders, the three blocks, G1 and the mean
    /// half of G2), keeping the provenance.
    pub fn inference(&self) -> ModelParams {
        let keep: Vec<(String, Vec<f32>)> = self
            .params
            .iter()
            .filter(|(n, _)| {
                formats::required_tensor(&self.config, FileKind::Inference, n).is_some()
            })
            .cloned()
            .collect();
        ModelParams {
            kind: FileKind::Inference,
            config: self.config,
            provenance: self.provenance.clone(),
            params: keep,
            optimizer: None,
            training: None,
        }
    }

    /// The parameters as safetensors bytes: one f32 tensor per `formats` name with the same
    /// shape (dense layers `[in, out]`), and the configuration and provenance as metadata.
    pub fn to_safetensors(&self) -> Result<Vec<u8>, TrainerError> {
        let mut views = Vec::new();
        let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = self
            .params
            .iter()
            .map(|(name, data)| {
                let shape = formats::allowed_tensor(&self.config, self.kind, name)
                    .map(|(_, s)| s.iter().map(|&d| d as usize).collect())
                    .unwrap_or_else(|| vec![data.len()]);
                let raw = data.iter().flat_map(|x| x.to_le_bytes()).collect();
                (name.clone(), shape, raw)
            })
            .collect();
        for (name, shape, raw) in &bytes {
            let view =
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), raw)
                    .map_err(|e| TrainerError::Settings(format!("safetensors: {name}: {e}")))?;
            views.push((name.clone(), view));
        }
        let c = &self.config;
        let p = &self.provenance;
        let metadata: HashMap<String, String> = [
            ("format", "awgim".to_string()),
            ("feature_dim", c.feature_dim.to_string()),
            ("latent_dim", c.latent_dim.to_string()),
            ("heads", c.heads.to_string()),
            ("ways", c.ways.to_string()),
            ("shots", c.shots.to_string()),
            ("generator_hidden", c.generator_hidden.to_string()),
            ("ln_epsilon", c.ln_epsilon.to_string()),
            ("layer_norm", format!("{:?}", c.layer_norm)),
            ("encoder", format!("{:?}", c.encoder)),
            ("features", format!("{:?}", c.classifier.features)),
            ("weights", format!("{:?}", c.classifier.weights)),
            ("logits", format!("{:?}", c.classifier.logits)),
            ("dataset", p.dataset.to_string()),
            ("steps", p.steps.to_string()),
            ("seed", p.seed.to_string()),
            ("tool", format!("{} {}", p.tool, p.tool_version)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        safetensors::serialize(views, Some(metadata))
            .map_err(|e| TrainerError::Settings(format!("safetensors: {e}")))
    }
}
