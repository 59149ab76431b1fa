//! Criterion benchmarks of one AWGIM training step (`TrainStep::step`: forward, backward,
//! clipped AdamW) on the CPU backend, fed as `trainer::run` feeds it.
//!
//! `cargo bench -p trainer --bench train_step` (`scripts/bench.sh` runs it and prints the
//! table).
//!
//! Configurations: the trainer's own settings, resolved from its command-line flags
//! (`TrainArgs`): the default quick run (`--shots 1` / `--shots 5`: D = 64, d = 32, 4 heads,
//! G = 64, 5-way, Q = 15, batch 8, dropout 0.3) and the paper's sizes
//! (`--paper --synthetic-dim 640 --batch 4`: D = 640, d = 128, G = 256) at a small batch.
//!
//! Per configuration, two benchmarks:
//! - `train step`: `TrainStep::step` and reading the logits (`TrainStep::output`), as a
//!   step of `run::train` does. Before every timed step, untimed, fresh inputs are fed the
//!   way `run::train` feeds them: a batch of episodes from the synthetic training split, the
//!   one-hot labels, and the noise and dropout masks from `awgim::draw_random_inputs`, all
//!   from the step's own seeded generator. Its FLOPs (criterion throughput, so `thrpt` reads
//!   as FLOP/s) are the products of forward and backward, counted analytically and checked
//!   against the compiled graph before measuring (`flops.rs`).
//! - `train feed`: that feeding alone (host-side sampling and random draws; no FLOPs
//!   counted). A step of `run::train` costs about the sum of the two.
//!
//! The products, and element-wise and unary ops of 262,144 elements or more, use all cores
//! unless `MATMUL_NUM_THREADS` says otherwise (`autodiff::sgemm`); the rest of the step runs
//! on one thread.

mod feed;
mod flops;

/// The trainer binary's allocator (`trainer/src/main.rs`), so the step is timed as it runs there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::hint::black_box;
use std::time::{Duration, Instant};

use autodiff::{backward, Backend, Evaluator, GraphBuilder, Tensor, TrainStep};
use clap::Parser;
use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use formats::ModelConfig;
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use trainer::awgim::{self, BatchShape, GeneratorRows, TrainGraph, TrainOptions};
use trainer::data::SyntheticSpec;
use trainer::options::{Settings, TrainArgs};

use feed::Feeder;
use flops::StepShape;

/// The trainer's flags, as its command line parses them.
#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    train: TrainArgs,
}

/// Examples per class of the synthetic data: enough for any task (K + Q = 20), fewer than
/// the trainer's 600 so that the 640-feature set is quick to generate. The step does not
/// depend on it.
const EXAMPLES_PER_CLASS: usize = 100;

/// The paper's sizes on 640-feature synthetic data, at a small batch (the paper trains with
/// 64 tasks for 1-shot, 32 for 5-shot).
const PAPER: [&str; 5] = ["--paper", "--synthetic-dim", "640", "--batch", "4"];

/// One benchmarked configuration.
struct Case {
    /// Label in the benchmark ids, e.g. `edge K=5`.
    label: &'static str,
    /// `--shots`.
    shots: &'static str,
    /// Whether the [`PAPER`] flags are added.
    paper: bool,
    /// Criterion's measurement time for the step.
    measurement: Duration,
}

impl Case {
    /// The trainer flags it resolves from.
    fn flags(&self) -> Vec<&'static str> {
        let mut flags = vec!["--shots", self.shots];
        if self.paper {
            flags.extend(PAPER);
        }
        flags
    }
}

/// A compiled training step, what `run::train` feeds it from, and its sizes.
struct Fed {
    config: ModelConfig,
    shape: BatchShape,
    feeder: Feeder,
}

impl Fed {
    /// Resolves `flags` as the trainer does, generates the synthetic training split and
    /// compiles the training step from the reference initialisation.
    fn new(flags: &[&str]) -> Result<Self, String> {
        let argv = std::iter::once("trainer").chain(flags.iter().copied());
        let settings = Flags::try_parse_from(argv)
            .map_err(|e| e.to_string())?
            .train
            .resolve()
            .map_err(|e| e.to_string())?;
        let spec = settings.synthetic.spec(settings.synthetic_dim);
        let config = settings.model_config(spec.dim as u32);
        let shape = BatchShape {
            tasks: settings.batch,
            queries_per_class: settings.queries as usize,
        };
        let data = SyntheticSpec {
            examples_per_class: EXAMPLES_PER_CLASS,
            ..spec
        }
        .generate()
        .map_err(|e| e.to_string())?;
        let built = build(&settings, &config, shape)?;
        let inputs = built.graph.inputs();
        let train = TrainStep::new(
            built.graph,
            built.losses.total,
            &[built.logits],
            settings.adamw(),
            Backend::Cpu,
        )
        .map_err(|e| e.to_string())?;
        Ok(Fed {
            config,
            shape,
            feeder: Feeder::new(settings, train, inputs, data)?,
        })
    }
}

/// The training graph of `run::train` for these settings, from the reference
/// initialisation.
fn build(
    settings: &Settings,
    config: &ModelConfig,
    shape: BatchShape,
) -> Result<TrainGraph, String> {
    let options = TrainOptions {
        dropout: settings.dropout,
        loss_weights: settings.loss_weights,
        rows: GeneratorRows::PerClass,
    };
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(settings.seed);
    let params = awgim::init_params(config, &mut rng);
    awgim::build_train(config, shape, options, &params).map_err(|e| e.to_string())
}

/// Multiply-adds of the products in the compiled graph computing `outputs` of `graph`.
fn compiled(graph: GraphBuilder, outputs: &[Tensor]) -> Result<u64, String> {
    let evaluator = Evaluator::new(graph, outputs, Backend::Cpu).map_err(|e| e.to_string())?;
    flops::compiled_products(&evaluator.op_names())
}

/// The step's FLOPs, after checking the analytic count against the compiled forward graph
/// and the compiled forward + backward graph.
fn checked_step_flops(fed: &Fed) -> Result<u64, String> {
    let shape = StepShape::new(&fed.config, fed.shape)?;

    let forward = build(&fed.feeder.settings, &fed.config, fed.shape)?;
    let loss = forward.losses.total;
    let counted = compiled(forward.graph, &[loss])?;
    if counted != shape.forward_products() {
        return Err(format!(
            "forward: the compiled graph has {counted} multiply-adds in products, the analytic count is {}",
            shape.forward_products()
        ));
    }

    let both = build(&fed.feeder.settings, &fed.config, fed.shape)?;
    let loss = both.losses.total;
    let params = both
        .graph
        .params()
        .iter()
        .map(|(name, _)| both.graph.tensor(name))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let mut outputs = backward(loss, &params).map_err(|e| e.to_string())?;
    outputs.push(loss);
    let counted = compiled(both.graph, &outputs)?;
    let analytic = shape.forward_products() + shape.backward_products();
    if counted != analytic {
        return Err(format!(
            "forward + backward: the compiled graph has {counted} multiply-adds in products, the analytic count is {analytic}"
        ));
    }
    Ok(shape.step_flops())
}

fn bench_case(c: &mut Criterion, case: &Case) -> Result<(), String> {
    let mut fed = Fed::new(&case.flags())?;
    let flops = checked_step_flops(&fed)?;
    let (s, z) = (&fed.feeder.settings, fed.config.sizes());
    let config = format!(
        "D={} d={} h={} G={} N={} Q={} batch {}",
        z.D, z.d, z.h, z.G, z.N, s.queries, s.batch
    );

    let mut group = c.benchmark_group("train step");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(case.measurement)
        .throughput(Throughput::Elements(flops));
    let mut step = 0u64;
    let mut failure = None;
    group.bench_function(BenchmarkId::new(case.label, &config), |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                if let Err(e) = fed.feeder.feed(step) {
                    failure.get_or_insert(e);
                }
                let start = Instant::now();
                let outcome = fed.feeder.train.step(step);
                let logits = fed.feeder.train.output(0);
                timed += start.elapsed();
                if let Err(e) = outcome.and(logits.map(black_box)) {
                    failure.get_or_insert(e.to_string());
                }
                step += 1;
            }
            timed
        })
    });
    group.finish();
    if let Some(e) = failure {
        return Err(format!("training step failed: {e}"));
    }
    if fed.feeder.train.skipped_steps() > 0 {
        eprintln!(
            "note: {} of {step} steps had a non-finite loss or gradient (same work, no update)",
            fed.feeder.train.skipped_steps()
        );
    }

    let mut group = c.benchmark_group("train feed");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let mut failure = None;
    group.bench_function(BenchmarkId::new(case.label, &config), |b| {
        b.iter(|| {
            if let Err(e) = fed.feeder.feed(step) {
                failure.get_or_insert(e);
            }
            step += 1;
        })
    });
    group.finish();
    failure.map_or(Ok(()), |e| Err(format!("feeding failed: {e}")))
}

fn main() {
    let cases = [
        Case {
            label: "edge K=1",
            shots: "1",
            paper: false,
            measurement: Duration::from_secs(10),
        },
        Case {
            label: "edge K=5",
            shots: "5",
            paper: false,
            measurement: Duration::from_secs(10),
        },
        Case {
            label: "paper K=1",
            shots: "1",
            paper: true,
            measurement: Duration::from_secs(15),
        },
        Case {
            label: "paper K=5",
            shots: "5",
            paper: true,
            measurement: Duration::from_secs(15),
        },
    ];
    let mut c = Criterion::default().configure_from_args();
    for case in &cases {
        if let Err(e) = bench_case(&mut c, case) {
            eprintln!("{}: {e}", case.label);
            std::process::exit(1);
        }
    }
    c.final_summary();
}
