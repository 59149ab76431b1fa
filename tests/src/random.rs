//! Seeded random model files and tasks.
//!
//! Initialisation follows AWGIM.md: dense layers Glorot-uniform, attention projections
//! (`wq`, `wk`, `wv`, `wo`) normal with standard deviation `d^-1/2`, layer-norm gain 1 and
//! bias 0. The generator is a `Xoshiro256PlusPlus` seeded from a `u64`, so a seed names the
//! same file on every platform.

use formats::tensors::{CA_AP, SA_AP, SA_CP};
use formats::{
    expected_tensors, FileBuilder, FileKind, FormatError, ModelConfig, Provenance, Sizes,
    TensorSpec,
};
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal, Uniform};
use rand_xoshiro::Xoshiro256PlusPlus;

/// How to draw a random model.
#[derive(Clone, Copy, Debug)]
pub struct RandomModel {
    /// Sizes and variants.
    pub config: ModelConfig,
    /// Seed of the weights.
    pub seed: u64,
    /// Inference or training tensor set (training files get no optimizer or training state).
    pub kind: FileKind,
    /// Draw layer-norm gains from N(1, 0.2) and biases from N(0, 0.2) instead of 1 and 0, so a
    /// test notices a gain and a bias swapped or ignored.
    pub perturb_layer_norm: bool,
}

impl RandomModel {
    /// An inference file of `config` initialised as AWGIM.md says.
    pub fn new(config: ModelConfig, seed: u64) -> Self {
        Self {
            config,
            seed,
            kind: FileKind::Inference,
            perturb_layer_norm: false,
        }
    }

    /// The same with random layer-norm gains and biases.
    pub fn perturbed(config: ModelConfig, seed: u64) -> Self {
        Self {
            perturb_layer_norm: true,
            ..Self::new(config, seed)
        }
    }

    /// Every tensor of the file, in canonical order; fails if the configuration is invalid.
    pub fn tensors(&self) -> Result<Vec<(TensorSpec, Vec<f32>)>, FormatError> {
        self.config.validate()?;
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(self.seed);
        let d = self.config.sizes().d as f32;
        // Standard deviations below are finite and positive for a valid configuration.
        Ok(expected_tensors(&self.config, self.kind)
            .map(|spec| {
                let n = spec.elements() as usize;
                let name = spec.name;
                let values: Vec<f32> = if is_attention_projection(name) {
                    let normal = Normal::new(0.0, d.powf(-0.5)).expect("valid std");
                    (0..n).map(|_| normal.sample(&mut rng)).collect()
                } else if name.ends_with(".gain") {
                    let normal = Normal::new(1.0f32, 0.2).expect("valid std");
                    (0..n)
                        .map(|_| {
                            if self.perturb_layer_norm {
                                normal.sample(&mut rng)
                            } else {
                                1.0
                            }
                        })
                        .collect()
                } else if name.ends_with(".bias") {
                    let normal = Normal::new(0.0f32, 0.2).expect("valid std");
                    (0..n)
                        .map(|_| {
                            if self.perturb_layer_norm {
                                normal.sample(&mut rng)
                            } else {
                                0.0
                            }
                        })
                        .collect()
                } else if spec.shape.len() < 2 {
                    // The classifier variants' vectors (feature centre, logit scale).
                    let uniform = Uniform::new_inclusive(0.5f32, 1.5);
                    (0..n).map(|_| uniform.sample(&mut rng)).collect()
                } else {
                    let (fan_in, fan_out) = (spec.shape[0] as f32, spec.shape[1] as f32);
                    let limit = (6.0 / (fan_in + fan_out)).sqrt();
                    let uniform = Uniform::new_inclusive(-limit, limit);
                    (0..n).map(|_| uniform.sample(&mut rng)).collect()
                };
                (spec, values)
            })
            .collect())
    }

    /// The model file, with every tensor replaced by `edit(name, values)` first.
    pub fn build_with(
        &self,
        mut edit: impl FnMut(&str, &mut Vec<f32>),
    ) -> Result<Vec<u8>, FormatError> {
        let mut tensors = self.tensors()?;
        for (spec, values) in &mut tensors {
            edit(spec.name, values);
        }
        let provenance = Provenance {
            dataset: "random".try_into().unwrap_or_default(),
            shots: self.config.shots,
            steps: 0,
            seed: self.seed,
            validation: None,
            tool: "tests::random".try_into().unwrap_or_default(),
            tool_version: env!("CARGO_PKG_VERSION").try_into().unwrap_or_default(),
        };
        let mut builder = FileBuilder::new(self.kind, self.config, provenance)?;
        for (spec, values) in &tensors {
            builder.tensor(spec.name, values)?;
        }
        builder.build()
    }

    /// The model file.
    pub fn build(&self) -> Result<Vec<u8>, FormatError> {
        self.build_with(|_, _| {})
    }
}

/// Whether `name` is a block's `Wq`, `Wk`, `Wv` or `Wo`.
fn is_attention_projection(name: &str) -> bool {
    [SA_AP, CA_AP, SA_CP]
        .iter()
        .any(|b| [b.wq, b.wk, b.wv, b.wo].contains(&name))
}

/// A random N-way K-shot task: support rows class-major, queries with their true classes.
#[derive(Clone, Debug)]
pub struct RandomTask {
    /// `N * K` rows of `D` features; rows `i*K..(i+1)*K` are class `i`.
    pub support: Vec<Vec<f32>>,
    /// Query rows of `D` features.
    pub queries: Vec<Vec<f32>>,
    /// The class each query was drawn from.
    pub labels: Vec<usize>,
}

impl RandomTask {
    /// Features clustered by class, like a backbone's: each class has a centre drawn from
    /// N(0, 1) per feature and its examples add N(0, `spread`^2) noise. `queries_per_class`
    /// queries are drawn for each class.
    pub fn new(config: &ModelConfig, seed: u64, queries_per_class: usize, spread: f32) -> Self {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ 0x5eed_7a5c);
        let Sizes { D, N, K, .. } = config.sizes();
        let normal = Normal::new(0.0f32, 1.0).expect("valid std");
        let centres: Vec<Vec<f32>> = (0..N)
            .map(|_| (0..D).map(|_| normal.sample(&mut rng)).collect())
            .collect();
        let draw = |class: usize, rng: &mut Xoshiro256PlusPlus| -> Vec<f32> {
            centres[class]
                .iter()
                .map(|c| c + spread * normal.sample(rng))
                .collect()
        };
        let mut support = Vec::new();
        for class in 0..N {
            for _ in 0..K {
                support.push(draw(class, &mut rng));
            }
        }
        let mut queries = Vec::new();
        let mut labels = Vec::new();
        for _ in 0..queries_per_class {
            for class in 0..N {
                queries.push(draw(class, &mut rng));
                labels.push(class);
            }
        }
        // Shuffle queries so a batch mixes classes.
        for i in (1..queries.len()).rev() {
            let j = rng.gen_range(0..=i);
            queries.swap(i, j);
            labels.swap(i, j);
        }
        Self {
            support,
            queries,
            labels,
        }
    }
}

/// Copies rows into fixed-size arrays (for the engine's `&[[f32; D]; R]` inputs).
pub fn to_arrays<const D: usize>(rows: &[Vec<f32>]) -> Vec<[f32; D]> {
    rows.iter()
        .map(|row| {
            let mut out = [0.0; D];
            out.copy_from_slice(row);
            out
        })
        .collect()
}
