//! `trainer`: meta-trains AWGIM on luminal graphs and hands the result to the engine.
//!
//! ```text
//! trainer --shots 5                     train on the built-in data (see --help)
//! trainer --resume awgim.model.ckpt     continue a run from its checkpoint
//! trainer eval --model awgim.model      test accuracy on 600 tasks
//! trainer export --model awgim.model --out awgim.inference
//! trainer export --int8 --model awgim.model --out awgim.int8   (and its accuracy next to f32)
//! trainer safetensors --model awgim.model --out awgim.safetensors
//! trainer synthetic --synthetic many-classes --out DIR   (the built-in data as .npy files)
//! trainer infer --model awgim.inference --support s.npy --queries q.npy --out logits.npy
//! ```

#![deny(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use autodiff::Backend;
use clap::{Args, Parser, Subcommand};
use trainer::data::{DataSource, SplitKind};
use trainer::error::TrainerError;
use trainer::evaluate::CompiledEval;
use trainer::model_file::ModelParams;
use trainer::options::{SyntheticPreset, TrainArgs, EVAL_QUERIES};
use trainer::run;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (`mi_option_e` in its `mimalloc.h`, 15 in v2 and v3;
/// libmimalloc-sys does not name it): how many milliseconds freed memory is kept before it
/// is returned to the OS (1000 by default in the v3 that libmimalloc-sys 0.1.49 builds); -1
/// never returns it.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Makes mimalloc keep the memory the process frees instead of returning it to the OS, unless
/// the environment sets `MIMALLOC_PURGE_DELAY` (which then wins). A training step frees and
/// allocates the same buffers of tens of MB every step (luminal gives every op output a fresh
/// one); returned to the OS, each comes back as page faults and pages zeroed by the kernel,
/// 0.2-1.3 s of system time a step at the paper's sizes (docs/training-profile.md). Kept, the
/// process's resident memory stays at the largest step's working set. Allocator bookkeeping
/// only: no computed value can change.
fn keep_freed_memory() {
    // SAFETY: `mi_option_set_default` only stores a number in mimalloc's option table (an
    // index it checks against its option count; no pointer is passed). It is not thread-safe,
    // so it is called first thing in `main`, before this process starts a thread.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_option_set_default(MI_OPTION_PURGE_DELAY, -1)
    };
}

#[derive(Parser)]
#[command(
    name = "trainer",
    version,
    about = "Meta-train AWGIM few-shot classifiers on luminal graphs"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    train: TrainArgs,
    /// Continue the run saved in this checkpoint (`<model>.ckpt`); its settings are used.
    #[arg(long)]
    resume: Option<PathBuf>,
    #[command(flatten)]
    backend: BackendArgs,
}

#[derive(Args, Clone, Copy, Debug, Default)]
struct BackendArgs {
    /// Run the graphs on the NVIDIA GPU (luminal_cuda).
    #[cfg(feature = "cuda")]
    #[arg(long)]
    gpu: bool,
}

impl BackendArgs {
    fn backend(self) -> Backend {
        #[cfg(feature = "cuda")]
        if self.gpu {
            return Backend::Cuda;
        }
        Backend::Cpu
    }
}

/// The tasks of an accuracy measurement: data set, split, count and seed.
#[derive(Args, Clone, Debug)]
struct TaskArgs {
    /// Data set (as for training); without it the built-in synthetic data set.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Shape of the built-in synthetic data set (without `--data`).
    #[arg(long, value_enum, default_value_t = SyntheticPreset::Mini)]
    synthetic: SyntheticPreset,
    /// Split to draw tasks from.
    #[arg(long, value_parser = ["train", "val", "test"], default_value = "test")]
    split: String,
    /// Number of tasks.
    #[arg(long, default_value_t = 600)]
    tasks: usize,
    /// Seed of the tasks.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(Subcommand)]
enum Command {
    /// Accuracy of a saved model on random tasks of a split, next to nearest class mean.
    Eval {
        /// The model file.
        #[arg(long)]
        model: PathBuf,
        #[command(flatten)]
        tasks: TaskArgs,
        /// Tasks per evaluation batch.
        #[arg(long, default_value_t = 20)]
        eval_batch: usize,
        #[command(flatten)]
        backend: BackendArgs,
    },
    /// Write the inference-only file a device needs; with --int8 its big products as int8
    /// (per-row symmetric weights, rows stored in pairs: a version-4 file), and the int8
    /// model's test accuracy next to the f32 one's on the same tasks, both through the host
    /// engine (`--tasks 0`: no comparison; the task flags are those of `eval`).
    Export {
        /// The model file (training or inference, f32).
        #[arg(long)]
        model: PathBuf,
        /// The inference file to write (only once everything succeeded).
        #[arg(long)]
        out: PathBuf,
        /// Quantise the encoders, attention projections, feed-forward layers, G1 and G2mu to
        /// int8 (formats::tensors::quant_axis).
        #[arg(long)]
        int8: bool,
        #[command(flatten)]
        tasks: TaskArgs,
    },
    /// Write every parameter as safetensors (names and shapes as in formats/FORMAT.md).
    Safetensors {
        /// The model file.
        #[arg(long)]
        model: PathBuf,
        /// The .safetensors file to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Write the built-in synthetic data set as .npy files: DIR/{train,val,test}.npy, each
    /// classes x examples x D float32 (the npy layout `--data` reads), to convert it to
    /// another layout (scripts/make-fixtures.py leo-layout).
    Synthetic {
        /// Shape of the data set.
        #[arg(long, value_enum, default_value_t = SyntheticPreset::Mini)]
        synthetic: SyntheticPreset,
        /// Its feature dimension D (default: the preset's).
        #[arg(long)]
        synthetic_dim: Option<usize>,
        /// The directory to write (created if absent).
        #[arg(long)]
        out: PathBuf,
    },
    /// Run the engine (not the graph) on a task given as .npy arrays; write the logits.
    Infer {
        /// The model file.
        #[arg(long)]
        model: PathBuf,
        /// Support features, N x K x D (or N*K x D, class-major), float32 or float64.
        #[arg(long)]
        support: PathBuf,
        /// Query features, M x D.
        #[arg(long)]
        queries: PathBuf,
        /// Where to write the M x N float32 logits.
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    keep_freed_memory();
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cli: Cli) -> Result<(), TrainerError> {
    match cli.command {
        None => train(&cli.train, cli.resume, cli.backend.backend()),
        Some(Command::Eval {
            model,
            tasks: task_args,
            eval_batch,
            backend,
        }) => {
            let params = ModelParams::read(&model)?;
            let c = params.config;
            let sizes = c.sizes();
            let (dataset, kind) = load_data(&task_args, sizes)?;
            let TaskArgs {
                split, tasks, seed, ..
            } = task_args;
            let mut eval = CompiledEval::new(
                &c,
                eval_batch,
                EVAL_QUERIES as usize,
                &params.params,
                backend.backend(),
            )?;
            // The centred baseline's centre: the model's, else the training split's mean.
            let center = params
                .params
                .iter()
                .find(|(name, _)| name == formats::tensors::FEATURE_CENTER)
                .map_or_else(
                    || dataset.split(SplitKind::Train).mean(),
                    |(_, c)| c.clone(),
                );
            let evaluation = eval.evaluate(dataset.split(kind), tasks, seed, &center)?;
            println!(
                "{} on {} ({split}, {tasks} tasks, {}-way {}-shot, {EVAL_QUERIES} queries/class):\n{}",
                model.display(),
                dataset.name(),
                sizes.N,
                sizes.K,
                evaluation.report()
            );
            Ok(())
        }
        Some(Command::Export {
            model,
            out,
            int8: true,
            tasks,
        }) => export_int8(&model, &out, &tasks),
        Some(Command::Export { model, out, .. }) => {
            let inference = ModelParams::read(&model)?.inference();
            inference.write(&out)?;
            println!(
                "wrote {} (inference file, {} bytes)",
                out.display(),
                file_len(&out)
            );
            Ok(())
        }
        Some(Command::Safetensors { model, out }) => {
            let bytes = ModelParams::read(&model)?.to_safetensors()?;
            formats::write_atomic(&out, &bytes).map_err(|e| TrainerError::io(&out, e))?;
            println!("wrote {} ({} bytes)", out.display(), bytes.len());
            Ok(())
        }
        Some(Command::Synthetic {
            synthetic,
            synthetic_dim,
            out,
        }) => {
            let spec = synthetic.spec(synthetic_dim);
            let dataset = spec.generate()?;
            std::fs::create_dir_all(&out).map_err(|e| TrainerError::io(&out, e))?;
            for kind in SplitKind::ALL {
                let split = dataset.split(kind);
                let (classes, examples) = (split.num_classes(), split.min_class_len());
                if split.num_examples() != classes * examples {
                    return Err(TrainerError::Settings(format!(
                        "{}: classes of different sizes cannot be one array",
                        kind.name()
                    )));
                }
                let path = out.join(format!("{}.npy", kind.name()));
                let shape = [classes as u64, examples as u64, split.dim() as u64];
                trainer::infer::write_npy_shaped(&path, &shape, split.data())?;
            }
            println!("wrote {} ({}) as .npy", out.display(), spec.describe());
            Ok(())
        }
        Some(Command::Infer {
            model,
            support,
            queries,
            out,
        }) => {
            let (m, n, logits) = trainer::infer::infer(&model, &support, &queries)?;
            trainer::infer::write_npy(&out, m, n, &logits)?;
            println!("wrote {} ({m} x {n} logits)", out.display());
            Ok(())
        }
    }
}

/// The data set of `--data` (else the built-in one of `synthetic` with the model's `D`),
/// checked for the model's sizes, and the split `split` names.
fn load_data(
    args: &TaskArgs,
    sizes: formats::Sizes,
) -> Result<(trainer::data::Dataset, SplitKind), TrainerError> {
    let source = match &args.data {
        Some(path) => DataSource::Path(path.clone()),
        None => DataSource::Synthetic(args.synthetic.spec(Some(sizes.D))),
    };
    let dataset = source.load()?;
    dataset.require_dim(sizes.D)?;
    dataset.check_episodes(sizes.N, sizes.K, EVAL_QUERIES as usize)?;
    let kind = match args.split.as_str() {
        "train" => SplitKind::Train,
        "val" => SplitKind::Val,
        _ => SplitKind::Test,
    };
    Ok((dataset, kind))
}

/// `trainer export --int8`: quantise, compare with the f32 model on `tasks` tasks through
/// the host engine, then write `out` (atomically; nothing is written if anything failed).
fn export_int8(model: &Path, out: &Path, args: &TaskArgs) -> Result<(), TrainerError> {
    let TaskArgs {
        split, tasks, seed, ..
    } = args;
    let (tasks, seed) = (*tasks, *seed);
    let bytes = std::fs::read(model).map_err(|e| TrainerError::io(model, e))?;
    let int8 = trainer::export::int8_bytes(&bytes, model)?;
    let reference = trainer::export::f32_inference_bytes(&bytes, model)?;
    let sizes = formats::parse(&int8)
        .map_err(|source| TrainerError::Format {
            path: out.to_path_buf(),
            source,
        })?
        .config()
        .sizes();
    println!(
        "int8 inference file: {} bytes, f32 inference file: {} bytes ({:.3} of it)",
        int8.len(),
        reference.len(),
        int8.len() as f64 / reference.len() as f64
    );
    if tasks > 0 {
        let (dataset, kind) = load_data(args, sizes)?;
        // Errors name the input for the f32 model and the output for the int8 one.
        let comparison = trainer::export::compare(
            &[(model, &reference), (out, &int8)],
            dataset.split(kind),
            tasks,
            EVAL_QUERIES as usize,
            seed,
        )?;
        let diff = comparison.paired_difference(1, 0);
        println!(
            "host engine on {} ({split}, {tasks} tasks, seed {seed}, {}-way {}-shot, {EVAL_QUERIES} queries/class):\n\
             f32 {} | int8 {}\n\
             paired difference int8 - f32: {:+.2} points, 95% interval [{:+.2}, {:+.2}]",
            dataset.name(),
            sizes.N,
            sizes.K,
            comparison.accuracy(0),
            comparison.accuracy(1),
            100.0 * diff.mean,
            100.0 * (diff.mean - diff.ci95),
            100.0 * (diff.mean + diff.ci95)
        );
    }
    formats::write_atomic(out, &int8).map_err(|e| TrainerError::io(out, e))?;
    println!(
        "wrote {} (int8 inference file, version {}, {} bytes)",
        out.display(),
        formats::PAIR_VERSION,
        int8.len()
    );
    Ok(())
}

fn file_len(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

fn train(args: &TrainArgs, resume: Option<PathBuf>, backend: Backend) -> Result<(), TrainerError> {
    let (settings, checkpoint) = match resume {
        None => (args.resolve()?, None),
        Some(path) => {
            let checkpoint = ModelParams::read(&path)?;
            let settings = run::settings_of(&checkpoint, &path)?;
            let step = checkpoint.training.as_ref().map_or(0, |t| t.step);
            println!(
                "resuming {} at step {step} of {}",
                path.display(),
                settings.steps
            );
            (settings, Some(checkpoint))
        }
    };
    println!(
        "AWGIM {}-way {}-shot ({}-way in training{}), {} queries/class: d = {}, {} heads, G = {}, {:?} layer norm, {:?} encoder, {:?}; \
         {} steps x {} tasks, lr {:e} (x{} every {} steps), weight decay {:e}, dropout {} (generator {:?}), l1/l2/l3 = {}/{}/{}, seed {}",
        settings.ways,
        settings.shots,
        settings.train_ways,
        if settings.train_on_val { ", train + val" } else { "" },
        settings.queries,
        settings.latent,
        settings.heads,
        settings.generator,
        settings.layer_norm,
        settings.encoder,
        settings.model_config(0).classifier,
        settings.steps,
        settings.batch,
        settings.lr,
        settings.decay_rate,
        settings.decay_every,
        settings.weight_decay,
        settings.dropout,
        settings.generator_rows,
        settings.loss_weights.l1,
        settings.loss_weights.l2,
        settings.loss_weights.l3,
        settings.seed
    );
    let report = run::train(&settings, checkpoint, backend, false)?;
    let sizes = report.config.sizes();
    println!("data: {} (D = {})", report.dataset, sizes.D);
    println!(
        "training: {} steps, {} skipped (non-finite), {:.1} tasks/s",
        report.steps, report.skipped, report.tasks_per_second
    );
    let model = if settings.train_on_val {
        println!(
            "model: the last step, {} (--train-on-val: no validation)",
            report.best_step
        );
        "the last step"
    } else {
        println!(
            "best validation: {} at step {} ({} tasks)",
            report.best_validation, report.best_step, report.best_validation.tasks
        );
        "best validation"
    };
    println!(
        "test ({} tasks, {}-way {}-shot, {EVAL_QUERIES} queries/class): {}",
        report.test.model.len(),
        sizes.N,
        sizes.K,
        report.test.report()
    );
    println!(
        "wrote {} ({model}), {}, {}, {}",
        report.model_path.display(),
        settings.checkpoint_path().display(),
        settings.curves_path("csv").display(),
        settings.curves_path("svg").display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The option index is mimalloc's purge delay and `keep_freed_memory` sets it to -1 (the
    /// environment's `MIMALLOC_PURGE_DELAY` wins: then only that is checked).
    #[test]
    #[allow(unsafe_code)]
    fn freed_memory_is_kept_unless_the_environment_says_otherwise() {
        // SAFETY: `mi_option_get` reads one number of mimalloc's option table (checked index,
        // no pointer); this is the only test of this binary touching the options.
        let get = || unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        match std::env::var("MIMALLOC_PURGE_DELAY").ok() {
            None => {
                // mimalloc v3's default, 1000 ms (`options.c`): the index is the purge delay
                // (its neighbours default to 1 and 0).
                assert_eq!(get(), 1000);
                keep_freed_memory();
                assert_eq!(get(), -1);
            }
            Some(value) => {
                keep_freed_memory();
                assert_eq!(get().to_string(), value.trim());
            }
        }
    }
}
