//! The machine's f32 FMA peak, for scripts/bench.sh: the rate of fused multiply-adds when
//! nothing but independent FMA chains runs, with the widest vectors the build target has,
//! on one core and on every core at once. bench.sh prints each benchmark's GFLOP/s as a
//! fraction of it (one core for the single-threaded engine, all cores for the training step).
//!
//! bench.sh builds this single file with the benchmarks' CPU flags, twice on AVX-512
//! machines and keeps the faster: `rustc --edition 2021 -C opt-level=3 -C target-cpu=native`
//! (LLVM then usually prefers 256-bit vectors) and the same with
//! `-C target-feature=-prefer-256-bit` (512-bit vectors: twice the rate on Intel parts with
//! two 512-bit FMA units, the same on AMD Zen 4, whose 512-bit ops take both 256-bit pipes).
//! An argument sets the number of threads of the all-cores measurement (bench.sh passes
//! MATMUL_NUM_THREADS when it is set; default: every core available).
//! Prints one JSON object on stdout: `fma` (whether the target has fused multiply-add
//! instructions; without them `mul_add` is a library call and the figure is no peak),
//! `threads`, `core_gflops`, `machine_gflops` (best of 5 runs; 1 FMA = 2 FLOPs).
//!
//! Why it reaches the peak: the accumulator vectors are updated in turn, each update an FMA
//! that depends only on the same accumulator's previous value. A core with two FMA units of
//! latency 4-5 cycles needs 8-10 updates in flight to keep both busy; 12 or more chains cover
//! that and fit in the vector registers, so the loop is nothing but FMAs on registers (no
//! loads or stores). The values converge to c / (1 - m) and stay normal, so no denormal slow
//! path is taken. No `unsafe`: the vectors come from the compiler, not from intrinsics.

use std::hint::black_box;
use std::thread;
use std::time::Instant;

/// Independent accumulator vectors of the widest kind.
const CHAINS: usize = 12;
/// f32 lanes of the widest vector the target has.
const LANES: usize = if cfg!(target_feature = "avx512f") {
    16
} else if cfg!(target_feature = "avx") {
    8
} else {
    4
};
const WIDTH: usize = LANES * CHAINS;
/// Rounds per timed run: 2 * WIDTH * ROUNDS FLOPs, 64 ms at 100 GFLOP/s with AVX-512.
const ROUNDS: u64 = 1 << 24;
/// Timed runs per measurement; the fastest counts.
const RUNS: usize = 5;

/// `rounds` FMA updates of WIDTH accumulators, vectorised by the compiler (as CHAINS
/// 512-bit or 2 * CHAINS 256-bit vectors on AVX-512 targets, whichever width LLVM prefers;
/// both fit the 32 registers); returns their sum so nothing is optimised away.
fn chains(rounds: u64) -> f32 {
    let mut acc = [0.0f32; WIDTH];
    for (i, a) in acc.iter_mut().enumerate() {
        *a = black_box(i as f32 * 1e-3);
    }
    let (m, c) = (black_box(0.999f32), black_box(1e-3f32));
    for _ in 0..rounds {
        for a in acc.iter_mut() {
            *a = a.mul_add(m, c);
        }
    }
    acc.iter().sum()
}

/// Best FLOP rate, in GFLOP/s, of `threads` threads running the chains at once.
fn measure(threads: usize) -> f64 {
    let flops = 2.0 * (WIDTH as u64 * ROUNDS) as f64 * threads as f64;
    let mut best = f64::INFINITY;
    for _ in 0..RUNS {
        let start = Instant::now();
        thread::scope(|s| {
            let workers: Vec<_> = (0..threads)
                .map(|_| s.spawn(|| black_box(chains(black_box(ROUNDS)))))
                .collect();
            for w in workers {
                // A worker cannot panic; an error here would only lose its result.
                let _ = w.join();
            }
        });
        best = best.min(start.elapsed().as_secs_f64());
    }
    flops / best / 1e9
}

fn main() {
    let threads = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or_else(|| thread::available_parallelism().map_or(1, |n| n.get()));
    black_box(chains(ROUNDS / 8)); // warm up: clocks and the vector units' power state
    let core = measure(1);
    let machine = measure(threads);
    println!(
        "{{\"fma\": {}, \"threads\": {threads}, \"core_gflops\": {core:.2}, \"machine_gflops\": {machine:.2}}}",
        cfg!(target_feature = "fma")
    );
}
