//! Evaluation (AWGIM.md's protocol): random N-way K-shot tasks with 15 queries per class
//! from one split, mean accuracy and its 95% interval `1.96 std / sqrt(tasks)`, next to the
//! nearest-class-mean baseline on the same tasks.

use autodiff::{Backend, Evaluator};
use formats::ModelConfig;

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

/// The compiled evaluation graph ([`awgim::build_eval`], `W = mu`) for batches of tasks,
/// and the test protocol on it.
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
        Ok(CompiledEval {
            evaluator,
            config: *config,
            tasks,
            queries_per_class,
        })
    }

    /// Replaces the parameters (by name; training-only ones are ignored).
    pub fn load_params(&mut self, params: &[(String, Vec<f32>)]) -> Result<(), TrainerError> {
        Ok(self.evaluator.load_params(params)?)
    }

    /// Query logits `(tasks, N*Q, N)` for a batch of exactly the graph's task count.
    pub fn logits(&mut self, batch: &EpisodeBatch) -> Result<Vec<f32>, TrainerError> {
        self.evaluator.set_input(input::SUPPORT, &batch.support)?;
        self.evaluator.set_input(input::QUERY, &batch.query)?;
        let mut out = self.evaluator.run()?;
        Ok(out.swap_remove(0))
    }

    /// Accuracy of the model and of the nearest-class-mean baseline on the same `tasks`
    /// random tasks of `split` (seeded).
    pub fn evaluate(
        &mut self,
        split: &Split,
        tasks: usize,
        seed: u64,
    ) -> Result<(Accuracy, Accuracy), TrainerError> {
        let sizes = self.config.sizes();
        let spec = EpisodeSpec {
            n_way: sizes.N,
            k_shot: sizes.K,
            n_query: self.queries_per_class,
            shuffle_queries: false,
        };
        let mut sampler = EpisodeSampler::new(split, spec, seed)?;
        let queries_per_task = spec.n_way * spec.n_query;
        let (mut model, mut ncm) = (Vec::with_capacity(tasks), Vec::with_capacity(tasks));
        let mut batch = EpisodeBatch::default();
        while model.len() < tasks {
            sampler.sample_into(self.tasks, &mut batch);
            let logits = self.logits(&batch)?;
            let keep = (tasks - model.len()).min(self.tasks);
            let acc = task_accuracies(&logits, &batch.query_labels, spec.n_way, queries_per_task);
            model.extend_from_slice(&acc[..keep]);
            ncm.extend_from_slice(&ncm_accuracy(&batch, Metric::Euclidean)?[..keep]);
        }
        Ok((Accuracy::from_tasks(&model), Accuracy::from_tasks(&ncm)))
    }
}
