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

fn measure<
    const D: usize,
    const L: usize,
    const H: usize,
    const N: usize,
    const K: usize,
    const G: usize,
    const NK: usize,
    const L2: usize,
    const B: usize,
>(
    label: &str,
    config: ModelConfig,
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
    let model = Model::<D, L, H, N, K, G, NK, L2>::load(&bytes).unwrap();
    let mut workspace = Box::new(Workspace::<D, L, H, N, K, G, NK, L2, B>::new());

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
    println!("{label}  (D={D} d={L} h={H} N={N} K={K} G={G}, batch B={B})");
    println!(
        "  workspace {:>9} bytes   weights {:>9} bytes   file {:>9} bytes",
        Workspace::<D, L, H, N, K, G, NK, L2, B>::BYTES,
        weight_bytes,
        bytes.len()
    );
    println!("  prepare                          {}", us(prepare));
    println!("  classify, per query              {}", us(single));
    println!("  classify_batch, per query        {}", us(batch));
    println!("  task: prepare + {QUERIES} queries batched {}", us(task));
    println!("  task: prepare + {N} queries batched  {}", us(small_task));
    let (d, l, n, k, g) = (D as u64, L as u64, N as u64, K as u64, G as u64);
    let h = H as u64;
    // q = enc_ap x, G2muᵀ x, ca_ap (Wq, F1, F2; scores over the N K keys; per head the N
    // class values already through Wo), the attentive half of G1, and the N logits.
    let per_query = d * l + g * d + 5 * l * l + n * k * l + h * n * l + l * g + n * g;
    // Per support row: both encoders, two self-attention blocks (Wq, Wk, Wv, Wo, F1, F2 and
    // N K scores and values), the ca_ap key; per class: the ca_ap value Wv v_bar, its
    // projection through each head's part of Wo, and G1[0..d] c_bar.
    let block_row = 8 * l * l + 2 * n * k * l;
    let prepare_macs = n * k * (2 * d * l + 2 * block_row + l * l) + n * (2 * l * l + l * g);
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
    measure::<640, 128, 4, 5, 1, 256, 5, 256, { engine::PAPER_BATCH }>(
        "Paper1Shot",
        ModelConfig::paper(1),
        reps,
    );
    measure::<640, 128, 4, 5, 5, 256, 25, 256, { engine::PAPER_BATCH }>(
        "Paper5Shot",
        ModelConfig::paper(5),
        reps,
    );
    measure::<64, 32, 4, 5, 1, 64, 5, 64, { engine::EDGE_BATCH }>(
        "Edge1Shot",
        ModelConfig::edge(1),
        reps,
    );
    measure::<64, 32, 4, 5, 5, 64, 25, 64, { engine::EDGE_BATCH }>(
        "Edge5Shot",
        ModelConfig::edge(5),
        reps,
    );
}
