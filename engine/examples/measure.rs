//! Sizes and host timings of the shipped configurations.
//!
//! `cargo run -p engine --release --example measure [REPS [CONFIG [int8]]]` (`int8`: the
//! model with its big dense layers quantised, as `trainer export --int8` writes it)
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
#[path = "../benches/inference/model_file.rs"]
mod model_file;

use std::hint::black_box;
use std::time::{Duration, Instant};

use engine::DynModel;
use engine::{Model, Prediction, Workspace};
use formats::{expected_tensors, AlignedBuf, FileKind, ModelConfig};
use model_file::{int8_model_file, model_file};

const QUERIES: usize = 75;

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
    const LEN: usize,
    const B: usize,
>(
    label: &str,
    config: ModelConfig,
    mut workspace: Box<Workspace<LEN, B>>,
    reps: usize,
) {
    let only = std::env::args().nth(2);
    if only.is_some_and(|only| only != label) {
        return;
    }
    let int8 = std::env::args().nth(3).is_some_and(|a| a == "int8");
    let bytes = match int8 {
        true => AlignedBuf::from_bytes(&int8_model_file(&config)),
        false => AlignedBuf::from_bytes(&model_file(&config)),
    };
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
    let dtype = if int8 { ", int8 weights" } else { "" };
    println!("{label}  (D={D} d={d} h={h} N={N} K={K} G={G}, batch B={B}{dtype})");
    println!(
        "  workspace {:>9} bytes   f32 weights {:>9} bytes   file {:>9} bytes",
        Workspace::<LEN, B>::BYTES,
        weight_bytes,
        bytes.len()
    );
    println!("  prepare                          {}", us(prepare));
    println!("  classify, per query              {}", us(single));
    println!("  classify_batch, per query        {}", us(batch));
    println!("  task: prepare + {QUERIES} queries batched {}", us(task));
    println!("  task: prepare + {N} queries batched  {}", us(small_task));

    // The same model through the run-time-sized engine (`DynModel`, what `trainer infer`
    // runs): the same code with `Dyn` dimensions, so the same logits, bit for bit.
    let dyn_model = DynModel::load(&bytes).unwrap();
    let mut dyn_workspace = vec![0.0f32; dyn_model.workspace_len(B)];
    let flat_queries = queries.as_flattened();
    let mut logits = vec![0.0f32; QUERIES * N];
    let (mut dyn_single, mut dyn_batch) = (vec![], vec![]);
    for _ in 0..reps {
        let mut prepared = dyn_model
            .prepare(&mut dyn_workspace, B, support.as_flattened())
            .unwrap();
        let t = Instant::now();
        for (q, l) in flat_queries.chunks_exact(D).zip(logits.chunks_exact_mut(N)) {
            prepared.classify_batch(black_box(q), l).unwrap();
        }
        dyn_single.push(t.elapsed() / QUERIES as u32);
        let t = Instant::now();
        prepared
            .classify_batch(black_box(flat_queries), &mut logits)
            .unwrap();
        dyn_batch.push(t.elapsed() / QUERIES as u32);
        black_box(&logits);
    }
    let same = out
        .iter()
        .flat_map(|p| p.logits)
        .zip(&logits)
        .all(|(a, b)| a.to_bits() == b.to_bits());
    assert!(same, "{label}: Dyn and Const logits differ");
    println!("  Dyn: classify, per query         {}", us(dyn_single));
    println!("  Dyn: classify_batch, per query   {}", us(dyn_batch));
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
    measure::<640, 128, 4, 5, 1, 256, 5, 256, _, _>(
        "Paper1Shot",
        ModelConfig::paper(1),
        paper1,
        reps,
    );
    let paper5 = Box::new(Paper5ShotWorkspace::new());
    measure::<640, 128, 4, 5, 5, 256, 25, 256, _, _>(
        "Paper5Shot",
        ModelConfig::paper(5),
        paper5,
        reps,
    );
    let edge1 = Box::new(Edge1ShotWorkspace::new());
    measure::<64, 32, 4, 5, 1, 64, 5, 64, _, _>("Edge1Shot", ModelConfig::edge(1), edge1, reps);
    let edge5 = Box::new(Edge5ShotWorkspace::new());
    measure::<64, 32, 4, 5, 5, 64, 25, 64, _, _>("Edge5Shot", ModelConfig::edge(5), edge5, reps);
}
