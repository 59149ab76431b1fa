//! Where the time of one AWGIM training step goes: every op of the compiled step timed.
//!
//! ```text
//! cargo run --release -p trainer --example step-profile -- --paper --synthetic-dim 640 --shots 1
//! cargo run --release -p trainer --example step-profile -- --paper --synthetic-dim 640 --shots 5 \
//!     --profile-steps 3 --peak-gflops 180
//! ```
//!
//! Takes the trainer's own flags (`trainer train --help`; the batch defaults to the paper's
//! 64 tasks for 1-shot and 32 for 5-shot with `--paper`), builds and compiles the training
//! step as `trainer::run` does (CPU backend), feeds it as a step of `run::train` does
//! (sampled tasks, one-hot labels, noise and dropout masks; timed separately as "feed"),
//! runs `--warmup-steps` untimed steps, then `--profile-steps` steps with
//! `autodiff::TrainStep::enable_profiling` on, and prints:
//! - the step: feed, `TrainStep::step` (+ reading the logits), luminal's `execute`, the sum
//!   of the op times, and the difference (luminal's scheduling and buffer bookkeeping);
//! - per op class (sgemm, element-wise, unary, reduce, copy, other) and per phase (forward,
//!   backward, optimizer): ops, calls, time, share, GFLOP/s, bytes moved and GB/s;
//! - the sgemm shapes (batch x [m x k]·[k x n], memory layout of A and B) with their
//!   GFLOP/s, and the most expensive other ops;
//! - the step's product FLOPs (checked against the analytic count of
//!   `benches/train_step/flops.rs`) and, with `--peak-gflops P` (one core's f32 FMA peak from
//!   `scripts/fma-peak.rs`), the step's rate as a fraction of P times the sgemm threads.
//!
//! The products, and element-wise and unary ops of 262,144 elements or more, use
//! `MATMUL_NUM_THREADS` threads (all cores by default; `autodiff::sgemm`); everything else
//! runs on one thread. Timers wrap ops only while profiling, so
//! the profiled steps compute exactly what unprofiled ones do.

#[path = "../benches/train_step/feed.rs"]
mod feed;
#[path = "../benches/train_step/flops.rs"]
#[allow(dead_code)]
mod flops;

/// The trainer binary's allocator, so the step runs as it does there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::{Duration, Instant};

use autodiff::{Backend, OpClass, Profile, Totals, TrainStep};
use clap::Parser;
use formats::ModelConfig;
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use trainer::awgim::{self, BatchShape, GeneratorRows, TrainOptions};
use trainer::data::SyntheticSpec;
use trainer::options::TrainArgs;

/// The trainer's flags plus what to profile.
#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    train: TrainArgs,
    /// Steps run before profiling (compiles caches, warms the allocator). The first steps
    /// touch memory the process has not used before: on the cloud VMs measured here the
    /// kernel backs it with 2 MB pages at some 5 ms each, which the trainer pays only while
    /// its allocator's pool grows. After one step, 20 such faults were left in each profiled
    /// 1-shot step (the `k` = 5 logits gradient, writing 61 MB, took 33 ms instead of 6);
    /// after 4, two (AMD EPYC Zen 4).
    #[arg(long, default_value_t = 4)]
    warmup_steps: u64,
    /// Steps profiled.
    #[arg(long, default_value_t = 3)]
    profile_steps: u64,
    /// One core's f32 FMA peak in GFLOP/s (`scripts/fma-peak.rs`), for the "of peak" figures.
    #[arg(long)]
    peak_gflops: Option<f64>,
    /// Examples per class of the synthetic data (the step does not depend on it).
    #[arg(long, default_value_t = 100)]
    examples_per_class: usize,
    /// Rows of the per-op tables.
    #[arg(long, default_value_t = 25)]
    top: usize,
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// This process's (minor page faults, user seconds, system seconds) from `/proc/self/stat`
/// (Linux; clock ticks taken as 100 a second, the kernel's `USER_HZ`).
fn usage() -> Option<(u64, f64, f64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // After the command name: state is field 3, so field i is fields[i - 3].
    let field = |i: usize| fields.get(i - 3)?.parse::<u64>().ok();
    Some((
        field(10)?,
        field(14)? as f64 / 100.0,
        field(15)? as f64 / 100.0,
    ))
}

fn ms(nanos: f64) -> f64 {
    nanos / 1e6
}

fn main() {
    if let Err(e) = run() {
        eprintln!("step-profile: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let mut flags = Flags::parse();
    // Nothing is written: an earlier run's output file in the way does not matter.
    flags.train.overwrite = true;
    let settings = flags.train.resolve().map_err(|e| e.to_string())?;
    let spec = settings.synthetic.spec(settings.synthetic_dim);
    let config: ModelConfig = settings.model_config(spec.dim as u32);
    let shape = BatchShape {
        tasks: settings.batch,
        queries_per_class: settings.queries as usize,
    };
    let data = SyntheticSpec {
        examples_per_class: flags.examples_per_class,
        ..spec
    }
    .generate()
    .map_err(|e| e.to_string())?;
    let options = TrainOptions {
        dropout: settings.dropout,
        loss_weights: settings.loss_weights,
        rows: GeneratorRows::PerClass,
    };
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(settings.seed);
    let params = awgim::init_params(&config, &mut rng);
    let built = awgim::build_train(&config, shape, options, &params).map_err(|e| e.to_string())?;
    let inputs = built.graph.inputs();
    let compile = Instant::now();
    let train = TrainStep::new(
        built.graph,
        built.losses.total,
        &[built.logits],
        settings.adamw(),
        Backend::Cpu,
    )
    .map_err(|e| e.to_string())?;
    let compile = compile.elapsed();
    let mut fed = feed::Feeder::new(settings, train, inputs, data)?;

    let z = config.sizes();
    let threads = std::env::var("MATMUL_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    println!(
        "config: D={} d={} h={} G={} N={} K={} Q={} batch {} ({} compiled nodes, compiled in {:.1} s)",
        z.D,
        z.d,
        z.h,
        z.G,
        z.N,
        z.K,
        fed.settings.queries,
        fed.settings.batch,
        fed.train.node_count(),
        compile.as_secs_f64()
    );
    println!("sgemm threads: {threads}; load average before: {}", load());

    let mut step = 0u64;
    for _ in 0..flags.warmup_steps {
        fed.feed(step)?;
        fed.train.step(step).map_err(|e| e.to_string())?;
        fed.train.output(0).map_err(|e| e.to_string())?;
        step += 1;
    }
    fed.train.enable_profiling();
    let before = usage();
    let (mut feed_t, mut step_t) = (Duration::ZERO, Duration::ZERO);
    let n = flags.profile_steps.max(1);
    for _ in 0..n {
        let t = Instant::now();
        fed.feed(step)?;
        feed_t += t.elapsed();
        let t = Instant::now();
        fed.train.step(step).map_err(|e| e.to_string())?;
        fed.train.output(0).map_err(|e| e.to_string())?;
        step_t += t.elapsed();
        step += 1;
    }
    println!("load average after: {}", load());
    if let (Some(a), Some(b)) = (before, usage()) {
        let n = n as f64;
        println!(
            "per profiled step (feed + step): {:.0} minor page faults ({:.0} MB of fresh 4 KiB pages), user {:.0} ms, system {:.0} ms (all threads)",
            (b.0 - a.0) as f64 / n,
            (b.0 - a.0) as f64 * 4096.0 / n / 1e6,
            (b.1 - a.1) * 1e3 / n,
            (b.2 - a.2) * 1e3 / n
        );
    }
    let profile = fed
        .train
        .profile()
        .ok_or("profiling was enabled but recorded nothing")?;
    let analytic = flops::StepShape::new(&config, shape)?.step_flops();
    report(
        &profile,
        n,
        feed_t,
        step_t,
        analytic,
        threads,
        flags.peak_gflops,
        flags.top,
    )
}

#[allow(clippy::too_many_arguments)]
fn report(
    p: &Profile,
    steps: u64,
    feed: Duration,
    step: Duration,
    analytic_flops: u64,
    threads: usize,
    peak: Option<f64>,
    top: usize,
) -> Result<(), String> {
    let per = |nanos: u64| ms(nanos as f64 / steps as f64);
    let feed_ns = feed.as_nanos() as u64;
    let step_ns = step.as_nanos() as u64;
    let total = feed_ns + step_ns;
    let share = |nanos: u64| 100.0 * nanos as f64 / total as f64;
    let ops = p.op_nanos();
    println!("\n## Step ({steps} profiled steps, per step)\n");
    println!("| part | ms | share of feed + step |");
    println!("|---|---:|---:|");
    println!(
        "| feed (sampling, labels, noise/dropout masks, set_input) | {:.2} | {:.1}% |",
        per(feed_ns),
        share(feed_ns)
    );
    println!(
        "| TrainStep::step + output | {:.2} | {:.1}% |",
        per(step_ns),
        share(step_ns)
    );
    println!(
        "| - luminal execute | {:.2} | {:.1}% |",
        per(p.run_nanos),
        share(p.run_nanos)
    );
    println!("| - - inside ops | {:.2} | {:.1}% |", per(ops), share(ops));
    println!(
        "| - - luminal scheduling/bookkeeping (execute - ops) | {:.2} | {:.1}% |",
        per(p.overhead_nanos()),
        share(p.overhead_nanos())
    );
    let outside = step_ns.saturating_sub(p.run_nanos);
    println!(
        "| - outside execute (outputs to leaves, learning rate) | {:.2} | {:.1}% |",
        per(outside),
        share(outside)
    );

    let sgemm_flops: u64 = p
        .ops
        .iter()
        .filter(|o| o.class == OpClass::MatMul)
        .map(|o| o.flops)
        .sum();
    if sgemm_flops != analytic_flops {
        return Err(format!(
            "the profiled sgemm FLOPs per step ({sgemm_flops}) differ from the analytic count ({analytic_flops})"
        ));
    }
    let gflops = |flops: u64, nanos: u64| flops as f64 / nanos.max(1) as f64;
    println!(
        "\nproduct FLOPs per step: {:.3} G (equal to the analytic count); {:.1} GFLOP/s over feed + step, {:.1} over the step, {:.1} inside sgemm",
        sgemm_flops as f64 / 1e9,
        gflops(sgemm_flops * steps, total),
        gflops(sgemm_flops * steps, step_ns),
        gflops(
            sgemm_flops * steps,
            p.totals_by(|o| o.class)
                .iter()
                .find(|(c, _)| *c == OpClass::MatMul)
                .map_or(1, |(_, t)| t.nanos)
        ),
    );
    if let Some(peak) = peak {
        let all = peak * threads as f64;
        println!(
            "peak: {peak:.1} GFLOP/s a core x {threads} sgemm threads = {all:.1}; the step runs at {:.1}% of it (feed + step), {:.1}% (step); 50% needs a step of {:.1} ms",
            100.0 * gflops(sgemm_flops * steps, total) / all,
            100.0 * gflops(sgemm_flops * steps, step_ns) / all,
            sgemm_flops as f64 / (0.5 * all) / 1e6,
        );
    }

    println!("\n## By class\n");
    class_table(p, steps, total, |o| o.class.name().to_string());
    println!("\n## By phase and class\n");
    class_table(p, steps, total, |o| {
        format!("{} {}", o.phase.name(), o.class.name())
    });
    println!("\n## By phase\n");
    class_table(p, steps, total, |o| o.phase.name().to_string());

    println!("\n## sgemm shapes (same label summed)\n");
    label_table(p, steps, total, top, |o| o.class == OpClass::MatMul, true);
    println!("\n## Other ops, most expensive first (same label summed)\n");
    label_table(p, steps, total, top, |o| o.class != OpClass::MatMul, false);
    Ok(())
}

fn class_table(p: &Profile, steps: u64, total: u64, key: impl Fn(&autodiff::OpRecord) -> String) {
    let rows = p.totals_by(key);
    print_table("group", rows, steps, total, usize::MAX);
}

fn label_table(
    p: &Profile,
    steps: u64,
    total: u64,
    top: usize,
    keep: impl Fn(&autodiff::OpRecord) -> bool,
    with_phase: bool,
) {
    let rows = p.totals_by(|o| {
        if !keep(o) {
            return String::new();
        }
        if with_phase {
            format!("{} ({})", o.label, o.phase.name())
        } else {
            o.label.clone()
        }
    });
    let rows = rows.into_iter().filter(|(k, _)| !k.is_empty()).collect();
    print_table("op", rows, steps, total, top);
}

/// A Markdown table of per-group totals, per step, the first `top` rows.
fn print_table(what: &str, rows: Vec<(String, Totals)>, steps: u64, total: u64, top: usize) {
    println!("| {what} | ops | ms/step | share | GFLOP/s | MB/step | GB/s |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (k, t) in rows.into_iter().take(top) {
        println!(
            "| {k} | {} | {:.3} | {:.1}% | {:.1} | {:.2} | {:.1} |",
            t.ops,
            ms(t.nanos as f64 / steps as f64),
            100.0 * t.nanos as f64 / total as f64,
            t.flops as f64 / t.nanos.max(1) as f64,
            t.bytes as f64 / steps as f64 / 1e6,
            t.bytes as f64 / t.nanos.max(1) as f64,
        );
    }
}
