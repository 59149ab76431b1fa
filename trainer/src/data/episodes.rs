//! N-way K-shot episodes drawn from one split, and the nearest-class-mean
//! baseline.

use rand::seq::index;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;

use super::error::DataError;
use super::split::Split;

/// Shape of the episodes: N classes, K support and Q query examples each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpisodeSpec {
    /// N: classes per task.
    pub n_way: usize,
    /// K: support examples per class.
    pub k_shot: usize,
    /// Q: query examples per class.
    pub n_query: usize,
    /// Shuffle the query rows of each task (labels follow); otherwise the
    /// query set is class-major like the support set.
    pub shuffle_queries: bool,
}

impl EpisodeSpec {
    /// The paper's training episodes: 5-way, `k_shot`-shot, 15 queries per
    /// class, class-major queries.
    pub fn five_way(k_shot: usize) -> Self {
        EpisodeSpec {
            n_way: 5,
            k_shot,
            n_query: 15,
            shuffle_queries: false,
        }
    }
}

/// A batch of B tasks as contiguous arrays, ready to feed a graph.
///
/// Task `b`'s support rows are `b * N * K .. (b + 1) * N * K` of `support`
/// (each `dim` wide), class-major: rows `i * K .. (i + 1) * K` of the task
/// are its class `i`, labelled `i`. Query rows likewise with Q per class
/// (class-major unless [`EpisodeSpec::shuffle_queries`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EpisodeBatch {
    /// B.
    pub batch: usize,
    /// N.
    pub n_way: usize,
    /// K.
    pub k_shot: usize,
    /// Q.
    pub n_query: usize,
    /// D.
    pub dim: usize,
    /// (B, N * K, D), row-major.
    pub support: Vec<f32>,
    /// (B, N * K): label in `0..N` of each support row.
    pub support_labels: Vec<u32>,
    /// (B, N * Q, D), row-major.
    pub query: Vec<f32>,
    /// (B, N * Q): label in `0..N` of each query row.
    pub query_labels: Vec<u32>,
    /// (B, N): the split's class index behind each task label.
    pub classes: Vec<usize>,
    /// (B, N * K): example index within its class of each support row.
    pub support_examples: Vec<usize>,
    /// (B, N * Q): example index within its class of each query row.
    pub query_examples: Vec<usize>,
}

impl EpisodeBatch {
    /// Checks that the arrays have the sizes the counts say and that every
    /// label is below N.
    #[allow(non_snake_case)] // AWGIM.md's size names
    pub fn check(&self) -> Result<(), DataError> {
        let (B, N, K, Q, D) = (self.batch, self.n_way, self.k_shot, self.n_query, self.dim);
        let product = |factors: &[usize]| factors.iter().try_fold(1usize, |p, &f| p.checked_mul(f));
        let sizes = [
            ("support", self.support.len(), product(&[B, N, K, D])),
            (
                "support_labels",
                self.support_labels.len(),
                product(&[B, N, K]),
            ),
            ("query", self.query.len(), product(&[B, N, Q, D])),
            ("query_labels", self.query_labels.len(), product(&[B, N, Q])),
        ];
        for (name, have, want) in sizes {
            if Some(have) != want {
                let want =
                    want.map_or_else(|| "more than usize::MAX".to_string(), |w| w.to_string());
                return Err(DataError::InvalidSettings(format!(
                    "episode batch: {name} has {have} values, B={B} N={N} K={K} Q={Q} D={D} needs {want}"
                )));
            }
        }
        if N == 0 || K == 0 || D == 0 {
            return Err(DataError::InvalidSettings(format!(
                "episode batch: N={N} K={K} D={D} must be non-zero"
            )));
        }
        let labels = self.support_labels.iter().chain(&self.query_labels);
        if let Some(l) = labels.into_iter().find(|&&l| l as usize >= N) {
            return Err(DataError::InvalidSettings(format!(
                "episode batch: label {l} >= N={N}"
            )));
        }
        Ok(())
    }

    /// One-hot encoding of labels: `(labels.len(), n_way)` row-major.
    pub fn one_hot(labels: &[u32], n_way: usize) -> Vec<f32> {
        let mut out = vec![0f32; labels.len() * n_way];
        for (row, &l) in out.chunks_exact_mut(n_way.max(1)).zip(labels) {
            if let Some(v) = row.get_mut(l as usize) {
                *v = 1.0;
            }
        }
        out
    }
}

/// Draws episodes from one split with a seeded, reproducible generator.
#[derive(Debug, Clone)]
pub struct EpisodeSampler<'s> {
    split: &'s Split,
    spec: EpisodeSpec,
    rng: Xoshiro256PlusPlus,
}

impl<'s> EpisodeSampler<'s> {
    /// A sampler over `split`; refuses N = 0, K = 0, and splits with fewer
    /// than N classes or a class with fewer than K + Q examples.
    pub fn new(split: &'s Split, spec: EpisodeSpec, seed: u64) -> Result<Self, DataError> {
        if spec.n_way == 0 || spec.k_shot == 0 {
            return Err(DataError::InvalidSettings(format!(
                "{}-way {}-shot episodes need N >= 1 and K >= 1",
                spec.n_way, spec.k_shot
            )));
        }
        let per_class = spec
            .k_shot
            .checked_add(spec.n_query)
            .ok_or_else(|| DataError::InvalidSettings("K + Q overflows".into()))?;
        split.check_episodes(spec.n_way, per_class)?;
        Ok(EpisodeSampler {
            split,
            spec,
            rng: Xoshiro256PlusPlus::seed_from_u64(seed),
        })
    }

    /// The split episodes are drawn from.
    pub fn split(&self) -> &'s Split {
        self.split
    }

    /// The episode shape.
    pub fn spec(&self) -> EpisodeSpec {
        self.spec
    }

    /// Draws a batch of `batch` tasks.
    pub fn sample(&mut self, batch: usize) -> EpisodeBatch {
        let mut out = EpisodeBatch::default();
        self.sample_into(batch, &mut out);
        out
    }

    /// Draws a batch of `batch` tasks into `out`, reusing its buffers.
    pub fn sample_into(&mut self, batch: usize, out: &mut EpisodeBatch) {
        let EpisodeSpec {
            n_way,
            k_shot,
            n_query,
            shuffle_queries,
        } = self.spec;
        let dim = self.split.dim();
        out.batch = batch;
        out.n_way = n_way;
        out.k_shot = k_shot;
        out.n_query = n_query;
        out.dim = dim;
        out.support.clear();
        out.query.clear();
        out.support_labels.clear();
        out.query_labels.clear();
        out.classes.clear();
        out.support_examples.clear();
        out.query_examples.clear();
        let mut order: Vec<usize> = (0..n_way * n_query).collect();
        for _ in 0..batch {
            let classes = index::sample(&mut self.rng, self.split.num_classes(), n_way).into_vec();
            let query_start = out.query_examples.len();
            for (label, &class) in classes.iter().enumerate() {
                let picks =
                    index::sample(&mut self.rng, self.split.class_len(class), k_shot + n_query);
                for (j, example) in picks.into_iter().enumerate() {
                    let row = self.split.example(class, example).unwrap_or(&[]);
                    if j < k_shot {
                        out.support.extend_from_slice(row);
                        out.support_labels.push(label as u32);
                        out.support_examples.push(example);
                    } else {
                        out.query.extend_from_slice(row);
                        out.query_labels.push(label as u32);
                        out.query_examples.push(example);
                    }
                }
            }
            if shuffle_queries {
                order.shuffle(&mut self.rng);
                permute_task_queries(out, query_start, &order);
            }
            out.classes.extend_from_slice(&classes);
        }
    }
}

/// Reorders the query rows of the task starting at query row `start`:
/// new row `r` is old row `order[r]`.
fn permute_task_queries(out: &mut EpisodeBatch, start: usize, order: &[usize]) {
    let dim = out.dim;
    let queries = order.len();
    let rows = out.query[start * dim..(start + queries) * dim].to_vec();
    let labels = out.query_labels[start..start + queries].to_vec();
    let examples = out.query_examples[start..start + queries].to_vec();
    for (r, &old) in order.iter().enumerate() {
        out.query[(start + r) * dim..(start + r + 1) * dim]
            .copy_from_slice(&rows[old * dim..(old + 1) * dim]);
        out.query_labels[start + r] = labels[old];
        out.query_examples[start + r] = examples[old];
    }
}

/// Distance used by the nearest-class-mean baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Metric {
    /// Euclidean distance to the class mean (the default).
    #[default]
    Euclidean,
    /// One minus the cosine similarity to the class mean.
    Cosine,
}

/// Nearest-class-mean baseline: for every task of the batch, the class
/// means of the support set, each query assigned to the nearest mean
/// (ties to the lower label); returns the query accuracy of each task.
/// Refuses a batch whose arrays disagree with its counts.
#[allow(non_snake_case)] // AWGIM.md's size names
pub fn ncm_accuracy(batch: &EpisodeBatch, metric: Metric) -> Result<Vec<f32>, DataError> {
    batch.check()?;
    let (N, K, Q, D) = (batch.n_way, batch.k_shot, batch.n_query, batch.dim);
    let mut means = vec![0f32; N * D];
    let mut accuracy = Vec::with_capacity(batch.batch);
    for t in 0..batch.batch {
        means.iter_mut().for_each(|m| *m = 0.0);
        let support = &batch.support[t * N * K * D..(t + 1) * N * K * D];
        let labels = &batch.support_labels[t * N * K..(t + 1) * N * K];
        for (row, &l) in support.chunks_exact(D).zip(labels) {
            let mean = &mut means[l as usize * D..(l as usize + 1) * D];
            mean.iter_mut()
                .zip(row)
                .for_each(|(m, x)| *m += x / K as f32);
        }
        let query = &batch.query[t * N * Q * D..(t + 1) * N * Q * D];
        let truth = &batch.query_labels[t * N * Q..(t + 1) * N * Q];
        let mut correct = 0usize;
        for (row, &l) in query.chunks_exact(D).zip(truth) {
            let mut best = (f32::INFINITY, 0usize);
            for (c, mean) in means.chunks_exact(D).enumerate() {
                let dist = distance(metric, row, mean);
                if dist < best.0 {
                    best = (dist, c);
                }
            }
            correct += usize::from(best.1 == l as usize);
        }
        accuracy.push(if Q == 0 {
            0.0
        } else {
            correct as f32 / (N * Q) as f32
        });
    }
    Ok(accuracy)
}

fn distance(metric: Metric, a: &[f32], b: &[f32]) -> f32 {
    match metric {
        Metric::Euclidean => a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f32>(),
        Metric::Cosine => {
            let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
            let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
            let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
            if na == 0.0 || nb == 0.0 {
                1.0
            } else {
                1.0 - dot / (na * nb)
            }
        }
    }
}
