//! Sizes and host timings of the shipped configurations.
//!
//! `cargo run -p engine --release --example measure [REPS [CONFIG]]`
//! (the workspace's `.cargo/config.toml` builds x86-64 hosts with `-C target-cpu=native`, so
//! the kernels use the host's vector extensions, as a JIT does).
//!
//! Prints, per configuration: workspace bytes, inference weight and file bytes, and the
//! median over many repetitions of: `prepare` (support side), `classify` per query (one query
//! at a time), `classify_batch` per query (75 queries, batches of B), and a whole 5-way task
//! with 75 queries (prepare + batch). Single thread; weights are random (timing does not
//! depend on their values).

// The size parameters are AWGIM.md's letters, where `D` and `d` are different sizes.
#![allow(non_upper_case_globals)]

// The benchmark's FLOP counts (not all of its functions are used here).
#[allow(dead_code)]
#[path = "../benches/inference/flops.rs"]
mod flops;

use std::hint::black_box;
use std::time::{Duration, Instant};

use engine::{Model, Prediction, Workspace};
use formats::{expected_tensors, AlignedBuf, FileBuilder, FileKind, ModelConfig, Provenance};

const QUERIES: usize = 75;

/// A model file with Glorot-uniform-sized random weights from a fixed LCG.
fn model_file(config: ModelConfig) -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut uniform = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    };
    let tensors: Vec<_> = expected_tensors(&config, FileKind::Inference)
        .map(|spec| {
            let limit = match spec.shape.as_slice() {
                [i, o] => (6.0 / (*i + *o) as f32).sqrt(),
                _ => 0.1,
            };
            let values: Vec<f32> = (0..spec.elements())
                .map(|_| uniform() * limit + if spec.shape.len() == 1 { 1.0 } else { 0.0 })
                .collect();
            (spec.name, values)
        })
        .collect();
    let provenance = Provenance {
        dataset: "random".try_into().unwrap(),
        shots: config.shots,
        steps: 0,
        seed: 0,
        validation: None,
        tool: "engine/measure".try_into().unwrap(),
        tool_version: env!("CARGO_PKG_VERSION").try_into().unwrap(),
    };
    let mut builder = FileBuilder::new(FileKind::Inference, config, provenance).unwrap();
    for (name, values) in &tensors {
        builder.tensor(name, values).unwrap();
    }
    builder.build().unwrap()
}

/// "median (min)" of the samples, in microseconds. The minimum shows the cost without
/// interference from other processes on a shared machine.
fn us(mut samples: Vec<Duration>) -> String {
    samples.sort();
    let at = |d: Duration| d.as_secs_f64() * 1e6;
    format!(
        "{:.2} ({:.2}) us",
        at(samples[samples.len() / 2]),
        at(samples[0])
    )
}

/// Measures the configuration `config` (named `label`), with the engine types of its sizes
/// (those of `workspace`, whose batch is `B` queries).
fn measure<
    const D: usize,
    const d: usize,
    const h: usize,
    const N: usize,
    const K: usize,
    const G: usize,
    const NK: usize,
    const d2: usize,
    const B: usize,
>(
    label: &str,
    config: ModelConfig,
    mut workspace: Box<Workspace<D, d, h, N, K, G, NK, d2, B>>,
    reps: usize,
) {
    let only = std::env::args().nth(2);
    if only.is_some_and(|only| only != label) {
        return;
    }
    let bytes = AlignedBuf::from_bytes(&model_file(config));
    let weight_bytes: u64 = expected_tensors(&config, FileKind::Inference)
        .map(|s| s.elements() * 4)
        .sum();
    let model = Model::<D, d, h, N, K, G, NK, d2>::load(&bytes).unwrap();
    let mut seed = 1u32;
    let mut feature = move || {
        seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        (seed >> 8) as f32 / (1u32 << 24) as f32
    };
    let support: Vec<[f32; D]> = (0..NK)
        .map(|_| core::array::from_fn(|_| feature()))
        .collect();
    let support: &[[f32; D]; NK] = support.as_slice().try_into().unwrap();
    let queries: Vec<[f32; D]> = (0..QUERIES)
        .map(|_| core::array::from_fn(|_| feature()))
        .collect();
    let mut out = vec![Prediction::<N>::zeroed(); QUERIES];

    let (mut prepare, mut single, mut batch) = (vec![], vec![], vec![]);
    let (mut task, mut small_task) = (vec![], vec![]);
    for _ in 0..reps {
        let t = Instant::now();
        black_box(model.prepare(&mut workspace, black_box(support)).unwrap());
        prepare.push(t.elapsed());

        let mut prepared = model.prepare(&mut workspace, support).unwrap();
        let t = Instant::now();
        for q in &queries {
            black_box(prepared.classify(black_box(q)).unwrap());
        }
        single.push(t.elapsed() / QUERIES as u32);

        let t = Instant::now();
        prepared
            .classify_batch(black_box(&queries), &mut out)
            .unwrap();
        batch.push(t.elapsed() / QUERIES as u32);
        black_box(&out);

        let t = Instant::now();
        let mut prepared = model.prepare(&mut workspace, black_box(support)).unwrap();
        prepared
            .classify_batch(black_box(&queries), &mut out)
            .unwrap();
        task.push(t.elapsed());
        black_box(&out);

        let t = Instant::now();
        let mut prepared = model.prepare(&mut workspace, black_box(support)).unwrap();
        prepared
            .classify_batch(black_box(&queries[..N]), &mut out[..N])
            .unwrap();
        small_task.push(t.elapsed());
        black_box(&out);
    }
    println!("{label}  (D={D} d={d} h={h} N={N} K={K} G={G}, batch B={B})");
    println!(
        "  workspace {:>9} bytes   weights {:>9} bytes   file {:>9} bytes",
        Workspace::<D, d, h, N, K, G, NK, d2, B>::BYTES,
        weight_bytes,
        bytes.len()
    );
    println!("  prepare                          {}", us(prepare));
    println!("  classify, per query              {}", us(single));
    println!("  classify_batch, per query        {}", us(batch));
    println!("  task: prepare + {QUERIES} queries batched {}", us(task));
    println!("  task: prepare + {N} queries batched  {}", us(small_task));
    let sizes = config.sizes();
    let per_query = flops::query_multiply_adds(&sizes);
    let prepare_macs = flops::prepare_multiply_adds(&sizes);
    println!(
        "  multiply-adds: {per_query} per query ({:.3} MFLOP), {prepare_macs} in prepare",
        2.0 * per_query as f64 / 1e6
    );
}

fn main() {
    let reps = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    println!("median (min) of {reps} repetitions, single thread, {QUERIES} queries per task");
    use engine::{
        Edge1ShotWorkspace, Edge5ShotWorkspace, Paper1ShotWorkspace, Paper5ShotWorkspace,
    };
    let paper1 = Box::new(Paper1ShotWorkspace::new());
    measure("Paper1Shot", ModelConfig::paper(1), paper1, reps);
    let paper5 = Box::new(Paper5ShotWorkspace::new());
    measure("Paper5Shot", ModelConfig::paper(5), paper5, reps);
    let edge1 = Box::new(Edge1ShotWorkspace::new());
    measure("Edge1Shot", ModelConfig::edge(1), edge1, reps);
    let edge5 = Box::new(Edge5ShotWorkspace::new());
    measure("Edge5Shot", ModelConfig::edge(5), edge5, reps);
}
