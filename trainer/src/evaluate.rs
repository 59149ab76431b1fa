//! Evaluation (AWGIM.md's protocol): random N-way K-shot tasks with 15 queries per class
//! from one split, mean accuracy and its 95% interval `1.96 std / sqrt(tasks)`, next to three
//! nearest-class-mean baselines on the same tasks, and the paired difference between the model
//! and the best of them (per task, so the tasks' difficulty cancels out of its interval).

use autodiff::{Backend, Evaluator};
use formats::{FeatureNorm, ModelConfig};

use crate::awgim::{self, input, BatchShape};
use crate::data::{ncm_accuracy, EpisodeBatch, EpisodeSampler, EpisodeSpec, Metric, Split};
use crate::error::TrainerError;

/// Mean accuracy over tasks and the half-width of its 95% confidence interval.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Accuracy {
    /// Mean task accuracy in [0, 1].
    pub mean: f32,
    /// `1.96 * std / sqrt(tasks)` (population standard deviation, as numpy's `std`).
    pub ci95: f32,
    /// Number of tasks.
    pub tasks: usize,
}

impl Accuracy {
    /// Summarises per-task accuracies.
    pub fn from_tasks(per_task: &[f32]) -> Accuracy {
        let n = per_task.len().max(1) as f64;
        let mean = per_task.iter().map(|&a| a as f64).sum::<f64>() / n;
        let var = per_task
            .iter()
            .map(|&a| (a as f64 - mean).powi(2))
            .sum::<f64>()
            / n;
        Accuracy {
            mean: mean as f32,
            ci95: (1.96 * var.sqrt() / n.sqrt()) as f32,
            tasks: per_task.len(),
        }
    }
}

impl std::fmt::Display for Accuracy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.2}% ± {:.2}%", 100.0 * self.mean, 100.0 * self.ci95)
    }
}

/// Accuracy of each query row's arg-max (first maximum on ties) against its label, per task.
pub fn task_accuracies(
    logits: &[f32],
    labels: &[u32],
    ways: usize,
    queries_per_task: usize,
) -> Vec<f32> {
    let predicted: Vec<bool> = logits
        .chunks_exact(ways)
        .zip(labels)
        .map(|(row, &label)| argmax(row) == label as usize)
        .collect();
    predicted
        .chunks(queries_per_task.max(1))
        .map(|task| task.iter().filter(|&&ok| ok).count() as f32 / task.len() as f32)
        .collect()
}

/// Index of the first maximum (NaN never wins).
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in row.iter().enumerate() {
        if x > row[best] || row[best].is_nan() {
            best = i;
        }
    }
    best
}

/// A nearest-class-mean baseline ([`ncm_accuracy`] on the same tasks as the model).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Baseline {
    /// Euclidean distance to the class means of the raw features.
    Euclidean,
    /// Cosine similarity to the class means of the raw features.
    Cosine,
    /// Cosine similarity after subtracting the training split's mean feature vector (what
    /// an untrained `--weights prototype --logits cosine --features centered-l2` model is).
    CenteredCosine,
}

impl Baseline {
    /// Every baseline, in report order.
    pub const ALL: [Baseline; 3] = [
        Baseline::Euclidean,
        Baseline::Cosine,
        Baseline::CenteredCosine,
    ];

    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Baseline::Euclidean => "NCM euclidean",
            Baseline::Cosine => "NCM cosine",
            Baseline::CenteredCosine => "NCM centred cosine",
        }
    }
}

/// Per-task accuracies of the model and of every [`Baseline`] on the same tasks.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    /// The model's accuracy on each task.
    pub model: Vec<f32>,
    /// Each baseline's accuracy on each task, in [`Baseline::ALL`] order.
    pub baselines: [Vec<f32>; 3],
}

impl Evaluation {
    /// The model's accuracy.
    pub fn accuracy(&self) -> Accuracy {
        Accuracy::from_tasks(&self.model)
    }

    /// A baseline's accuracy.
    pub fn baseline(&self, which: Baseline) -> Accuracy {
        let index = Baseline::ALL.iter().position(|&b| b == which).unwrap_or(0);
        Accuracy::from_tasks(&self.baselines[index])
    }

    /// The baseline with the highest mean accuracy (the first on ties).
    pub fn best_baseline(&self) -> Baseline {
        let mut best = Baseline::Euclidean;
        for b in Baseline::ALL {
            if self.baseline(b).mean > self.baseline(best).mean {
                best = b;
            }
        }
        best
    }

    /// The paired difference model minus `baseline`, task by task: its mean and the 95%
    /// interval of that mean, `1.96 std(diff) / sqrt(tasks)`.
    pub fn paired_difference(&self, baseline: Baseline) -> Accuracy {
        let index = Baseline::ALL
            .iter()
            .position(|&b| b == baseline)
            .unwrap_or(0);
        let diff: Vec<f32> = self
            .model
            .iter()
            .zip(&self.baselines[index])
            .map(|(m, b)| m - b)
            .collect();
        Accuracy::from_tasks(&diff)
    }

    /// A one-paragraph report: the model, every baseline, and the paired difference to the
    /// best baseline.
    pub fn report(&self) -> String {
        let mut out = format!("AWGIM {}", self.accuracy());
        for b in Baseline::ALL {
            out.push_str(&format!(" | {} {}", b.name(), self.baseline(b)));
        }
        let best = self.best_baseline();
        let diff = self.paired_difference(best);
        out.push_str(&format!(
            "\npaired difference AWGIM - {} (best baseline): {:+.2} points, 95% interval [{:+.2}, {:+.2}]",
            best.name(),
            100.0 * diff.mean,
            100.0 * (diff.mean - diff.ci95),
            100.0 * (diff.mean + diff.ci95)
        ));
        out
    }
}

/// The compiled evaluation graph ([`awgim::build_eval`], `W = mu`) for batches of tasks, and
/// the test protocol on it.
pub struct CompiledEval {
    evaluator: Evaluator,
    config: ModelConfig,
    tasks: usize,
    queries_per_class: usize,
}

impl CompiledEval {
    /// Builds and compiles the evaluation graph for `tasks` tasks per run.
    pub fn new(
        config: &ModelConfig,
        tasks: usize,
        queries_per_class: usize,
        params: &[(String, Vec<f32>)],
        backend: Backend,
    ) -> Result<Self, TrainerError> {
        let shape = BatchShape {
            tasks,
            queries_per_class,
        };
        let built = awgim::build_eval(config, shape, params)?;
        let evaluator = Evaluator::new(built.graph, &[built.logits], backend)?;
        let mut eval = CompiledEval {
            evaluator,
            config: *config,
            tasks,
            queries_per_class,
        };
        eval.set_center(params)?;
        Ok(eval)
    }

    /// Replaces the parameters (by name; training-only ones are ignored).
    pub fn load_params(&mut self, params: &[(String, Vec<f32>)]) -> Result<(), TrainerError> {
        self.evaluator.load_params(params)?;
        self.set_center(params)
    }

    /// Feeds the feature centre of `params` to a model with centred features (the graph
    /// takes it as an input: it is set from the data, not trained).
    fn set_center(&mut self, params: &[(String, Vec<f32>)]) -> Result<(), TrainerError> {
        if self.config.classifier.features != FeatureNorm::CenteredL2 {
            return Ok(());
        }
        let center = params
            .iter()
            .find(|(name, _)| name == input::CENTER)
            .ok_or(awgim::BuildError::MissingParam(input::CENTER))?;
        Ok(self.evaluator.set_input(input::CENTER, &center.1)?)
    }

    /// Query logits `(tasks, N*Q, N)` for a batch of exactly the graph's task count.
    pub fn logits(&mut self, batch: &EpisodeBatch) -> Result<Vec<f32>, TrainerError> {
        self.evaluator.set_input(input::SUPPORT, &batch.support)?;
        self.evaluator.set_input(input::QUERY, &batch.query)?;
        let mut out = self.evaluator.run()?;
        Ok(out.swap_remove(0))
    }

    /// Accuracy of the model and of the nearest-class-mean baselines on the same `tasks`
    /// random tasks of `split` (seeded); `center` is the centred baseline's centre, the mean
    /// feature vector of the classes trained on.
    pub fn evaluate(
        &mut self,
        split: &Split,
        tasks: usize,
        seed: u64,
        center: &[f32],
    ) -> Result<Evaluation, TrainerError> {
        let sizes = self.config.sizes();
        let spec = EpisodeSpec {
            n_way: sizes.N,
            k_shot: sizes.K,
            n_query: self.queries_per_class,
            shuffle_queries: false,
        };
        let mut sampler = EpisodeSampler::new(split, spec, seed)?;
        let queries_per_task = spec.n_way * spec.n_query;
        let mut out = Evaluation {
            model: Vec::with_capacity(tasks),
            baselines: Default::default(),
        };
        let mut batch = EpisodeBatch::default();
        let mut centered = EpisodeBatch::default();
        while out.model.len() < tasks {
            sampler.sample_into(self.tasks, &mut batch);
            let logits = self.logits(&batch)?;
            let keep = (tasks - out.model.len()).min(self.tasks);
            let acc = task_accuracies(&logits, &batch.query_labels, spec.n_way, queries_per_task);
            out.model.extend_from_slice(&acc[..keep]);
            centered.clone_from(&batch);
            for rows in [&mut centered.support, &mut centered.query] {
                for row in rows.chunks_exact_mut(sizes.D.max(1)) {
                    row.iter_mut().zip(center).for_each(|(x, c)| *x -= c);
                }
            }
            let [euclidean, cosine, centered_cosine] = &mut out.baselines;
            euclidean.extend_from_slice(&ncm_accuracy(&batch, Metric::Euclidean)?[..keep]);
            cosine.extend_from_slice(&ncm_accuracy(&batch, Metric::Cosine)?[..keep]);
            let centred = ncm_accuracy(&centered, Metric::Cosine)?;
            centered_cosine.extend_from_slice(&centred[..keep]);
        }
        Ok(out)
    }
}
