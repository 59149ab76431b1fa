//! Training options: the command-line flags, and the resolved settings a run (and its
//! checkpoints) records.
//!
//! Defaults follow the reference schedule (AWGIM.md): AdamW, learning rate 2e-4 (1-shot) or
//! 1e-3 (5-shot), x0.2 every 15,000 steps, weight decay 1e-6, clipping 0.1 / 0.1, dropout
//! 0.3, Q = 15, loss weights 1 / 0.001 / 0.001. Two things differ by default so that a
//! plain `trainer --shots 5` finishes in minutes on two CPU cores: the number of steps and
//! the batch size, and the latent sizes (d = 32, the edge configuration). Beyond the paper,
//! the default classifier centres and normalises the features, adds the generated weights to
//! the normalised class prototype and takes cosine logits (`--features`, `--weights`,
//! `--logits`; docs/training.md, "Beyond the paper"). `--paper` selects the paper's run: its
//! classifier, 50,000 steps, batch 64 (1-shot) or 32 (5-shot), d = 128, G = 256.

use std::path::PathBuf;

use autodiff::AdamWConfig;
use clap::{Args, ValueEnum};
use formats::{
    Classifier, EncoderKind, FeatureNorm, LayerNormKind, LogitsKind, ModelConfig, WeightsKind,
};
use serde::{Deserialize, Serialize};

use crate::awgim::{GeneratorRows, LossWeights, TrainOptions};
use crate::data::SyntheticSpec;
use crate::error::TrainerError;

/// Layer-norm variant (see AWGIM.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
pub enum LayerNormArg {
    /// Per row (the default; what a device computes).
    PerRow,
    /// The reference's task-wide statistics (research parity; the engine refuses it).
    TaskWide,
}

/// Encoder variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
pub enum EncoderArg {
    /// The three multi-head attention blocks (the paper's model).
    Attention,
    /// Ablation: MLPs instead of the attention blocks.
    Mlp,
}

/// Feature preprocessing ([`FeatureNorm`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
pub enum FeaturesArg {
    /// The features as given (the paper).
    Raw,
    /// Centred on the training classes' mean and L2-normalised.
    CenteredL2,
}

/// What the generator outputs ([`WeightsKind`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
pub enum WeightsArg {
    /// The class weights (the paper).
    Generated,
    /// A correction to the normalised class prototype.
    Prototype,
}

/// The logits ([`LogitsKind`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
pub enum LogitsArg {
    /// `x . W[i]` (the paper).
    Dot,
    /// `s x . W[i] / |W[i]|` with a learned scale.
    Cosine,
}

/// The built-in synthetic data set's shape (see `trainer/src/data/synthetic.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
pub enum SyntheticPreset {
    /// miniImageNet's shape: 64 / 16 / 20 classes of 600 examples, D = 64.
    Mini,
    /// The shape of real pretrained-encoder feature sets: 351 / 97 / 160 classes of 50
    /// examples (few examples per base class, easy to memorise), D = 384.
    ManyClasses,
}

impl SyntheticPreset {
    /// The data set's spec, with the feature dimension `dim` if given.
    pub fn spec(self, dim: Option<usize>) -> SyntheticSpec {
        let spec = match self {
            SyntheticPreset::Mini => SyntheticSpec::default(),
            SyntheticPreset::ManyClasses => SyntheticSpec::many_classes(),
        };
        SyntheticSpec {
            dim: dim.unwrap_or(spec.dim),
            ..spec
        }
    }
}

/// Flags of a training run. Unset flags take the defaults described in the module docs.
#[derive(Clone, Debug, Args)]
pub struct TrainArgs {
    /// Classes per task (N).
    #[arg(long, default_value_t = 5)]
    pub ways: u32,
    /// Support examples per class (K).
    #[arg(long, default_value_t = 5)]
    pub shots: u32,
    /// Query examples per class (Q) in training tasks.
    #[arg(long, default_value_t = 15)]
    pub queries: u32,
    /// Training steps [default: 1500 (3000 for 1-shot); 50000 with --paper].
    #[arg(long)]
    pub steps: Option<u64>,
    /// Tasks per step [default: 8; 64 (1-shot) or 32 (5-shot) with --paper].
    #[arg(long)]
    pub batch: Option<usize>,
    /// Learning rate [default: 2e-4 for 1-shot, 1e-3 otherwise].
    #[arg(long)]
    pub lr: Option<f32>,
    /// Seed of everything random in the run.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Data set: a LEO directory (`{train,val,test}_embeddings.pkl`), an npy directory or an
    /// `.npz` file. Without it, the built-in synthetic data set is used.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Shape of the built-in synthetic data set (without `--data`).
    #[arg(long, value_enum, default_value_t = SyntheticPreset::Mini)]
    pub synthetic: SyntheticPreset,
    /// Feature dimension of the built-in synthetic data set [default: the preset's, 64 or
    /// 384].
    #[arg(long)]
    pub synthetic_dim: Option<usize>,
    /// The model file to write (the best validation checkpoint).
    #[arg(long, default_value = "awgim.model")]
    pub out: PathBuf,
    /// The paper's model, schedule and sizes: raw features, generated weights and dot-product
    /// logits, 50,000 steps, batch 64 (1-shot) or 32, d = 128, G = 256.
    #[arg(long)]
    pub paper: bool,
    /// Latent dimension d [default: 32; 128 with --paper].
    #[arg(long)]
    pub latent: Option<u32>,
    /// Attention heads h (1 is the single-head ablation).
    #[arg(long, default_value_t = 4)]
    pub heads: u32,
    /// Generator hidden width G [default: 2d].
    #[arg(long)]
    pub generator: Option<u32>,
    /// Layer-norm variant.
    #[arg(long, value_enum, default_value_t = LayerNormArg::PerRow)]
    pub layer_norm: LayerNormArg,
    /// Layer-norm epsilon.
    #[arg(long, default_value_t = 1e-12)]
    pub ln_epsilon: f32,
    /// Encoder variant (`mlp` is the ablation without attention).
    #[arg(long, value_enum, default_value_t = EncoderArg::Attention)]
    pub encoder: EncoderArg,
    /// Weight of the support cross-entropy (l1; 0 is an ablation).
    #[arg(long, default_value_t = 1.0)]
    pub l1: f32,
    /// Weight of the support reconstruction loss (l2).
    #[arg(long, default_value_t = 0.001)]
    pub l2: f32,
    /// Weight of the query reconstruction loss (l3).
    #[arg(long, default_value_t = 0.001)]
    pub l3: f32,
    /// Dropout rate.
    #[arg(long, default_value_t = 0.3)]
    pub dropout: f32,
    /// How the generator runs over a class's K support rows in training: once per class
    /// (one dropout mask per class, K times cheaper) or once per row as the reference does
    /// (a mask per row). Evaluation and the exported model do not depend on it.
    #[arg(long, value_enum, default_value_t = GeneratorRows::PerClass)]
    pub generator_rows: GeneratorRows,
    /// Learning-rate decay factor (staircase).
    #[arg(long, default_value_t = 0.2)]
    pub decay_rate: f32,
    /// Steps between learning-rate decays (0: never).
    #[arg(long, default_value_t = 15_000)]
    pub decay_every: u64,
    /// Decoupled weight decay (not scaled by the learning rate).
    #[arg(long, default_value_t = 1e-6)]
    pub weight_decay: f32,
    /// Element-wise gradient clipping bound (0: off).
    #[arg(long, default_value_t = 0.1)]
    pub clip_value: f32,
    /// Per-tensor gradient L2-norm clipping bound (0: off).
    #[arg(long, default_value_t = 0.1)]
    pub clip_norm: f32,
    /// Steps between validations [default: 250; 500 with --paper].
    #[arg(long)]
    pub val_every: Option<u64>,
    /// Validation tasks per validation.
    #[arg(long, default_value_t = 200)]
    pub val_tasks: usize,
    /// Test tasks at the end (AWGIM.md's protocol: 600).
    #[arg(long, default_value_t = 600)]
    pub test_tasks: usize,
    /// Tasks per evaluation batch.
    #[arg(long, default_value_t = 20)]
    pub eval_batch: usize,
    /// Steps between resumable checkpoints [default: the validation interval].
    #[arg(long)]
    pub checkpoint_every: Option<u64>,
    /// Replace the files of an earlier run at `--out` (refused otherwise, so that nothing
    /// saved is lost by accident).
    #[arg(long)]
    pub overwrite: bool,
    /// Feature preprocessing [default: centered-l2; raw with --paper].
    #[arg(long, value_enum)]
    pub features: Option<FeaturesArg>,
    /// What the generator outputs: the class weights (the paper) or a correction to the
    /// normalised class prototype [default: prototype; generated with --paper].
    #[arg(long, value_enum)]
    pub weights: Option<WeightsArg>,
    /// Logits: dot product (the paper) or cosine with a learned scale [default: cosine; dot
    /// with --paper].
    #[arg(long, value_enum)]
    pub logits: Option<LogitsArg>,
    /// Classes per training task [default: --ways]; more ways than at test is a regulariser
    /// (the model does not depend on N).
    #[arg(long)]
    pub train_ways: Option<u32>,
    /// The paper's final protocol: train on the train and val classes together for the fixed
    /// number of steps, without validation; the model file is the last step's parameters.
    #[arg(long)]
    pub train_on_val: bool,
    /// Testing aid: make the loss non-finite at these steps (the step must be skipped).
    #[arg(long, hide = true, value_delimiter = ',')]
    pub inject_nan_at: Vec<u64>,
}

/// The resolved settings of a run; stored in its checkpoints so `--resume` continues the
/// same run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// N.
    pub ways: u32,
    /// K.
    pub shots: u32,
    /// Q in training tasks.
    pub queries: u32,
    /// Total steps.
    pub steps: u64,
    /// Tasks per step.
    pub batch: usize,
    /// Seed.
    pub seed: u64,
    /// Data path (`None`: synthetic).
    pub data: Option<PathBuf>,
    /// Synthetic data set's shape.
    pub synthetic: SyntheticPreset,
    /// Synthetic feature dimension (`None`: the preset's).
    pub synthetic_dim: Option<usize>,
    /// Model file to write.
    pub out: PathBuf,
    /// d.
    pub latent: u32,
    /// h.
    pub heads: u32,
    /// G.
    pub generator: u32,
    /// Layer-norm variant.
    pub layer_norm: LayerNormArg,
    /// Layer-norm epsilon.
    pub ln_epsilon: f32,
    /// Encoder variant.
    pub encoder: EncoderArg,
    /// Loss weights.
    pub loss_weights: LossWeights,
    /// Dropout rate.
    pub dropout: f32,
    /// Generator rows in training.
    pub generator_rows: GeneratorRows,
    /// Optimizer and schedule.
    pub lr: f32,
    /// Staircase decay factor.
    pub decay_rate: f32,
    /// Steps per decay.
    pub decay_every: u64,
    /// Weight decay.
    pub weight_decay: f32,
    /// Element-wise clipping (0: off).
    pub clip_value: f32,
    /// Norm clipping (0: off).
    pub clip_norm: f32,
    /// Validation interval.
    pub val_every: u64,
    /// Validation tasks.
    pub val_tasks: usize,
    /// Test tasks.
    pub test_tasks: usize,
    /// Evaluation batch.
    pub eval_batch: usize,
    /// Checkpoint interval.
    pub checkpoint_every: u64,
    /// Feature preprocessing.
    pub features: FeaturesArg,
    /// What the generator outputs.
    pub weights: WeightsArg,
    /// The logits.
    pub logits: LogitsArg,
    /// Classes per training task.
    pub train_ways: u32,
    /// Train on train + val without validation (the paper's final protocol).
    pub train_on_val: bool,
    /// Steps whose loss is made non-finite (testing aid).
    pub inject_nan_at: Vec<u64>,
}

/// Queries per class in validation and test tasks (AWGIM.md's protocol).
pub const EVAL_QUERIES: u32 = 15;

impl TrainArgs {
    /// Applies the defaults and checks the combination.
    pub fn resolve(&self) -> Result<Settings, TrainerError> {
        let paper = self.paper;
        let latent = self.latent.unwrap_or(if paper { 128 } else { 32 });
        let val_every = self.val_every.unwrap_or(if paper { 500 } else { 250 });
        let settings = Settings {
            ways: self.ways,
            shots: self.shots,
            queries: self.queries,
            steps: self.steps.unwrap_or(match (paper, self.shots) {
                (true, _) => 50_000,
                (false, 1) => 3_000,
                (false, _) => 1_500,
            }),
            batch: self.batch.unwrap_or(match (paper, self.shots) {
                (false, _) => 8,
                (true, 1) => 64,
                (true, _) => 32,
            }),
            seed: self.seed,
            data: self.data.clone(),
            synthetic: self.synthetic,
            synthetic_dim: self.synthetic_dim,
            out: self.out.clone(),
            latent,
            heads: self.heads,
            generator: self.generator.unwrap_or(2 * latent),
            layer_norm: self.layer_norm,
            ln_epsilon: self.ln_epsilon,
            encoder: self.encoder,
            loss_weights: LossWeights {
                l1: self.l1,
                l2: self.l2,
                l3: self.l3,
            },
            dropout: self.dropout,
            generator_rows: self.generator_rows,
            lr: self.lr.unwrap_or(if self.shots == 1 { 2e-4 } else { 1e-3 }),
            decay_rate: self.decay_rate,
            decay_every: self.decay_every,
            weight_decay: self.weight_decay,
            clip_value: self.clip_value,
            clip_norm: self.clip_norm,
            val_every,
            val_tasks: self.val_tasks,
            test_tasks: self.test_tasks,
            eval_batch: self.eval_batch,
            checkpoint_every: self.checkpoint_every.unwrap_or(val_every),
            features: self.features.unwrap_or(if paper {
                FeaturesArg::Raw
            } else {
                FeaturesArg::CenteredL2
            }),
            weights: self.weights.unwrap_or(if paper {
                WeightsArg::Generated
            } else {
                WeightsArg::Prototype
            }),
            logits: self.logits.unwrap_or(if paper {
                LogitsArg::Dot
            } else {
                LogitsArg::Cosine
            }),
            train_ways: self.train_ways.unwrap_or(self.ways),
            train_on_val: self.train_on_val,
            inject_nan_at: self.inject_nan_at.clone(),
        };
        settings.check()?;
        if !self.overwrite {
            for path in [settings.out.clone(), settings.checkpoint_path()] {
                if path.exists() {
                    return Err(TrainerError::Settings(format!(
                        "{} exists (an earlier run's file): choose another --out, continue it with \
                         --resume {}, or pass --overwrite to replace it",
                        path.display(),
                        settings.checkpoint_path().display()
                    )));
                }
            }
        }
        Ok(settings)
    }
}

impl Settings {
    /// Refuses settings that cannot train.
    pub fn check(&self) -> Result<(), TrainerError> {
        let bad = |what: &str| Err(TrainerError::Settings(what.to_string()));
        if self.ways < 2 {
            return bad("--ways must be at least 2");
        }
        if self.shots == 0 || self.queries == 0 {
            return bad("--shots and --queries must be at least 1");
        }
        if self.steps == 0 || self.batch == 0 {
            return bad("--steps and --batch must be at least 1");
        }
        if self.val_every == 0 || self.checkpoint_every == 0 || self.eval_batch == 0 {
            return bad("--val-every, --checkpoint-every and --eval-batch must be at least 1");
        }
        if self.val_tasks == 0 || self.test_tasks == 0 {
            return bad("--val-tasks and --test-tasks must be at least 1");
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad("--dropout must be in [0, 1)");
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad("--lr must be a positive number");
        }
        let finite = [
            self.loss_weights.l1,
            self.loss_weights.l2,
            self.loss_weights.l3,
            self.decay_rate,
            self.weight_decay,
            self.clip_value,
            self.clip_norm,
        ];
        if finite.iter().any(|x| !x.is_finite() || *x < 0.0) {
            return bad("loss weights, decay, weight decay and clipping must be finite and >= 0");
        }
        if self.train_ways < self.ways {
            return bad("--train-ways must be at least --ways");
        }
        if self.data.is_none() && self.synthetic_dim == Some(0) {
            return bad("--synthetic-dim must be at least 1");
        }
        self.model_config(1)
            .validate()
            .map_err(|e| TrainerError::Settings(e.to_string()))
    }

    /// The model configuration for data of `feature_dim` features.
    pub fn model_config(&self, feature_dim: u32) -> ModelConfig {
        ModelConfig {
            feature_dim,
            latent_dim: self.latent,
            heads: self.heads,
            ways: self.ways,
            shots: self.shots,
            generator_hidden: self.generator,
            ln_epsilon: self.ln_epsilon,
            layer_norm: match self.layer_norm {
                LayerNormArg::PerRow => LayerNormKind::PerRow,
                LayerNormArg::TaskWide => LayerNormKind::TaskWide,
            },
            encoder: match self.encoder {
                EncoderArg::Attention => EncoderKind::Attention,
                EncoderArg::Mlp => EncoderKind::Mlp,
            },
            classifier: Classifier {
                features: match self.features {
                    FeaturesArg::Raw => FeatureNorm::Raw,
                    FeaturesArg::CenteredL2 => FeatureNorm::CenteredL2,
                },
                weights: match self.weights {
                    WeightsArg::Generated => WeightsKind::Generated,
                    WeightsArg::Prototype => WeightsKind::Prototype,
                },
                logits: match self.logits {
                    LogitsArg::Dot => LogitsKind::Dot,
                    LogitsArg::Cosine => LogitsKind::Cosine,
                },
            },
        }
    }

    /// How the training graph is built for these settings.
    pub fn train_options(&self) -> TrainOptions {
        TrainOptions {
            dropout: self.dropout,
            loss_weights: self.loss_weights,
            rows: self.generator_rows,
        }
    }

    /// The configuration of the training graph: [`Settings::model_config`] with
    /// `--train-ways` classes per task.
    pub fn train_config(&self, feature_dim: u32) -> ModelConfig {
        ModelConfig {
            ways: self.train_ways,
            ..self.model_config(feature_dim)
        }
    }

    /// The optimizer settings.
    pub fn adamw(&self) -> AdamWConfig {
        AdamWConfig {
            lr: self.lr,
            weight_decay: self.weight_decay,
            decay_rate: self.decay_rate,
            decay_steps: self.decay_every,
            clip_value: (self.clip_value > 0.0).then_some(self.clip_value),
            clip_norm: (self.clip_norm > 0.0).then_some(self.clip_norm),
            ..AdamWConfig::default()
        }
    }

    /// Where resumable checkpoints go: the model file's name with `.ckpt` appended.
    pub fn checkpoint_path(&self) -> PathBuf {
        with_suffix(&self.out, ".ckpt")
    }

    /// Where the training curves go (`.csv` and `.svg` appended to the model file's name).
    pub fn curves_path(&self, ext: &str) -> PathBuf {
        with_suffix(&self.out, &format!(".curves.{ext}"))
    }
}

/// `path` with `suffix` appended to its file name.
pub fn with_suffix(path: &std::path::Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}
