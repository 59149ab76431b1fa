//! The training step's largest matrix products at the paper's sizes, timed with each of
//! `autodiff::sgemm`'s kernels that the CPU runs (AVX2 + FMA, AVX-512) and with
//! `matrixmultiply::sgemm` on the same operands, alternating; all results are checked to be
//! the same bits. Prints one table row per product: GFLOP/s (best of the runs) of each, and
//! each kernel's ratio to matrixmultiply.
//!
//! ```sh
//! cargo run --release -p autodiff --example sgemm-bench [-- runs [only products whose name contains this]]
//! ```
//!
//! Threads: `MATMUL_NUM_THREADS` (both libraries read it), every core by default. The shapes
//! are those of docs/training-profile.md: B·M·N = 24,000 (query, class) rows at 1-shot,
//! K·B·M·N = 60,000 at 5-shot; `NT` is an input gradient (`dY · Wᵀ`), `TN` a weight gradient
//! (`Xᵀ · dY`, `k` = the rows).

#![allow(unsafe_code)]

use std::time::Instant;

use autodiff::sgemm::{self, Kernel, Strided};

/// (what, m, k, n, layout of A and B).
const SHAPES: &[(&str, usize, usize, usize, &str)] = &[
    ("1-shot G1 forward", 24_000, 640, 256, "NN"),
    ("1-shot decoder forward", 24_000, 256, 640, "NN"),
    ("1-shot G1 input grad", 24_000, 256, 640, "NT"),
    ("1-shot G1 weight grad", 640, 24_000, 256, "TN"),
    ("1-shot decoder weight grad", 256, 24_000, 640, "TN"),
    ("5-shot G1 forward", 60_000, 640, 256, "NN"),
    ("5-shot G2 forward", 60_000, 256, 128, "NN"),
    ("5-shot G2 weight grad", 256, 60_000, 128, "TN"),
    // One task's query logits and their gradient (64 such products a 1-shot step).
    ("1-shot logits forward (one task)", 5, 640, 375, "NT"),
    ("1-shot logits input grad (one task)", 375, 5, 640, "TN"),
];

/// A `rows x cols` operand in the layout `N` (rows contiguous) or `T` (columns contiguous).
fn operand(data: &[f32], rows: usize, cols: usize, layout: u8) -> Strided {
    let (rs, cs) = if layout == b'N' {
        (cols as isize, 1)
    } else {
        (1, rows as isize)
    };
    Strided {
        ptr: data.as_ptr(),
        rs,
        cs,
    }
}

fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let only = std::env::args().nth(2).unwrap_or_default();
    let kernels: Vec<Kernel> = [Kernel::Avx2, Kernel::Avx512]
        .into_iter()
        .filter(|k| k.available())
        .collect();
    let threads = sgemm::threads();
    println!(
        "threads {threads}, sgemm's kernel for large products: {:?}, best of {runs} runs",
        sgemm::own_kernel()
    );
    print!("| product | m x k x n | layout | matrixmultiply GFLOP/s |");
    for kernel in &kernels {
        print!(" {kernel:?} GFLOP/s | ratio |");
    }
    println!(" `sgemm` (its choice) GFLOP/s | ratio |");
    println!(
        "|---|---|---|---:|{}",
        "---:|---:|".repeat(kernels.len() + 1)
    );
    for &(what, m, k, n, layout) in SHAPES.iter().filter(|s| s.0.contains(only.as_str())) {
        // Values in [-1, 1) from a fixed LCG: the timing does not depend on them.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut fill = |len: usize| -> Vec<f32> {
            (0..len)
                .map(|_| {
                    state = state
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1);
                    (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
                })
                .collect()
        };
        let (da, db) = (fill(m * k), fill(k * n));
        let a = operand(&da, m, k, layout.as_bytes()[0]);
        let b = operand(&db, k, n, layout.as_bytes()[1]);
        let mut mm = vec![0.0f32; m * n];
        // One output per kernel, then `sgemm`'s.
        let mut own = vec![vec![0.0f32; m * n]; kernels.len() + 1];
        let mut best_mm = f64::MAX;
        let mut best_own = vec![f64::MAX; kernels.len() + 1];
        for _ in 0..runs {
            let t = Instant::now();
            // SAFETY: `da` is m x k and `db` k x n in the layouts the strides say; `mm` is m x n.
            unsafe { sgemm::with_matrixmultiply(m, k, n, a, b, mm.as_mut_ptr()) };
            best_mm = best_mm.min(t.elapsed().as_secs_f64());
            for (i, &kernel) in kernels.iter().enumerate() {
                let t = Instant::now();
                // SAFETY: as above, `own[i]` is m x n.
                unsafe { sgemm::with_kernel(kernel, threads, m, k, n, a, b, own[i].as_mut_ptr()) };
                best_own[i] = best_own[i].min(t.elapsed().as_secs_f64());
            }
            let t = Instant::now();
            // SAFETY: as above.
            unsafe { sgemm::sgemm(m, k, n, a, b, own[kernels.len()].as_mut_ptr()) };
            best_own[kernels.len()] = best_own[kernels.len()].min(t.elapsed().as_secs_f64());
        }
        let names = kernels.iter().map(|k| format!("{k:?}"));
        for (i, kernel) in names.chain(["sgemm".to_string()]).enumerate() {
            if let Some(e) = (0..m * n).find(|&e| mm[e].to_bits() != own[i][e].to_bits()) {
                eprintln!(
                    "{what}, {kernel:?}: C[{e}] differs: {} vs {}",
                    mm[e], own[i][e]
                );
                std::process::exit(1);
            }
        }
        let gflop = 2.0 * (m * k * n) as f64 / 1e9;
        print!(
            "| {what} | {m} x {k} x {n} | {layout} | {:.1} |",
            gflop / best_mm
        );
        for best in &best_own {
            print!(" {:.1} | {:.2} |", gflop / best, best_mm / best);
        }
        println!();
    }
}
