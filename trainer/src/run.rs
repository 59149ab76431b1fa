//! A training run ([`Run`]): data, the compiled training and evaluation graphs, the step
//! loop with validation, the best-validation model file, resumable checkpoints, curves, and
//! the final test against the nearest-class-mean baseline.
//!
//! Every random draw of step `s` (its tasks, noise and dropout masks) comes from a generator
//! seeded by `(seed, s)`, so a run resumed from a checkpoint repeats exactly what the
//! uninterrupted run would have done. The draws of a step depend on nothing else (no generator
//! is shared between steps or with validation), so a second thread draws step `s + 1`'s feed
//! while step `s` runs ([`Run::step`]): the same feeds, in the same order, off the critical
//! path.

use std::path::PathBuf;
use std::time::Instant;

use autodiff::{Backend, TrainStep};
use formats::{FileKind, ModelConfig, Provenance, TrainingState, Validation};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::awgim::{self, input, BatchShape};
use crate::curves::{CurveRow, Curves};
use crate::data::{
    DataSource, Dataset, EpisodeBatch, EpisodeSampler, EpisodeSpec, Split, SplitKind,
};
use crate::error::TrainerError;
use crate::evaluate::{task_accuracies, Accuracy, CompiledEval, Evaluation};
use crate::model_file::{provenance, ModelParams};
use crate::options::{Settings, EVAL_QUERIES};

/// Steps between rows of the training curves.
const LOG_EVERY: u64 = 10;
/// Seed salts of the fixed validation and test task sets.
const VALIDATION_SALT: u64 = 0x5641_4c49_4441_5445;
const TEST_SALT: u64 = 0x5445_5354_5345_5453;

/// What a finished run reports.
#[derive(Clone, Debug)]
pub struct RunReport {
    /// The model configuration trained.
    pub config: ModelConfig,
    /// The data set's name.
    pub dataset: String,
    /// Steps taken (all of them, including a resumed run's earlier ones).
    pub steps: u64,
    /// Steps skipped because the loss or a gradient was not finite.
    pub skipped: u64,
    /// Best validation accuracy and the step it was reached at.
    pub best_validation: Accuracy,
    /// Step of the best validation.
    pub best_step: u64,
    /// The final model (best validation, or the last step with `--train-on-val`) and the
    /// nearest-class-mean baselines on the same test tasks.
    pub test: Evaluation,
    /// Mean training throughput of this process, in tasks per second.
    pub tasks_per_second: f32,
    /// The model file written.
    pub model_path: PathBuf,
}

/// Loads the run's data set (the synthetic one without `--data`).
pub fn load_dataset(settings: &Settings) -> Result<Dataset, TrainerError> {
    let source = match &settings.data {
        Some(path) => DataSource::Path(path.clone()),
        None => DataSource::Synthetic(settings.synthetic.spec(settings.synthetic_dim)),
    };
    Ok(source.load()?)
}

/// The generator of step `step` of a run seeded `seed`.
fn step_rng(seed: u64, step: u64) -> Xoshiro256PlusPlus {
    Xoshiro256PlusPlus::seed_from_u64(splitmix64(splitmix64(seed) ^ step))
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Everything a training step is fed besides the parameters: its tasks, their one-hot
/// labels, and the noise and dropout masks, all drawn from the step's own generator.
#[derive(Debug, Default)]
struct Feed {
    /// The step it was drawn for.
    step: u64,
    /// The step's tasks.
    batch: EpisodeBatch,
    /// One-hot labels of the support rows, (B, N * K, N).
    support_targets: Vec<f32>,
    /// One-hot labels of the query rows, (B, N * Q, N).
    query_targets: Vec<f32>,
    /// The noise and the dropout masks (input name and values), in the graph's input order;
    /// moved into the step by [`Feed::set_inputs`].
    random: Vec<(String, Vec<f32>)>,
}

/// What the feeds are drawn from. A step's feed is a function of these and the step alone,
/// so it can be drawn on any thread, ahead of time, with the same result.
#[derive(Clone, Copy)]
struct FeedSource<'a> {
    settings: &'a Settings,
    /// The classes trained on (the train split, or train and val together).
    pool: &'a Split,
    spec: EpisodeSpec,
    /// The training graph's inputs (names and shapes), for the noise and dropout masks.
    inputs: &'a [(String, Vec<usize>)],
}

impl FeedSource<'_> {
    /// Draws step `step`'s feed into `feed`, reusing its buffers: the tasks, then the noise
    /// and the masks, from the step's generator in that order (as the run always has).
    fn draw(&self, step: u64, feed: &mut Feed) -> Result<(), TrainerError> {
        let settings = self.settings;
        let n = self.spec.n_way;
        let mut rng = step_rng(settings.seed, step);
        EpisodeSampler::new(self.pool, self.spec, rng.next_u64())?
            .sample_into(settings.batch, &mut feed.batch);
        if settings.inject_nan_at.contains(&step) {
            feed.batch.support.iter_mut().for_each(|x| *x = f32::NAN);
        }
        feed.support_targets = EpisodeBatch::one_hot(&feed.batch.support_labels, n);
        feed.query_targets = EpisodeBatch::one_hot(&feed.batch.query_labels, n);
        let keep = 1.0 - settings.dropout;
        feed.random.clear();
        awgim::draw_random_inputs(self.inputs, keep, &mut rng, |name, values| {
            feed.random.push((name.to_string(), values));
            Ok(())
        })?;
        feed.step = step;
        Ok(())
    }
}

impl Feed {
    /// Sets every input of the step `train` that the feed holds. The labels, the noise and
    /// the masks are moved into the step, not copied (the tasks' rows are copied: the sampler
    /// reuses their buffers, and the step's accuracy reads the labels from `batch`).
    fn set_inputs(&mut self, train: &mut TrainStep) -> Result<(), TrainerError> {
        train.set_input(input::SUPPORT, &self.batch.support)?;
        train.set_input(input::QUERY, &self.batch.query)?;
        train.set_input_vec(
            input::SUPPORT_TARGETS,
            std::mem::take(&mut self.support_targets),
        )?;
        train.set_input_vec(
            input::QUERY_TARGETS,
            std::mem::take(&mut self.query_targets),
        )?;
        for (name, values) in self.random.drain(..) {
            train.set_input_vec(&name, values)?;
        }
        Ok(())
    }
}

/// Where a run starts.
struct Start {
    params: Vec<(String, Vec<f32>)>,
    optimizer: Option<autodiff::OptimizerState>,
    step: u64,
    record: Record,
}

/// What a run has recorded so far; a checkpoint keeps it.
#[derive(Clone, Copy, Debug)]
struct Record {
    /// Best validation accuracy and its interval (the interval is not kept by checkpoints).
    best: Option<(f32, f32)>,
    /// Step of the best validation.
    best_step: u64,
    /// Steps skipped because the loss or a gradient was not finite.
    skipped: u64,
}

/// Training loss and query accuracy summed over the steps since the last curve row.
#[derive(Debug)]
struct Window {
    loss_sum: f64,
    accuracy_sum: f64,
    /// Steps summed (skipped steps are not).
    steps: u64,
    started: Instant,
}

impl Window {
    fn new() -> Self {
        Window {
            loss_sum: 0.0,
            accuracy_sum: 0.0,
            steps: 0,
            started: Instant::now(),
        }
    }

    /// The mean of `sum` over the window's steps (NaN without any).
    fn mean(&self, sum: f64) -> f32 {
        if self.steps > 0 {
            (sum / self.steps as f64) as f32
        } else {
            f32::NAN
        }
    }
}

/// Trains (or, with `resume`, continues) the run described by `settings`, printing progress
/// unless `quiet`.
pub fn train(
    settings: &Settings,
    resume: Option<ModelParams>,
    backend: Backend,
    quiet: bool,
) -> Result<RunReport, TrainerError> {
    let mut run = Run::new(settings, resume, backend, quiet)?;
    for step in run.next_step()..settings.steps {
        run.step(step)?;
        let done = step + 1;
        let last = done == settings.steps;
        let validate = done % settings.val_every == 0 || last;
        if done % LOG_EVERY == 0 || validate {
            run.log(done);
        }
        if validate {
            run.validate(done)?;
        }
        if done % settings.checkpoint_every == 0 || last {
            run.checkpoint(done)?;
        }
    }
    run.finish()
}

/// A training run in progress: its data, its compiled training and evaluation graphs, and
/// what it has recorded so far. [`Run::new`] starts or resumes it; [`train`] calls the
/// phases in the order and at the steps the settings ask for.
pub struct Run<'s> {
    settings: &'s Settings,
    dataset: Dataset,
    /// Train and val together (`--train-on-val`), else `None` (the train split).
    train_and_val: Option<Split>,
    /// The mean feature vector of the classes trained on (the centred baseline's centre).
    center: Vec<f32>,
    /// The model's feature centre (`feat.center`, with centred features): a graph input,
    /// not a trained parameter, so it joins the trained ones in every file written.
    model_center: Option<Vec<f32>>,
    /// The parameters of the model file: the best validation so far (the last step saved
    /// with `--train-on-val`).
    best_params: Option<Vec<(String, Vec<f32>)>>,
    config: ModelConfig,
    /// The compiled training step (its parameters and Adam moments live in it).
    train: TrainStep,
    /// The training graph's inputs (names and shapes), for the noise and dropout masks.
    inputs: Vec<(String, Vec<usize>)>,
    /// The compiled evaluation graph for validation and the final test.
    eval: CompiledEval,
    /// Training tasks: `N`-way `K`-shot with `Q` queries per class.
    spec: EpisodeSpec,
    /// The next step's feed (or why it could not be drawn), drawn while the last step ran,
    /// with the step it is for.
    prefetched: Option<(u64, Result<Feed, TrainerError>)>,
    /// The buffers of an earlier step's feed, to draw a later one into.
    spare: Option<Feed>,
    curves: Curves,
    record: Record,
    window: Window,
    /// The first step this process takes (0, or the checkpoint's step).
    first_step: u64,
    started: Instant,
    bar: ProgressBar,
    quiet: bool,
}

impl<'s> Run<'s> {
    /// Loads the data set, checks it against the settings, initialises the parameters (or
    /// takes them, the optimizer state and the record from the checkpoint `resume`) and
    /// compiles the training and evaluation graphs.
    pub fn new(
        settings: &'s Settings,
        resume: Option<ModelParams>,
        backend: Backend,
        quiet: bool,
    ) -> Result<Self, TrainerError> {
        let dataset = load_dataset(settings)?;
        let config = settings.model_config(dataset.dim() as u32);
        let train_config = settings.train_config(dataset.dim() as u32);
        config
            .validate()
            .map_err(|e| TrainerError::Settings(e.to_string()))?;
        let sizes = config.sizes();
        let spec = EpisodeSpec {
            n_way: settings.train_ways as usize,
            k_shot: sizes.K,
            n_query: settings.queries as usize,
            shuffle_queries: true,
        };
        // Every split must hold tasks of the training and of the evaluation shape.
        dataset.check_episodes(
            sizes.N,
            spec.k_shot,
            spec.n_query.max(EVAL_QUERIES as usize),
        )?;
        let train_and_val = match settings.train_on_val {
            true => Some(dataset.train_and_val()?),
            false => None,
        };
        let pool = train_and_val
            .as_ref()
            .unwrap_or(dataset.split(SplitKind::Train));
        pool.check_episodes(spec.n_way, spec.k_shot + spec.n_query)?;
        // The centre of `--features centered-l2` and of the centred baseline: the mean of the
        // classes trained on.
        let center = pool.mean();

        let start = match resume {
            None => Start {
                params: with_center(
                    awgim::init_params(&config, &mut step_rng(settings.seed, u64::MAX)),
                    &center,
                ),
                optimizer: None,
                step: 0,
                record: Record {
                    best: None,
                    best_step: 0,
                    skipped: 0,
                },
            },
            Some(ckpt) => resume_from(ckpt, settings, &config, &dataset)?,
        };

        let shape = BatchShape {
            tasks: settings.batch,
            queries_per_class: spec.n_query,
        };
        let built = awgim::build_train(
            &train_config,
            shape,
            settings.train_options(),
            &start.params,
        )?;
        let inputs = built.graph.inputs();
        let mut train = TrainStep::new(
            built.graph,
            built.losses.total,
            &[built.logits],
            settings.adamw(),
            backend,
        )?;
        if let Some(opt) = &start.optimizer {
            train.load_optimizer_state(opt)?;
        }
        // The model's centre (a resumed run's is its checkpoint's).
        let model_center = start.params.iter().find(|(n, _)| n == input::CENTER);
        if let Some((name, values)) = model_center {
            train.set_input(name, values)?;
        }
        let model_center = model_center.map(|(_, values)| values.clone());
        let eval = CompiledEval::new(
            &config,
            settings.eval_batch,
            EVAL_QUERIES as usize,
            &start.params,
            backend,
        )?;
        let curves = Curves::resume(&settings.curves_path("csv"), start.step)?;
        Ok(Run {
            settings,
            dataset,
            train_and_val,
            center,
            model_center,
            best_params: None,
            config,
            train,
            inputs,
            eval,
            spec,
            prefetched: None,
            spare: None,
            curves,
            record: start.record,
            window: Window::new(),
            first_step: start.step,
            started: Instant::now(),
            bar: progress_bar(settings.steps, start.step, quiet),
            quiet,
        })
    }

    /// The step the run continues with.
    pub fn next_step(&self) -> u64 {
        self.first_step
    }

    /// Prints `line` above the progress bar, unless quiet.
    fn say(&self, line: impl FnOnce() -> String) {
        self.bar.suspend(|| {
            if !self.quiet {
                println!("{}", line())
            }
        });
    }

    /// Training step `step`: feeds its tasks, their labels, its noise and dropout masks (all
    /// drawn from the step's own generator), updates the parameters, and adds the loss and
    /// query accuracy to the log window; a step with a non-finite loss or gradient is counted
    /// as skipped instead.
    ///
    /// While the step runs, a second thread draws the feed of step `step + 1` (unless `step`
    /// is the run's last); the next call uses it if it is for that step, and otherwise draws
    /// its own. An error drawing it is returned by the step it is for, as if drawn there.
    pub fn step(&mut self, step: u64) -> Result<(), TrainerError> {
        let settings = self.settings;
        let n = self.spec.n_way;
        let source = FeedSource {
            settings,
            pool: self
                .train_and_val
                .as_ref()
                .unwrap_or(self.dataset.split(SplitKind::Train)),
            spec: self.spec,
            inputs: &self.inputs,
        };
        let mut feed = match self.prefetched.take() {
            Some((drawn_for, drawn)) if drawn_for == step => drawn?,
            _ => {
                let mut feed = self.spare.take().unwrap_or_default();
                source.draw(step, &mut feed)?;
                feed
            }
        };
        let next = step + 1;
        let mut spare = self.spare.take().unwrap_or_default();
        let train = &mut self.train;
        let (ran, prefetched) = std::thread::scope(|scope| {
            let worker = (next < settings.steps)
                .then(|| scope.spawn(move || source.draw(next, &mut spare).map(|()| spare)));
            let ran = feed
                .set_inputs(train)
                .and_then(|()| Ok((train.step(step)?, train.output(0)?)));
            // A panic on the worker is a bug: it goes on as a panic here, as it would have
            // on this thread.
            let prefetched = worker.map(|worker| {
                worker
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            });
            (ran, prefetched)
        });
        self.prefetched = prefetched.map(|drawn| (next, drawn));
        let (outcome, logits) = ran?;
        if outcome.skipped {
            self.record.skipped += 1;
            let skipped = self.record.skipped;
            self.say(|| {
                format!(
                    "step {}: non-finite loss or gradient, update skipped ({skipped} so far)",
                    step + 1
                )
            });
        } else {
            let acc = task_accuracies(&logits, &feed.batch.query_labels, n, n * self.spec.n_query);
            self.window.loss_sum += outcome.loss as f64;
            self.window.accuracy_sum +=
                acc.iter().map(|&a| a as f64).sum::<f64>() / acc.len().max(1) as f64;
            self.window.steps += 1;
        }
        self.bar.set_position(step + 1);
        self.spare = Some(feed);
        Ok(())
    }

    /// Closes the log window after `done` steps: a row of the training curves (mean loss
    /// and accuracy, learning rate, throughput) and the progress bar's message.
    pub fn log(&mut self, done: u64) {
        let settings = self.settings;
        let seconds = self.window.started.elapsed().as_secs_f32().max(1e-9);
        let previous = self.curves.rows.last().map_or(self.first_step, |r| r.step);
        let steps_in_window = (done - previous).max(1);
        let row = CurveRow {
            step: done,
            loss: self.window.mean(self.window.loss_sum),
            train_accuracy: self.window.mean(self.window.accuracy_sum),
            // The rate of the step just taken (step `done - 1`).
            lr: settings.adamw().learning_rate(done - 1),
            tasks_per_second: (steps_in_window * settings.batch as u64) as f32 / seconds,
            skipped: self.record.skipped,
            validation: None,
        };
        self.bar.set_message(format!(
            "loss {:.3} acc {:.1}% {:.0} tasks/s",
            row.loss,
            100.0 * row.train_accuracy,
            row.tasks_per_second
        ));
        self.curves.rows.push(row);
        self.window = Window::new();
    }

    /// Validates the parameters after `done` steps on the fixed validation tasks, records
    /// the accuracy on the last curve row, and writes the model file if it is the best so
    /// far.
    ///
    /// With `--train-on-val` the val classes are training data: nothing is validated and the
    /// model file is the current parameters (the last step's at the end of the run).
    pub fn validate(&mut self, done: u64) -> Result<(), TrainerError> {
        let settings = self.settings;
        let params = self.params()?;
        if settings.train_on_val {
            self.model_file(done, None, &params)?;
            self.best_params = Some(params);
            self.record.best_step = done;
            self.say(|| {
                format!(
                    "step {done}/{}: saved (--train-on-val: no validation)",
                    settings.steps
                )
            });
            return Ok(());
        }
        self.eval.load_params(&params)?;
        let acc = self
            .eval
            .evaluate(
                self.dataset.split(SplitKind::Val),
                settings.val_tasks,
                settings.seed ^ VALIDATION_SALT,
                &self.center,
            )?
            .accuracy();
        if let Some(row) = self.curves.rows.last_mut() {
            row.validation = Some((acc.mean, acc.ci95));
        }
        let improved = self.record.best.is_none_or(|(b, _)| acc.mean > b);
        if improved {
            self.record.best = Some((acc.mean, acc.ci95));
            self.record.best_step = done;
            let validation = Validation {
                accuracy: acc.mean,
                ci95: acc.ci95,
            };
            self.model_file(done, Some(validation), &params)?;
            self.best_params = Some(params);
        }
        self.say(|| {
            format!(
                "step {done}/{}: validation {acc} ({} tasks){}",
                settings.steps,
                settings.val_tasks,
                if improved { ", best so far: saved" } else { "" }
            )
        });
        Ok(())
    }

    /// Writes the model file: the parameters `params` after `done` steps.
    fn model_file(
        &self,
        done: u64,
        validation: Option<Validation>,
        params: &[(String, Vec<f32>)],
    ) -> Result<(), TrainerError> {
        let model = ModelParams {
            kind: FileKind::Training,
            config: self.config,
            provenance: self.provenance(done, validation),
            params: params.to_vec(),
            optimizer: None,
            training: None,
        };
        model.write(&self.settings.out)
    }

    /// Writes the resumable checkpoint after `done` steps (parameters, Adam moments, the
    /// record and the settings) and the curves so far.
    pub fn checkpoint(&mut self, done: u64) -> Result<(), TrainerError> {
        let settings = self.settings;
        let (best_acc, _) = self.record.best.unwrap_or((f32::NAN, 0.0));
        let state = TrainingState {
            step: done,
            best_val_accuracy: best_acc,
            best_step: self.record.best_step,
            skipped_steps: self.record.skipped,
            rng_state: [settings.seed, done, 0, 0],
            trainer_options: encode_settings(settings)?,
        };
        let checkpoint = ModelParams {
            kind: FileKind::Training,
            config: self.config,
            provenance: self.provenance(done, None),
            params: self.params()?,
            optimizer: Some(self.train.optimizer_state()?),
            training: Some(state),
        };
        checkpoint.write(&settings.checkpoint_path())?;
        self.curves.write_csv(&settings.curves_path("csv"))?;
        self.curves.write_svg(
            &settings.curves_path("svg"),
            &format!(
                "AWGIM {}-way {}-shot, {}",
                self.spec.n_way,
                self.spec.k_shot,
                self.dataset.name()
            ),
        )
    }

    /// Every parameter of the model file: the trained ones and the feature centre.
    fn params(&self) -> Result<Vec<(String, Vec<f32>)>, TrainerError> {
        let mut params = self.train.params()?;
        if let Some(center) = &self.model_center {
            params.push((input::CENTER.to_string(), center.clone()));
        }
        Ok(params)
    }

    /// Provenance of the weights after `done` steps.
    fn provenance(&self, done: u64, validation: Option<Validation>) -> Provenance {
        let s = self.settings;
        provenance(self.dataset.name(), s.shots, done, s.seed, validation)
    }

    /// Ends the run: tests the best-validation model on the test split, next to the
    /// nearest-class-mean baseline on the same tasks, and reports.
    pub fn finish(mut self) -> Result<RunReport, TrainerError> {
        let settings = self.settings;
        self.bar.finish_and_clear();
        let steps_here = settings.steps.saturating_sub(self.first_step);
        let seconds = self.started.elapsed().as_secs_f32().max(1e-9);
        let tasks_per_second = (steps_here * settings.batch as u64) as f32 / seconds;

        let best = match self.best_params.take() {
            Some(params) => params,
            // A resumed run whose best model was saved by the earlier process.
            None => ModelParams::read(&settings.out)?.params,
        };
        self.eval.load_params(&best)?;
        let test = self.eval.evaluate(
            self.dataset.split(SplitKind::Test),
            settings.test_tasks,
            settings.seed ^ TEST_SALT,
            &self.center,
        )?;
        let (best_acc, best_ci) = self.record.best.unwrap_or((f32::NAN, f32::NAN));
        Ok(RunReport {
            config: self.config,
            dataset: self.dataset.name().to_string(),
            steps: settings.steps,
            skipped: self.record.skipped,
            best_validation: Accuracy {
                mean: best_acc,
                ci95: best_ci,
                tasks: settings.val_tasks,
            },
            best_step: self.record.best_step,
            test,
            tasks_per_second,
            model_path: settings.out.clone(),
        })
    }
}

/// `params` with the feature centre (if the model has one) set to `center`.
fn with_center(mut params: Vec<(String, Vec<f32>)>, center: &[f32]) -> Vec<(String, Vec<f32>)> {
    for (name, values) in params.iter_mut() {
        if name == input::CENTER {
            *values = center.to_vec();
        }
    }
    params
}

/// The settings as the checkpoint's opaque trainer options.
fn encode_settings(
    settings: &Settings,
) -> Result<heapless::Vec<u8, { formats::MAX_TRAINER_OPTIONS }>, TrainerError> {
    let bytes = postcard::to_allocvec(settings)
        .map_err(|e| TrainerError::Settings(format!("cannot encode the run's settings: {e}")))?;
    heapless::Vec::from_slice(&bytes).map_err(|_| {
        TrainerError::Settings(format!(
            "the run's settings take {} bytes, more than a checkpoint holds ({}); use shorter paths",
            bytes.len(),
            formats::MAX_TRAINER_OPTIONS
        ))
    })
}

/// The settings stored in a checkpoint (for `--resume`).
pub fn settings_of(
    checkpoint: &ModelParams,
    path: &std::path::Path,
) -> Result<Settings, TrainerError> {
    let mismatch = |reason: &str| TrainerError::Mismatch {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    let state = checkpoint
        .training
        .as_ref()
        .ok_or_else(|| mismatch("not a resumable checkpoint (no training state; the model file of a run is not its checkpoint)"))?;
    let settings: Settings = postcard::from_bytes(&state.trainer_options)
        .map_err(|e| mismatch(&format!("its trainer options cannot be read ({e})")))?;
    settings.check()?;
    Ok(settings)
}

fn resume_from(
    ckpt: ModelParams,
    settings: &Settings,
    config: &ModelConfig,
    dataset: &Dataset,
) -> Result<Start, TrainerError> {
    let path = settings.checkpoint_path();
    let mismatch = |reason: String| TrainerError::Mismatch {
        path: path.clone(),
        reason,
    };
    if ckpt.config != *config {
        return Err(mismatch(format!(
            "its model configuration {:?} differs from this run's {:?}",
            ckpt.config, config
        )));
    }
    if ckpt.provenance.dataset.as_str() != crate::model_file::text(dataset.name()).as_str() {
        return Err(mismatch(format!(
            "it was trained on {:?}, not on {:?}",
            ckpt.provenance.dataset.as_str(),
            dataset.name()
        )));
    }
    let state = ckpt
        .training
        .ok_or_else(|| mismatch("no training state".into()))?;
    let optimizer = ckpt
        .optimizer
        .ok_or_else(|| mismatch("no optimizer state".into()))?;
    if state.step > settings.steps {
        return Err(mismatch(format!(
            "it is at step {}, past the run's {} steps",
            state.step, settings.steps
        )));
    }
    Ok(Start {
        params: ckpt.params,
        optimizer: Some(optimizer),
        step: state.step,
        record: Record {
            best: state
                .best_val_accuracy
                .is_finite()
                .then_some((state.best_val_accuracy, f32::NAN)),
            best_step: state.best_step,
            skipped: state.skipped_steps,
        },
    })
}

fn progress_bar(total: u64, position: u64, quiet: bool) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(
        Some(total),
        if quiet {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        },
    );
    if let Ok(style) =
        ProgressStyle::with_template("{elapsed_precise} [{wide_bar}] {pos}/{len} {msg}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_position(position);
    bar
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        train: crate::options::TrainArgs,
    }

    /// The parameters after `settings.steps` steps of a fresh run; with `prefetch` false
    /// every prefetched feed is thrown away, so each step draws its own.
    fn trained(settings: &Settings, prefetch: bool) -> Vec<(String, Vec<f32>)> {
        let mut run = Run::new(settings, None, Backend::Cpu, true).unwrap();
        for step in 0..settings.steps {
            if !prefetch {
                run.prefetched = None;
            }
            run.step(step).unwrap();
            // The next step's feed, and none after the last step.
            let next = run
                .prefetched
                .as_ref()
                .map(|(s, drawn)| (*s, drawn.is_ok()));
            assert_eq!(
                next,
                (step + 1 < settings.steps).then_some((step + 1, true))
            );
        }
        run.params().unwrap()
    }

    /// The feeds drawn on the second thread while a step runs are exactly those the step
    /// would draw itself: the same parameters, bit for bit (and a step whose loss is made
    /// non-finite is skipped either way).
    #[test]
    fn prefetched_feeds_train_bit_identically_to_feeds_drawn_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("m.model");
        let args = Flags::parse_from([
            "trainer",
            "--steps",
            "5",
            "--batch",
            "2",
            "--shots",
            "1",
            "--seed",
            "11",
            "--inject-nan-at",
            "2",
            "--out",
            out.to_str().unwrap(),
        ]);
        let settings = args.train.resolve().unwrap();
        let prefetched = trained(&settings, true);
        let in_place = trained(&settings, false);
        assert_eq!(prefetched.len(), in_place.len());
        for ((name, a), (other, b)) in prefetched.iter().zip(&in_place) {
            assert_eq!(name, other);
            assert_eq!(a.len(), b.len(), "{name}");
            let differ = a.iter().zip(b).filter(|(x, y)| x.to_bits() != y.to_bits());
            assert_eq!(differ.count(), 0, "{name}: values differ");
        }
        // Five steps changed the parameters (a feed of the wrong step would show).
        let mut rng = step_rng(settings.seed, u64::MAX);
        let config = settings.model_config(64);
        let initial = awgim::init_params(&config, &mut rng);
        let (name, first) = &initial[0];
        let trained = &prefetched.iter().find(|(n, _)| n == name).unwrap().1;
        assert_ne!(first, trained);
    }
}
