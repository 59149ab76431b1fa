//! A training run: data, the compiled training and evaluation graphs, the step loop with
//! validation, the best-validation model file, resumable checkpoints, curves, and the final
//! test against the nearest-class-mean baseline.
//!
//! Every random draw of step `s` (its tasks, noise and dropout masks) comes from a generator
//! seeded by `(seed, s)`, so a run resumed from a checkpoint repeats exactly what the
//! uninterrupted run would have done.

use std::path::PathBuf;
use std::time::Instant;

use autodiff::{Backend, TrainStep};
use formats::{FileKind, ModelConfig, TrainingState, Validation};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::awgim::{self, input, BatchShape, TrainOptions};
use crate::curves::{CurveRow, Curves};
use crate::data::{
    DataSource, Dataset, EpisodeBatch, EpisodeSampler, EpisodeSpec, SplitKind, SyntheticSpec,
};
use crate::error::TrainerError;
use crate::evaluate::{task_accuracies, Accuracy, CompiledEval};
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
    /// Test accuracy of the best-validation model.
    pub test: Accuracy,
    /// Nearest-class-mean baseline on the same test tasks.
    pub test_ncm: Accuracy,
    /// Mean training throughput of this process, in tasks per second.
    pub tasks_per_second: f32,
    /// The model file written.
    pub model_path: PathBuf,
}

/// Loads the run's data set (the synthetic one without `--data`).
pub fn load_dataset(settings: &Settings) -> Result<Dataset, TrainerError> {
    let source = match &settings.data {
        Some(path) => DataSource::Path(path.clone()),
        None => DataSource::Synthetic(SyntheticSpec {
            dim: settings.synthetic_dim,
            ..SyntheticSpec::default()
        }),
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

/// Where a run starts.
struct Start {
    params: Vec<(String, Vec<f32>)>,
    optimizer: Option<autodiff::OptimizerState>,
    step: u64,
    best: Option<(f32, f32)>,
    best_step: u64,
    skipped: u64,
}

/// Trains (or, with `resume`, continues) the run described by `settings`, printing progress
/// unless `quiet`.
pub fn train(
    settings: &Settings,
    resume: Option<ModelParams>,
    backend: Backend,
    quiet: bool,
) -> Result<RunReport, TrainerError> {
    let dataset = load_dataset(settings)?;
    let config = settings.model_config(dataset.dim() as u32);
    config
        .validate()
        .map_err(|e| TrainerError::Settings(e.to_string()))?;
    let (n, k, q) = (
        settings.ways as usize,
        settings.shots as usize,
        settings.queries as usize,
    );
    // Every split must hold tasks of the training and of the evaluation shape.
    dataset.check_episodes(n, k, q.max(EVAL_QUERIES as usize))?;

    let start = match resume {
        None => Start {
            params: awgim::init_params(&config, &mut step_rng(settings.seed, u64::MAX)),
            optimizer: None,
            step: 0,
            best: None,
            best_step: 0,
            skipped: 0,
        },
        Some(ckpt) => resume_from(ckpt, settings, &config, &dataset)?,
    };

    let shape = BatchShape {
        tasks: settings.batch,
        queries_per_class: q,
    };
    let options = TrainOptions {
        dropout: settings.dropout,
        loss_weights: settings.loss_weights,
        rows: settings.generator_rows,
    };
    let built = awgim::build_train(&config, shape, options, &start.params)?;
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
    let mut eval = CompiledEval::new(
        &config,
        settings.eval_batch,
        EVAL_QUERIES as usize,
        &start.params,
        backend,
    )?;

    let train_split = dataset.split(SplitKind::Train);
    let spec = EpisodeSpec {
        n_way: n,
        k_shot: k,
        n_query: q,
        shuffle_queries: true,
    };
    let keep = 1.0 - settings.dropout;
    let mut curves = Curves::resume(&settings.curves_path("csv"), start.step)?;
    let mut batch = EpisodeBatch::default();
    let (mut best, mut best_step, mut skipped) = (start.best, start.best_step, start.skipped);
    let (mut loss_sum, mut acc_sum, mut logged) = (0.0f64, 0.0f64, 0u64);
    let mut window = Instant::now();
    let run_start = Instant::now();
    let dataset_name = dataset.name().to_string();

    let bar = progress_bar(settings.steps, start.step, quiet);
    for s in start.step..settings.steps {
        let mut rng = step_rng(settings.seed, s);
        EpisodeSampler::new(train_split, spec, rng.next_u64())?
            .sample_into(settings.batch, &mut batch);
        if settings.inject_nan_at.contains(&s) {
            batch.support.iter_mut().for_each(|x| *x = f32::NAN);
        }
        train.set_input(input::SUPPORT, &batch.support)?;
        train.set_input(input::QUERY, &batch.query)?;
        train.set_input(
            input::SUPPORT_TARGETS,
            &EpisodeBatch::one_hot(&batch.support_labels, n),
        )?;
        train.set_input(
            input::QUERY_TARGETS,
            &EpisodeBatch::one_hot(&batch.query_labels, n),
        )?;
        awgim::draw_random_inputs(&inputs, keep, &mut rng, |name, v| train.set_input(name, v))?;

        let outcome = train.step(s)?;
        let logits = train.output(0)?;
        if outcome.skipped {
            skipped += 1;
            bar.suspend(|| {
                if !quiet {
                    println!(
                        "step {}: non-finite loss or gradient, update skipped ({skipped} so far)",
                        s + 1
                    )
                }
            });
        } else {
            let acc = task_accuracies(&logits, &batch.query_labels, n, n * q);
            loss_sum += outcome.loss as f64;
            acc_sum += acc.iter().map(|&a| a as f64).sum::<f64>() / acc.len().max(1) as f64;
            logged += 1;
        }
        let done = s + 1;
        bar.set_position(done);

        let validate = done % settings.val_every == 0 || done == settings.steps;
        if done % LOG_EVERY == 0 || validate {
            let seconds = window.elapsed().as_secs_f32().max(1e-9);
            let steps_in_window = (done - curves.rows.last().map_or(start.step, |r| r.step)).max(1);
            let row = CurveRow {
                step: done,
                loss: if logged > 0 {
                    (loss_sum / logged as f64) as f32
                } else {
                    f32::NAN
                },
                train_accuracy: if logged > 0 {
                    (acc_sum / logged as f64) as f32
                } else {
                    f32::NAN
                },
                lr: settings.adamw().learning_rate(s),
                tasks_per_second: (steps_in_window * settings.batch as u64) as f32 / seconds,
                skipped,
                validation: None,
            };
            bar.set_message(format!(
                "loss {:.3} acc {:.1}% {:.0} tasks/s",
                row.loss,
                100.0 * row.train_accuracy,
                row.tasks_per_second
            ));
            curves.rows.push(row);
            (loss_sum, acc_sum, logged) = (0.0, 0.0, 0);
            window = Instant::now();
        }

        if validate {
            let params = train.params()?;
            eval.load_params(&params)?;
            let val_split = dataset.split(SplitKind::Val);
            let (acc, _) = eval.evaluate(
                val_split,
                settings.val_tasks,
                settings.seed ^ VALIDATION_SALT,
            )?;
            if let Some(row) = curves.rows.last_mut() {
                row.validation = Some((acc.mean, acc.ci95));
            }
            let improved = best.is_none_or(|(b, _)| acc.mean > b);
            if improved {
                best = Some((acc.mean, acc.ci95));
                best_step = done;
                let model = ModelParams {
                    kind: FileKind::Training,
                    config,
                    provenance: provenance(
                        &dataset_name,
                        settings.shots,
                        done,
                        settings.seed,
                        Some(Validation {
                            accuracy: acc.mean,
                            ci95: acc.ci95,
                        }),
                    ),
                    params,
                    optimizer: None,
                    training: None,
                };
                model.write(&settings.out)?;
            }
            bar.suspend(|| {
                if !quiet {
                    println!(
                        "step {done}/{}: validation {acc} ({} tasks){}",
                        settings.steps,
                        settings.val_tasks,
                        if improved { ", best so far: saved" } else { "" }
                    )
                }
            });
        }

        if done % settings.checkpoint_every == 0 || done == settings.steps {
            let (best_acc, _) = best.unwrap_or((f32::NAN, 0.0));
            let state = TrainingState {
                step: done,
                best_val_accuracy: best_acc,
                best_step,
                skipped_steps: skipped,
                rng_state: [settings.seed, done, 0, 0],
                trainer_options: encode_settings(settings)?,
            };
            let checkpoint = ModelParams {
                kind: FileKind::Training,
                config,
                provenance: provenance(&dataset_name, settings.shots, done, settings.seed, None),
                params: train.params()?,
                optimizer: Some(train.optimizer_state()?),
                training: Some(state),
            };
            checkpoint.write(&settings.checkpoint_path())?;
            curves.write_csv(&settings.curves_path("csv"))?;
            curves.write_svg(
                &settings.curves_path("svg"),
                &format!("AWGIM {n}-way {k}-shot, {dataset_name}"),
            )?;
        }
    }
    bar.finish_and_clear();
    let steps_here = settings.steps.saturating_sub(start.step);
    let tasks_per_second =
        (steps_here * settings.batch as u64) as f32 / run_start.elapsed().as_secs_f32().max(1e-9);

    // The best-validation model on the test split, next to the nearest-class-mean baseline.
    let best_model = ModelParams::read(&settings.out)?;
    eval.load_params(&best_model.params)?;
    let (test, test_ncm) = eval.evaluate(
        dataset.split(SplitKind::Test),
        settings.test_tasks,
        settings.seed ^ TEST_SALT,
    )?;
    let (best_acc, best_ci) = best.unwrap_or((f32::NAN, f32::NAN));
    Ok(RunReport {
        config,
        dataset: dataset_name,
        steps: settings.steps,
        skipped,
        best_validation: Accuracy {
            mean: best_acc,
            ci95: best_ci,
            tasks: settings.val_tasks,
        },
        best_step,
        test,
        test_ncm,
        tasks_per_second,
        model_path: settings.out.clone(),
    })
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
        best: state
            .best_val_accuracy
            .is_finite()
            .then_some((state.best_val_accuracy, f32::NAN)),
        best_step: state.best_step,
        skipped: state.skipped_steps,
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
