//! Criterion benchmarks of the engine: `prepare`, `classify` (one query at a time) and
//! `classify_batch` (a 5-way task's 75 queries, `B` at a time) for the paper and edge
//! configurations, K = 1 and K = 5.
//!
//! `cargo bench -p engine --bench inference` (`scripts/bench.sh` runs it and prints the
//! table). Every benchmark records its FLOP count (`flops.rs`) as criterion's throughput in
//! elements, so criterion's `thrpt` reads as FLOP/s and the count is saved with the estimates
//! (`target/criterion/<group>/<id>/new/benchmark.json`). Before measuring, the counts are
//! checked against the figures of the engine's docs.
//!
//! Single thread. Weights are drawn from a seeded Glorot-uniform init (layer-norm gain 1,
//! bias 0) and written with `formats::FileBuilder`; features are uniform in [0, 1). Timing
//! does not depend on the values.
// The size parameters are AWGIM.md's letters, where `D` and `d` are different sizes.
#![allow(non_upper_case_globals)]

mod flops;
mod model_file;

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};
use engine::{Model, Prediction, Workspace};
use formats::{AlignedBuf, ModelConfig};
use model_file::model_file;
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

/// Queries of a 5-way task with AWGIM's 15 queries per class.
const QUERIES: usize = 75;

/// `n` feature rows of width `D`, uniform in [0, 1).
fn features<const D: usize>(rng: &mut Xoshiro256PlusPlus, n: usize) -> Vec<[f32; D]> {
    (0..n)
        .map(|_| core::array::from_fn(|_| rng.gen::<f32>()))
        .collect()
}

/// The three benchmarks of one configuration (`label`: e.g. `paper K=5`), with the engine
/// types of its sizes (those of `workspace`, whose batch is `B` queries).
fn bench_config<
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
    c: &mut Criterion,
    label: &str,
    config: ModelConfig,
    mut workspace: Box<Workspace<LEN, B>>,
) {
    let sizes = config.sizes();
    let shape = format!("D={D} d={d} h={h} N={N} G={G}");
    let bytes = AlignedBuf::from_bytes(&model_file(&config));
    let model = Model::<D, d, h, N, K, G, NK, d2>::load(bytes.as_bytes()).expect("model loads");
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(7);
    let support = features::<D>(&mut rng, NK);
    let support: &[[f32; D]; NK] = support.as_slice().try_into().expect("N K rows");
    let queries = features::<D>(&mut rng, QUERIES);
    let mut out = vec![Prediction::<N>::zeroed(); QUERIES];

    let mut group = c.benchmark_group("engine prepare");
    group.throughput(Throughput::Elements(flops::prepare_flops(&sizes)));
    group.bench_function(BenchmarkId::new(label, &shape), |b| {
        b.iter(|| {
            let task = model.prepare(&mut workspace, black_box(support));
            black_box(task.expect("prepare"));
        })
    });
    group.finish();

    let mut task = model.prepare(&mut workspace, support).expect("prepare");

    let mut group = c.benchmark_group("engine classify (1 query)");
    group.throughput(Throughput::Elements(flops::query_flops(&sizes)));
    let mut next = 0;
    group.bench_function(BenchmarkId::new(label, &shape), |b| {
        b.iter(|| {
            next = (next + 1) % QUERIES;
            task.classify(black_box(&queries[next])).expect("classify")
        })
    });
    group.finish();

    let mut group = c.benchmark_group(format!("engine classify_batch ({QUERIES} queries)"));
    group.throughput(Throughput::Elements(
        QUERIES as u64 * flops::query_flops(&sizes),
    ));
    group.bench_function(BenchmarkId::new(label, format!("{shape}, B={B}")), |b| {
        b.iter(|| {
            task.classify_batch(black_box(&queries), &mut out)
                .expect("classify_batch");
            black_box(&out);
        })
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    use engine::{
        Edge1ShotWorkspace, Edge5ShotWorkspace, Paper1ShotWorkspace, Paper5ShotWorkspace,
    };
    let paper1 = Box::new(Paper1ShotWorkspace::new());
    bench_config::<640, 128, 4, 5, 1, 256, 5, 256, _, _>(
        c,
        "paper K=1",
        ModelConfig::paper(1),
        paper1,
    );
    let paper5 = Box::new(Paper5ShotWorkspace::new());
    bench_config::<640, 128, 4, 5, 5, 256, 25, 256, _, _>(
        c,
        "paper K=5",
        ModelConfig::paper(5),
        paper5,
    );
    let edge1 = Box::new(Edge1ShotWorkspace::new());
    bench_config::<64, 32, 4, 5, 1, 64, 5, 64, _, _>(c, "edge K=1", ModelConfig::edge(1), edge1);
    let edge5 = Box::new(Edge5ShotWorkspace::new());
    bench_config::<64, 32, 4, 5, 5, 64, 25, 64, _, _>(c, "edge K=5", ModelConfig::edge(5), edge5);
}

fn main() {
    if let Err(mismatch) = flops::check_against_engine_docs() {
        eprintln!("FLOP count disagrees with the engine docs: {mismatch}");
        std::process::exit(1);
    }
    // About 6.5 s per benchmark, 12 benchmarks.
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    benches(&mut c);
    c.final_summary();
}
