//! Feeding a compiled training step as `trainer::run` feeds it, for the `train_step` bench
//! and the `step-profile` example (which includes this file): a batch of episodes from the
//! training split, their one-hot labels, and the noise and dropout masks of
//! `awgim::draw_random_inputs`, all from one generator per step; the feature centre once,
//! where the graph has one (centred features), as the run sets it before the first step.

use autodiff::TrainStep;
use rand::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use trainer::awgim::{self, input};
use trainer::data::{Dataset, EpisodeBatch, EpisodeSampler, EpisodeSpec, SplitKind};
use trainer::options::Settings;

/// A compiled training step and what it is fed from.
pub struct Feeder {
    /// The trainer's resolved settings.
    pub settings: Settings,
    /// The compiled step.
    pub train: TrainStep,
    /// The graph's inputs (names and shapes), for the random draws.
    pub inputs: Vec<(String, Vec<usize>)>,
    /// The data set whose training split the tasks come from.
    pub data: Dataset,
    /// The episodes of the current step.
    pub batch: EpisodeBatch,
}

impl Feeder {
    /// The step `train` with the graph inputs `inputs`, fed from `data`; sets the feature
    /// centre (the training split's mean) if the graph has one.
    pub fn new(
        settings: Settings,
        mut train: TrainStep,
        inputs: Vec<(String, Vec<usize>)>,
        data: Dataset,
    ) -> Result<Self, String> {
        if inputs.iter().any(|(name, _)| name == input::CENTER) {
            let center = data.split(SplitKind::Train).mean();
            train
                .set_input(input::CENTER, &center)
                .map_err(|e| e.to_string())?;
        }
        Ok(Self {
            settings,
            train,
            inputs,
            data,
            batch: EpisodeBatch::default(),
        })
    }

    /// Feeds step `step`: its tasks, labels, noise and dropout masks, from the step's own
    /// generator (seeded by the run's seed and the step).
    pub fn feed(&mut self, step: u64) -> Result<(), String> {
        let s = &self.settings;
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(s.seed ^ step);
        let spec = EpisodeSpec {
            n_way: s.ways as usize,
            k_shot: s.shots as usize,
            n_query: s.queries as usize,
            shuffle_queries: true,
        };
        EpisodeSampler::new(self.data.split(SplitKind::Train), spec, rng.next_u64())
            .map_err(|e| e.to_string())?
            .sample_into(s.batch, &mut self.batch);
        let (batch, train, n) = (&self.batch, &mut self.train, spec.n_way);
        let err = |e: autodiff::AutodiffError| e.to_string();
        train
            .set_input(input::SUPPORT, &batch.support)
            .map_err(err)?;
        train.set_input(input::QUERY, &batch.query).map_err(err)?;
        let one_hot = EpisodeBatch::one_hot(&batch.support_labels, n);
        train
            .set_input_vec(input::SUPPORT_TARGETS, one_hot)
            .map_err(err)?;
        let one_hot = EpisodeBatch::one_hot(&batch.query_labels, n);
        train
            .set_input_vec(input::QUERY_TARGETS, one_hot)
            .map_err(err)?;
        awgim::draw_random_inputs(&self.inputs, 1.0 - s.dropout, &mut rng, |name, v| {
            train.set_input_vec(name, v)
        })
        .map_err(|e| e.to_string())
    }
}
