//! The training step's matrix products, `C = A·B` over strided operands, computed exactly as
//! `matrixmultiply::sgemm` computes them, faster.
//!
//! **Why hand-written.** At the paper's sizes the products are 55-65% of a training step
//! (docs/training-profile.md): the generator's and the decoders' products over the
//! B·M·N = 24,000 (query, class) rows (60,000 at 5-shot) and their gradients, `k` up to
//! 24,000. A BLAS with another summation order would end bit-identity with every trajectory
//! trained so far (the issue asks for the same seed to give the same bits), so this kernel
//! keeps matrixmultiply's order to the last rounding and changes only how the work is
//! scheduled: the loop order, the register tile, the packing, prefetching `C`, no zeroing.
//!
//! **The order, what every `C[i][j]` is.** `k` is cut into consecutive blocks of
//! [`KC`] = 256 (the last one shorter). In each block an accumulator starts at `+0.0` and takes
//! `acc = fma(A[i][l], B[l][j], acc)` for `l` in order; the first block's accumulator is
//! `C[i][j]`, each later one is added to it (`C = C + acc`, one rounding). That is what
//! matrixmultiply 0.3's AVX2+FMA and AVX-512 kernels compute with `alpha = 1`, `beta = 0`
//! (`gemm_loop` splits `k` by its `S_KC` = 256 and passes `beta = 1` after the first block;
//! the kernels' epilogues are `fma(alpha, ab, beta·C)`), whatever `m` and `n` are and however
//! it threads. [`reference()`] is that definition in scalar code; the tests compare this kernel
//! and matrixmultiply with it bit for bit.
//!
//! **The schedule.** GotoBLAS/BLIS loops. `B` is packed into `NR`-column panels and `A` into
//! `MR`-row panels, `KC` deep, and a register tile runs each panel pair: 6 x 16 (twelve 8-lane
//! accumulators) with AVX2 + FMA, 12 x 32 (twenty-four 16-lane accumulators) with AVX-512
//! (`Avx2`, `Avx512`: their docs give the per-`l` instruction mix and why the chains cover
//! the FMA latency). Each tile asks for its rows of `C` (`_mm_prefetch`) before its FMAs, so
//! the read-modify-write of `C` at the end of a `k` block does not stall: that alone took the
//! `k` = 640 forward products from 106 to 129 GFLOP/s on Zen 3. When `k` has several blocks
//! and `B` packed whole is small (the forward products), each `MC`-row block of `C` takes all
//! its `k` blocks while it sits in L2, so `C` goes to memory once rather than once per block
//! (see `gemm_block`). The output is split over [`threads`] threads along the rows of `C` (or
//! its columns, when that packs less twice), each thread with its own packed buffers: no
//! synchronisation. Packed buffers start on a cache line; a panel row that lies contiguous in
//! the operand is copied whole. Products with a short `k` (a task's query-logit gradient,
//! `k` = 5) take [`with_short_k`] instead: no packing, each row of `C` written once.
//!
//! **Measured** by `cargo run --release -p autodiff --example sgemm-bench` (the step's large
//! shapes, each kernel against matrixmultiply on the same operands, alternating, all checked
//! to give the same bits). On the 2-core AMD EPYC (Zen 3, AVX2, FMA peak 91.6 GFLOP/s a core,
//! 184 for both) of docs/training-profile.md, the AVX2 kernel: 126-150 GFLOP/s on two
//! threads, 69-82% of the peak and 1.03-1.22x matrixmultiply; 63-82 GFLOP/s on one (69-90%),
//! 1.03-1.17x. On the 2-core AMD EPYC (Zen 5, AVX-512 on 512-bit pipes, FMA peak 244 GFLOP/s
//! a core, 483 for both), the AVX-512 kernel: 305-437 GFLOP/s on two threads (63-90%),
//! 1.16-1.55x matrixmultiply's AVX-512 kernel; 158-219 on one (65-90%), 1.03-1.44x; the AVX2
//! kernel there reaches 0.59-0.76x matrixmultiply, so AVX-512 CPUs use the 16-lane tile.
//! Tile and block sizes on Zen 5, two threads, GFLOP/s of the eight large products (noise
//! about 10%): 12 x 32 with `MC` = 144 rows 318-440, `MC` = 72 281-436, `MC` = 288 278-421;
//! 14 x 32 (`MC` = 140) 297-429 with edge tiles on every product; 8 x 32 128-390. 12 rows
//! divide the step's 24,000 and 60,000. Intel AVX-512 parts (one or two 512-bit FMA pipes,
//! 48 KB L1 since Ice Lake, 32 KB before: the 32 KB `B` micro-panel then competes with `A`)
//! have not been measured. The step's share is in docs/training-profile.md. **Tested
//! against** [`reference()`] and matrixmultiply, bit for bit, for every kernel the CPU runs,
//! on every layout (`NN`, `NT`, `TN`, `TT`, strided), edge tiles, short `k` and `k` around
//! the block size, one to three threads, and -0.0, infinities and NaN among the values
//! (`tests` below).
//!
//! **Where it runs.** On x86-64, checked at run time once ([`own_kernel`]): the AVX-512 tile
//! where the CPU has AVX-512F, the AVX2 tile where it has AVX2 and FMA, for products of at
//! least [`MIN_MACS`] multiply-adds with `k` at least [`MIN_K`]; shorter `k` of that size
//! takes [`with_short_k`] (AVX2 + FMA). Elsewhere, or for other products, the call goes to
//! matrixmultiply, which computes the same bits (its AVX2 and AVX-512 kernels alike; a CPU
//! with AVX but without FMA would round differently in both). So the choice of path never
//! changes a result.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;
use std::sync::OnceLock;

/// Length of the blocks `k` is summed in (matrixmultiply's `S_KC`): part of the result, not
/// a tuning knob.
pub const KC: usize = 256;
/// Columns of `B` packed at a time: up to 1024 x 256 x 4 B = 1 MB, read from L3 one 16 KB
/// micro-panel at a time.
const NC: usize = 1024;
/// The most floats `B` may take packed whole (4 MB): more would not stay in the L3 share of
/// one core while the rows of `C` stream past it.
const WHOLE_B_MAX: usize = 1 << 20;
/// Products smaller than this (multiply-adds) go to matrixmultiply: its per-call cost is
/// lower, and they are a negligible part of the step.
pub const MIN_MACS: usize = 1 << 18;
/// Products with a shorter `k` skip the register tiles: with a handful of FMAs per output the
/// packing and the stores are the work (a task's query-logit gradient, `k` = 5: 0.21-0.46x
/// matrixmultiply with the tiles in `sgemm-bench`). They go to [`with_short_k`].
pub const MIN_K: usize = 32;
/// Threads are only started for products of at least this many multiply-adds (about
/// 0.1 ms of work on one core; starting a thread costs some 10-20 us).
const THREAD_MACS: usize = 1 << 22;

/// A strided matrix operand: element `[i][j]` is at `ptr + i * rs + j * cs`.
#[derive(Clone, Copy, Debug)]
pub struct Strided {
    /// The element `[0][0]`.
    pub ptr: *const f32,
    /// Row stride, in elements.
    pub rs: isize,
    /// Column stride, in elements.
    pub cs: isize,
}

// SAFETY: `Strided` is a read-only view; the threads of one `sgemm` call read it while the
// caller's borrow of the data lives (see `sgemm`'s contract).
unsafe impl Send for Strided {}
unsafe impl Sync for Strided {}

/// The output `C` (`m x n`, rows `ldc` apart, columns contiguous), shared by the threads of a
/// call; each writes only its own block of it.
#[derive(Clone, Copy)]
struct Out {
    ptr: *mut f32,
    ldc: usize,
}

impl Out {
    /// The element `offset` of the output (a method, so that closures capture the `Out`).
    fn at(self, offset: usize) -> *mut f32 {
        self.ptr.wrapping_add(offset)
    }
}

// SAFETY: the threads of one call write disjoint blocks of `C` (`sgemm` splits it).
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

/// How many threads the products use: `MATMUL_NUM_THREADS` if set (as matrixmultiply reads
/// it), otherwise every core available; at least 1.
pub fn threads() -> usize {
    static THREADS: OnceLock<usize> = OnceLock::new();
    *THREADS.get_or_init(|| {
        std::env::var("MATMUL_NUM_THREADS")
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1)
    })
}

/// Runs `f(p)` for every part `p < parts` on the [`threads`] threads of a pool started once
/// (rayon's, of its own), returning when all have; the caller waits meanwhile. Part 0 runs
/// where the scope starts. Starting and joining a thread for each threaded op cost 48-200 us on the
/// 2-core Zen 5 VM, some 270 times a 1-shot step; a pool's threads are woken instead. Which
/// thread computes a part changes no result. If the pool cannot be started, each part gets a
/// thread of its own as before.
pub fn run_parts(parts: usize, f: impl Fn(usize) + Sync) {
    if parts <= 1 {
        (0..parts).for_each(&f);
        return;
    }
    static POOL: OnceLock<Option<rayon::ThreadPool>> = OnceLock::new();
    let pool = POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads())
            .thread_name(|i| format!("autodiff-{i}"))
            .build()
            .ok()
    });
    let f = &f;
    match pool {
        Some(pool) => pool.scope(|scope| {
            for p in 1..parts {
                scope.spawn(move |_| f(p));
            }
            f(0);
        }),
        None => std::thread::scope(|scope| {
            for p in 1..parts {
                scope.spawn(move || f(p));
            }
            f(0);
        }),
    }
}

/// Whether this CPU can run the AVX2 + FMA kernel (checked once).
pub fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static HAS: OnceLock<bool> = OnceLock::new();
        *HAS.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether this CPU can run the AVX-512 kernel (checked once; AVX-512F is all it uses).
pub fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static HAS: OnceLock<bool> = OnceLock::new();
        *HAS.get_or_init(|| has_avx2_fma() && is_x86_feature_detected!("avx512f"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// This module's kernels: one register tile per vector width. All compute the same bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// A 6 x 16 tile of 8-lane AVX2 + FMA vectors.
    Avx2,
    /// A 12 x 32 tile of 16-lane AVX-512 vectors.
    Avx512,
}

impl Kernel {
    /// Whether this CPU can run the kernel.
    pub fn available(self) -> bool {
        match self {
            Kernel::Avx2 => has_avx2_fma(),
            Kernel::Avx512 => has_avx512(),
        }
    }
}

/// The kernel [`sgemm`] uses for large products on this CPU: the widest one it can run, or
/// `None` (matrixmultiply does every product).
pub fn own_kernel() -> Option<Kernel> {
    [Kernel::Avx512, Kernel::Avx2]
        .into_iter()
        .find(|k| k.available())
}

/// `C = A·B`: `A` is `m x k`, `B` is `k x n`, `C` is `m x n` with rows `n` apart and columns
/// contiguous; every element of `C` is written (its old contents are never read, so it may
/// be uninitialised memory). The bits of each element are those of the order in the module
/// docs.
///
/// # Safety
/// For every `i < m`, `l < k`, `j < n`: `A[i][l]` and `B[l][j]` are readable `f32`s, `C[i][j]`
/// (at `c + i * n + j`) is writable, and `C` overlaps neither operand. Nothing else writes
/// `A` or `B` during the call.
pub unsafe fn sgemm(m: usize, k: usize, n: usize, a: Strided, b: Strided, c: *mut f32) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        for i in 0..m * n {
            // SAFETY: `C` holds `m * n` writable elements (contract).
            unsafe { c.add(i).write(0.0) };
        }
        return;
    }
    let macs = m.saturating_mul(n).saturating_mul(k);
    let threads = if macs >= THREAD_MACS { threads() } else { 1 };
    if let Some(kernel) = own_kernel().filter(|_| macs >= MIN_MACS && k >= MIN_K) {
        // SAFETY: the contract; the CPU runs `kernel` (`own_kernel`).
        unsafe { with_kernel(kernel, threads, m, k, n, a, b, c) };
        return;
    }
    if macs >= MIN_MACS && k < MIN_K && has_avx2_fma() {
        // SAFETY: the contract; the CPU has AVX2 and FMA.
        unsafe { with_short_k(threads, m, k, n, a, b, c) };
        return;
    }
    // SAFETY: the contract.
    unsafe { with_matrixmultiply(m, k, n, a, b, c) };
}

/// `C = A·B` (as [`sgemm`]) by this module's `kernel` on `threads` threads, whatever the
/// sizes: what [`sgemm`] calls for large products, and what the tests and `sgemm-bench` run
/// each kernel through. Does nothing when the CPU cannot run `kernel`
/// ([`Kernel::available`]).
///
/// # Safety
/// [`sgemm`]'s contract.
#[allow(clippy::too_many_arguments)]
pub unsafe fn with_kernel(
    kernel: Kernel,
    threads: usize,
    m: usize,
    k: usize,
    n: usize,
    a: Strided,
    b: Strided,
    c: *mut f32,
) {
    if m == 0 || n == 0 || !kernel.available() {
        return;
    }
    if k == 0 {
        // SAFETY: the contract (`sgemm` writes the zeros of an empty sum).
        unsafe { sgemm(m, k, n, a, b, c) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    {
        let c = Out { ptr: c, ldc: n };
        let threads = threads.max(1);
        // SAFETY: the contract; the CPU runs the kernel (checked above).
        unsafe {
            match kernel {
                Kernel::Avx2 => gemm_threaded::<Avx2>(m, k, n, a, b, c, threads),
                Kernel::Avx512 => gemm_threaded::<Avx512>(m, k, n, a, b, c, threads),
            }
        }
    }
}

/// `C = A·B` (as [`sgemm`]) for a short `k` (below [`MIN_K`], so one block of the order),
/// on `threads` threads: the products whose `C` is large next to their work, like a task's
/// query-logit gradient `[375 x 5]·[5 x 640]`. `B` is made row-contiguous (copied when it is
/// not, `k x n` floats), then each row of `C` is written once, 32 columns at a time:
/// `acc = fma(A[i][l], B[l][j..], acc)` from `+0.0` for `l < k` in order, so `B` stays in L1
/// and the stores are the work. Does nothing when the CPU lacks AVX2 and FMA or `k` is not
/// short.
///
/// # Safety
/// [`sgemm`]'s contract.
pub unsafe fn with_short_k(
    threads: usize,
    m: usize,
    k: usize,
    n: usize,
    a: Strided,
    b: Strided,
    c: *mut f32,
) {
    if m == 0 || n == 0 || k == 0 || k >= MIN_K || !has_avx2_fma() {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    {
        let copy;
        let b = if b.cs == 1 {
            b
        } else {
            // SAFETY: B[l][j] is readable for l < k, j < n (contract).
            copy = (0..k * n)
                .map(|e| unsafe {
                    *b.ptr
                        .offset((e / n) as isize * b.rs + (e % n) as isize * b.cs)
                })
                .collect::<Vec<f32>>();
            Strided {
                ptr: copy.as_ptr(),
                rs: n as isize,
                cs: 1,
            }
        };
        let c = Out { ptr: c, ldc: n };
        let parts = threads.clamp(1, m);
        if parts == 1 {
            // SAFETY: the contract; B's rows are contiguous; AVX2 and FMA (checked).
            unsafe { short_k_rows(0..m, k, n, a, b, c) };
            return;
        }
        run_parts(parts, |p| {
            let rows = m * p / parts..m * (p + 1) / parts;
            // SAFETY: as above; the parts' rows of C are disjoint.
            unsafe { short_k_rows(rows, k, n, a, b, c) }
        });
    }
}

/// The rows `rows` of [`with_short_k`]'s product, `B` with contiguous rows.
///
/// # Safety
/// AVX2 and FMA are available; [`sgemm`]'s contract; `k < MIN_K`; `b.cs == 1`; no other
/// thread writes these rows of `C`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn short_k_rows(
    rows: std::ops::Range<usize>,
    k: usize,
    n: usize,
    a: Strided,
    b: Strided,
    c: Out,
) {
    let mut ar = [0.0f32; MIN_K];
    for i in rows {
        for (l, v) in ar.iter_mut().enumerate().take(k) {
            // SAFETY: A[i][l] is readable (contract).
            *v = unsafe { *a.ptr.offset(i as isize * a.rs + l as isize * a.cs) };
        }
        let cr = c.at(i * c.ldc);
        let mut j = 0;
        // SAFETY (every load and store below): j + 32 <= n, j + 8 <= n or j < n as the loop
        // says: B[l][j..] and C[i][j..] are in the operands.
        unsafe {
            while j + 32 <= n {
                let mut acc = [_mm256_setzero_ps(); 4];
                for (l, &al) in ar.iter().enumerate().take(k) {
                    let av = _mm256_set1_ps(al);
                    let bl = b.ptr.offset(l as isize * b.rs).add(j);
                    for (q, acc) in acc.iter_mut().enumerate() {
                        *acc = _mm256_fmadd_ps(av, _mm256_loadu_ps(bl.add(8 * q)), *acc);
                    }
                }
                for (q, acc) in acc.iter().enumerate() {
                    _mm256_storeu_ps(cr.add(j + 8 * q), *acc);
                }
                j += 32;
            }
            while j + 8 <= n {
                let mut acc = _mm256_setzero_ps();
                for (l, &al) in ar.iter().enumerate().take(k) {
                    let bl = b.ptr.offset(l as isize * b.rs).add(j);
                    acc = _mm256_fmadd_ps(_mm256_set1_ps(al), _mm256_loadu_ps(bl), acc);
                }
                _mm256_storeu_ps(cr.add(j), acc);
                j += 8;
            }
            while j < n {
                let mut acc = 0.0f32;
                for (l, &al) in ar.iter().enumerate().take(k) {
                    acc = al.mul_add(*b.ptr.offset(l as isize * b.rs).add(j), acc);
                }
                *cr.add(j) = acc;
                j += 1;
            }
        }
    }
}

/// `C = A·B` by `matrixmultiply::sgemm` (`alpha = 1`, `beta = 0`, `C` as in [`sgemm`]): the
/// fallback of [`sgemm`], and what the tests and `sgemm-bench` compare this kernel with.
///
/// # Safety
/// [`sgemm`]'s contract (matrixmultiply's, with `beta = 0`: `C` is not read).
pub unsafe fn with_matrixmultiply(
    m: usize,
    k: usize,
    n: usize,
    a: Strided,
    b: Strided,
    c: *mut f32,
) {
    // SAFETY: the contract.
    unsafe {
        matrixmultiply::sgemm(
            m, k, n, 1.0, a.ptr, a.rs, a.cs, b.ptr, b.rs, b.cs, 0.0, c, n as isize, 1,
        )
    };
}

/// `batch` independent products of the same shape, each as [`sgemm`]: product `i` multiplies
/// the operands `operands(i)` into the `m x n` block at `c + i * m * n`. A product too small to
/// be split over the threads by itself (under `THREAD_MACS` multiply-adds, e.g. one task's
/// query logits, `[5 x 640]·[640 x 375]`) runs on one thread, and the products are shared out
/// between the [`threads`] in consecutive runs; larger ones run one after another, each
/// threaded. Each product is computed exactly as alone.
///
/// # Safety
/// [`sgemm`]'s contract for every product `i < batch`, and the `batch` output blocks are
/// inside one writable allocation that overlaps no operand.
pub unsafe fn sgemm_batched(
    batch: usize,
    m: usize,
    k: usize,
    n: usize,
    operands: impl Fn(usize) -> (Strided, Strided) + Sync,
    c: *mut f32,
) {
    let macs = m.saturating_mul(n).saturating_mul(k);
    let parts = threads().min(batch);
    if parts <= 1 || macs >= THREAD_MACS {
        for i in 0..batch {
            let (a, b) = operands(i);
            // SAFETY: product i's contract (this function's).
            unsafe { sgemm(m, k, n, a, b, c.wrapping_add(i * m * n)) };
        }
        return;
    }
    let out = Out { ptr: c, ldc: n };
    run_parts(parts, |p| {
        for i in batch * p / parts..batch * (p + 1) / parts {
            let (a, b) = operands(i);
            // SAFETY: product i's contract; each product's block is written only by the one
            // part whose run holds `i`.
            unsafe { sgemm(m, k, n, a, b, out.at(i * m * n)) };
        }
    });
}

/// The product's definition in scalar code (the module docs' order), for the tests and for
/// anyone checking a kernel: `C` row-major, `m x n`.
pub fn reference(
    m: usize,
    k: usize,
    n: usize,
    a: &dyn Fn(usize, usize) -> f32,
    b: &dyn Fn(usize, usize) -> f32,
) -> Vec<f32> {
    let mut c = vec![0.0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut total = 0.0f32;
            for (block, l0) in (0..k).step_by(KC).enumerate() {
                let mut acc = 0.0f32;
                for l in l0..(l0 + KC).min(k) {
                    acc = a(i, l).mul_add(b(l, j), acc);
                }
                total = if block == 0 { acc } else { total + acc };
            }
            c[i * n + j] = total;
        }
    }
    c
}

/// Splits `C` over `threads` threads and runs [`gemm_block`] on each part.
///
/// # Safety
/// The CPU runs `T`'s kernel; [`sgemm`]'s contract, `m, n, k > 0`.
#[cfg(target_arch = "x86_64")]
unsafe fn gemm_threaded<T: Tile>(
    m: usize,
    k: usize,
    n: usize,
    a: Strided,
    b: Strided,
    c: Out,
    threads: usize,
) {
    // Split the dimension whose split repacks less: by rows, every thread packs all of B
    // (k x n); by columns, all of A (m x k). Parts are whole register tiles.
    let by_rows = m * k >= k * n;
    let (len, unit) = if by_rows { (m, T::MR) } else { (n, T::NR) };
    let tiles = len.div_ceil(unit);
    let parts = threads.min(tiles).max(1);
    if parts == 1 {
        // SAFETY: forwarded contract; the whole of C.
        unsafe { gemm_block::<T>(0..m, 0..n, k, a, b, c) };
        return;
    }
    run_parts(parts, |p| {
        let lo = (tiles * p / parts * unit).min(len);
        let hi = (tiles * (p + 1) / parts * unit).min(len);
        let (rows, cols) = if by_rows {
            (lo..hi, 0..n)
        } else {
            (0..m, lo..hi)
        };
        // SAFETY: forwarded contract; the parts are disjoint blocks of C.
        unsafe { gemm_block::<T>(rows, cols, k, a, b, c) }
    });
}

/// Computes the block `C[rows][cols]` on this thread: the loops of the module docs, with
/// this thread's packed buffers.
///
/// Two loop orders, the same arithmetic. When `k` has several blocks and all of `B`'s
/// packed columns fit in [`WHOLE_B_MAX`] floats (the forward products, `k` = 640), `B` is
/// packed whole first and each `T::MC`-row block of `C` takes all its `k` blocks in turn while
/// it sits in L2: `C` goes to memory once instead of once per `k` block. Otherwise (the
/// weight gradients, `k` = 24,000, whose `C` is small) `B` is packed one `k` block at a time.
///
/// # Safety
/// The CPU runs `T`'s kernel; [`sgemm`]'s contract for the whole product; no other thread
/// writes this block of `C`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gemm_block<T: Tile>(
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
    k: usize,
    a: Strided,
    b: Strided,
    c: Out,
) {
    let (mr, nr) = (T::MR, T::NR);
    let nc_max = NC.min(cols.len().div_ceil(nr) * nr);
    let mc_max = T::MC.min(rows.len().div_ceil(mr) * mr);
    let blocks = k.div_ceil(KC);
    let whole_b = blocks > 1 && k * nc_max <= WHOLE_B_MAX;
    let (mut b_buf, mut a_buf) = (Vec::new(), Vec::new());
    let packed_b = aligned(&mut b_buf, if whole_b { k * nc_max } else { KC * nc_max });
    let packed_a = aligned(&mut a_buf, KC * mc_max);
    // The tiles of rows i0..i0+mc, columns j0..j0+nc, for `k` block `block` (packed A and B).
    // `next` is the block of A packed after this one (rows, then its `k` range): while the
    // first column of tiles runs, each tile asks for its share of it (see `prefetch_a`).
    let tiles = |packed_a: &[f32],
                 packed_b: &[f32],
                 i0: usize,
                 mc: usize,
                 j0: usize,
                 nc: usize,
                 block: usize,
                 next: Option<(std::ops::Range<usize>, std::ops::Range<usize>)>| {
        let kc = KC.min(k - block * KC);
        for jp in 0..nc.div_ceil(nr) {
            let bp = packed_b[jp * nr * kc..].as_ptr();
            let j = j0 + jp * nr;
            let tile_cols = nr.min(j0 + nc - j);
            for ip in 0..mc.div_ceil(mr) {
                let ap = packed_a[ip * mr * kc..].as_ptr();
                let i = i0 + ip * mr;
                let tile_rows = mr.min(i0 + mc - i);
                if let (0, Some((rows, ls))) = (jp, &next) {
                    let start = (rows.start + ip * mr).min(rows.end);
                    prefetch_a(a, start..(start + mr).min(rows.end), ls.clone());
                }
                // SAFETY: the packed panels hold kc x MR and kc x NR values; the tile
                // C[i.., j..] (tile_rows x tile_cols) lies in this thread's block; the CPU
                // runs the kernel.
                unsafe {
                    T::kernel(
                        kc,
                        ap,
                        bp,
                        c.ptr.add(i * c.ldc + j),
                        c.ldc,
                        tile_rows,
                        tile_cols,
                        block == 0,
                    )
                };
            }
        }
    };
    for j0 in cols.clone().step_by(NC) {
        let nc = NC.min(cols.end - j0);
        let panels = nc.div_ceil(nr) * nr;
        if whole_b {
            // Block `p` of B at `p * KC * panels`.
            for (block, l0) in (0..k).step_by(KC).enumerate() {
                let kc = KC.min(k - l0);
                // SAFETY: rows l0..l0+kc < k, columns j0..j0+nc < n of B (contract).
                unsafe { pack_b::<T>(&mut packed_b[block * KC * panels..], b, l0, kc, j0, nc) };
            }
            for i0 in rows.clone().step_by(T::MC) {
                let mc = T::MC.min(rows.end - i0);
                for (block, l0) in (0..k).step_by(KC).enumerate() {
                    let kc = KC.min(k - l0);
                    // SAFETY: rows i0..i0+mc < m, columns l0..l0+kc < k of A (contract).
                    unsafe { pack_a::<T>(packed_a, a, i0, mc, l0, kc) };
                    let next = if l0 + KC < k {
                        Some((i0..i0 + mc, l0 + KC..k.min(l0 + 2 * KC)))
                    } else {
                        (i0 + mc < rows.end)
                            .then(|| (i0 + mc..rows.end.min(i0 + mc + T::MC), 0..k.min(KC)))
                    };
                    tiles(
                        packed_a,
                        &packed_b[block * KC * panels..],
                        i0,
                        mc,
                        j0,
                        nc,
                        block,
                        next,
                    );
                }
            }
        } else {
            for (block, l0) in (0..k).step_by(KC).enumerate() {
                let kc = KC.min(k - l0);
                // SAFETY: rows l0..l0+kc < k, columns j0..j0+nc < n of B (contract).
                unsafe { pack_b::<T>(packed_b, b, l0, kc, j0, nc) };
                for i0 in rows.clone().step_by(T::MC) {
                    let mc = T::MC.min(rows.end - i0);
                    // SAFETY: rows i0..i0+mc < m, columns l0..l0+kc < k of A (contract).
                    unsafe { pack_a::<T>(packed_a, a, i0, mc, l0, kc) };
                    let next = (i0 + mc < rows.end)
                        .then(|| (i0 + mc..rows.end.min(i0 + mc + T::MC), l0..l0 + kc));
                    tiles(packed_a, packed_b, i0, mc, j0, nc, block, next);
                }
            }
        }
    }
}

/// Asks for `A[rows][ls]` (a coming packing's share) to be brought into L2, one
/// prefetch per cache line, when the rows of `A` are contiguous (the forward products and the
/// input gradients, where `A` is the activations, read once from memory): packing then finds
/// it there instead of stalling on memory with no FMAs to overlap. Other layouts: nothing.
/// A prefetch reads nothing into the computation.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn prefetch_a(a: Strided, rows: std::ops::Range<usize>, ls: std::ops::Range<usize>) {
    if a.cs != 1 || ls.is_empty() {
        return;
    }
    for r in rows {
        let row = a.ptr.wrapping_offset(r as isize * a.rs);
        let (first, last) = (row.wrapping_add(ls.start), row.wrapping_add(ls.end - 1));
        let mut line = first as *const i8;
        while line <= last as *const i8 {
            // SAFETY: a prefetch of any address is harmless (it never faults).
            unsafe { _mm_prefetch::<_MM_HINT_T1>(line) };
            line = line.wrapping_add(64);
        }
        // SAFETY: as above. The last line, if the row's start was not on a line boundary.
        unsafe { _mm_prefetch::<_MM_HINT_T1>(last as *const i8) };
    }
}

/// `len` zeros in `buf`, starting on a 64-byte boundary: every 16-float panel row then lies
/// in one cache line (a misaligned load that straddles two lines costs a second load-port
/// cycle: half of the AVX2 kernel's B loads, all of the AVX-512 kernel's).
fn aligned(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
    buf.resize(len + 16, 0.0);
    let skip = buf.as_ptr().align_offset(64).min(16);
    &mut buf[skip..skip + len]
}

/// Packs `B[l0..l0+kc][j0..j0+nc]` into `T::NR`-column panels, each `kc` rows of `NR` values
/// (columns past `nc` are zero: they only reach tile lanes that are never stored).
///
/// # Safety
/// The block is readable through `b`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline(never)]
unsafe fn pack_b<T: Tile>(dst: &mut [f32], b: Strided, l0: usize, kc: usize, j0: usize, nc: usize) {
    // SAFETY: forwarded.
    unsafe { T::pack_nr(dst, b, l0, kc, j0, nc) }
}

/// Packs `A[i0..i0+mc][l0..l0+kc]` into `T::MR`-row panels, each `kc` columns of `MR` values
/// (rows past `mc` are zero): the panels of `Aᵀ` (`k x m`), as [`pack_b`] packs `B`'s.
///
/// # Safety
/// The block is readable through `a`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline(never)]
unsafe fn pack_a<T: Tile>(dst: &mut [f32], a: Strided, i0: usize, mc: usize, l0: usize, kc: usize) {
    let at = Strided {
        ptr: a.ptr,
        rs: a.cs,
        cs: a.rs,
    };
    // SAFETY: forwarded (`at` is the same elements, transposed).
    unsafe { T::pack_mr(dst, at, l0, kc, i0, mc) }
}

/// Packs `X[l0..l0+kc][j0..j0+nc]` of a `k x cols` operand into `W`-column panels, each `kc`
/// rows of `W` values, columns past `nc` zero. A panel row of `W` contiguous values is copied
/// whole. When instead the panel's columns are contiguous (`A` stored row by row, `B` = `Wᵀ`
/// of a row-major `W`: the forward products and the input gradients), blocks of 4 columns by
/// 8 rows are loaded as four 8-lane vectors and transposed in registers (`transpose_4x8`;
/// the AVX2 tile's 6-column panels of `A` take their last 2 columns through `transpose_2x8`):
/// one vector load per 8 values and one 4-value store per row, where reading the `W` columns
/// side by side took a load and a store per value, and on the Zen 5 machine 20% of the
/// products' time (`perf`). Other layouts, and the rows and columns left over, are read
/// value by value, the `W` columns side by side (`W` sequential streams when they are
/// contiguous).
///
/// # Safety
/// The block is readable through `x`; the CPU has AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn pack_panels<const W: usize>(
    dst: &mut [f32],
    x: Strided,
    l0: usize,
    kc: usize,
    j0: usize,
    nc: usize,
) {
    for (jp, panel) in dst[..nc.div_ceil(W) * W * kc]
        .chunks_exact_mut(W * kc)
        .enumerate()
    {
        let j = j0 + jp * W;
        let width = W.min(j0 + nc - j);
        // Rows (of the panel) already packed by the transposes.
        let mut done = 0;
        if width == W && x.rs == 1 && x.cs != 1 && W.is_multiple_of(2) {
            done = kc / 8 * 8;
            for l in (0..done).step_by(8) {
                for t in (0..W / 4 * 4).step_by(4) {
                    // SAFETY: X[l0 + l..l0 + l + 8][j + t..j + t + 4] is in the block, each
                    // column's 8 values contiguous (x.rs == 1); the panel holds rows l..l + 8.
                    unsafe {
                        let src = x.ptr.offset((l0 + l) as isize + (j + t) as isize * x.cs);
                        transpose_4x8(src, x.cs, panel.as_mut_ptr().add(l * W + t), W);
                    }
                }
                if W % 4 == 2 {
                    let t = W - 2;
                    // SAFETY: as above, for the last two columns.
                    unsafe {
                        let src = x.ptr.offset((l0 + l) as isize + (j + t) as isize * x.cs);
                        transpose_2x8(src, x.cs, panel.as_mut_ptr().add(l * W + t), W);
                    }
                }
            }
        }
        for (l, row) in panel.chunks_exact_mut(W).enumerate().skip(done) {
            // SAFETY (every read below): X[l0 + l][j + t] for t < width is in the block.
            let src = unsafe { x.ptr.offset((l0 + l) as isize * x.rs + j as isize * x.cs) };
            if width == W && x.cs == 1 {
                // SAFETY: the W values X[l0 + l][j..j + W] are contiguous and in the block.
                row.copy_from_slice(unsafe { std::slice::from_raw_parts(src, W) });
            } else {
                for (t, v) in row.iter_mut().enumerate() {
                    // SAFETY: t < width: in the block.
                    *v = if t < width {
                        unsafe { *src.offset(t as isize * x.cs) }
                    } else {
                        0.0
                    };
                }
            }
        }
    }
}

/// Four columns of 8 contiguous values each (`src + t * cs`, `t < 4`) written as 8 rows of 4
/// (`dst + l * ld`, `l < 8`): the values move, none is computed.
///
/// # Safety
/// The 32 source values are readable, the 8 x 4 destination values writable; AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn transpose_4x8(src: *const f32, cs: isize, dst: *mut f32, ld: usize) {
    // SAFETY: the contract.
    unsafe {
        let columns: [__m256; 4] =
            std::array::from_fn(|t| _mm256_loadu_ps(src.offset(t as isize * cs)));
        for (r, v) in interleave4(columns).into_iter().enumerate() {
            _mm_storeu_ps(dst.add(r * ld), _mm256_castps256_ps128(v));
            _mm_storeu_ps(dst.add((r + 4) * ld), _mm256_extractf128_ps::<1>(v));
        }
    }
}

/// Two columns of 8 contiguous values each (`src`, `src + cs`) written as 8 rows of 2
/// (`dst + l * ld`, `l < 8`): the last two columns of the AVX2 tile's 6-row panels of `A`
/// (the first four go through [`transpose_4x8`]). The values move, none is computed.
///
/// # Safety
/// The 16 source values are readable, the 8 x 2 destination values writable; AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn transpose_2x8(src: *const f32, cs: isize, dst: *mut f32, ld: usize) {
    // SAFETY: the contract; every store writes 8 bytes, unaligned.
    unsafe {
        let (c0, c1) = (_mm256_loadu_ps(src), _mm256_loadu_ps(src.offset(cs)));
        // lo = c0[0] c1[0] c0[1] c1[1] | c0[4] c1[4] c0[5] c1[5]; hi: lanes 2, 3 | 6, 7.
        let (lo, hi) = (_mm256_unpacklo_ps(c0, c1), _mm256_unpackhi_ps(c0, c1));
        let halves = [
            _mm256_castps256_ps128(lo),
            _mm256_castps256_ps128(hi),
            _mm256_extractf128_ps::<1>(lo),
            _mm256_extractf128_ps::<1>(hi),
        ];
        for (q, h) in halves.into_iter().enumerate() {
            // Rows 2q and 2q + 1: the half's low and high pairs.
            let v = _mm_castps_si128(h);
            _mm_storel_epi64(dst.add(2 * q * ld).cast(), v);
            _mm_storel_epi64(dst.add((2 * q + 1) * ld).cast(), _mm_unpackhi_epi64(v, v));
        }
    }
}

/// The 4 x 4 transposes of four 8-lane vectors, per 128-bit half: lane `t` of half `h` of
/// result `r` is lane `4h + r` of `v[t]`. With `v` four columns of 8 values, result `r` holds
/// row `r` (low half) and row `r + 4` (high half). Shared by the packers ([`pack_panels`]) and
/// the row sums (`kernels::sum_8_rows`, which joins two of them into an 8 x 8 transpose).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
pub(crate) fn interleave4(v: [__m256; 4]) -> [__m256; 4] {
    // Interleave 0/1 and 2/3: t0 = v0[0] v1[0] v0[1] v1[1], t1 = v0[2] v1[2] v0[3] v1[3], ...
    let t0 = _mm256_unpacklo_ps(v[0], v[1]);
    let t1 = _mm256_unpackhi_ps(v[0], v[1]);
    let t2 = _mm256_unpacklo_ps(v[2], v[3]);
    let t3 = _mm256_unpackhi_ps(v[2], v[3]);
    // ... then take a pair from each: r = v0[r] v1[r] v2[r] v3[r].
    [
        _mm256_shuffle_ps::<0x44>(t0, t2),
        _mm256_shuffle_ps::<0xEE>(t0, t2),
        _mm256_shuffle_ps::<0x44>(t1, t3),
        _mm256_shuffle_ps::<0xEE>(t1, t3),
    ]
}

/// A register tile and its kernel: `MR` rows of `C` by `NR` columns, over one `k` block.
///
/// # Safety
/// `kernel` may only be called where the CPU has the tile's instruction set.
#[cfg(target_arch = "x86_64")]
trait Tile {
    /// Rows of the register tile (of `A`'s packed panels).
    const MR: usize;
    /// Columns of the register tile (of `B`'s packed panels).
    const NR: usize;
    /// Rows of `A` packed at a time (a block that stays in L2 next to `B`'s micro-panel).
    const MC: usize;

    /// `acc = fma(a, b, acc)` from `+0.0` for each `l < kc` in order, then `C = acc`
    /// (`first`) or `C = C + acc`, for the `rows x cols` corner of the tile that lies in `C`.
    ///
    /// # Safety
    /// The CPU has the tile's instruction set; `a` holds `kc * MR` values, `b` `kc * NR`;
    /// `C[r][t]` at `c + r * ldc + t` is writable (and initialised unless `first`) for
    /// `r < rows`, `t < cols`.
    #[allow(clippy::too_many_arguments)]
    unsafe fn kernel(
        kc: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        rows: usize,
        cols: usize,
        first: bool,
    );

    /// [`pack_panels`] with `W` = `NR`.
    ///
    /// # Safety
    /// As [`pack_panels`].
    unsafe fn pack_nr(dst: &mut [f32], x: Strided, l0: usize, kc: usize, j0: usize, nc: usize);

    /// [`pack_panels`] with `W` = `MR`.
    ///
    /// # Safety
    /// As [`pack_panels`].
    unsafe fn pack_mr(dst: &mut [f32], x: Strided, l0: usize, kc: usize, j0: usize, nc: usize);
}

/// Asks for the `rows` rows of a tile of `C`, `bytes` long each, one prefetch per cache line
/// the row may touch (a row need not start on a line): they arrive while the FMAs run instead
/// of stalling the stores at the end. A prefetch reads nothing into the computation.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn prefetch_rows(c: *mut f32, ldc: usize, rows: usize, bytes: usize) {
    for r in 0..rows {
        let row = c.wrapping_add(r * ldc) as *const i8;
        let mut offset = 0;
        while offset < bytes + 63 {
            // SAFETY: a prefetch of any address is harmless (it never faults).
            unsafe { _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(offset.min(bytes - 4))) };
            offset += 64;
        }
    }
}

/// The AVX2 + FMA tile: 6 x 16, twelve 8-lane accumulators. Per `l`: two loads of `B`, six
/// broadcasts of `A`, twelve FMAs, no spill (checked in the disassembly). Twelve independent
/// chains cover the FMA latency of two pipes (4 cycles on Zen 3 and on Intel). The 16 KB `B`
/// micro-panel stays in L1 while the 72 KB `A` block (`MC` = 72 rows) comes from L2.
#[cfg(target_arch = "x86_64")]
struct Avx2;

#[cfg(target_arch = "x86_64")]
impl Tile for Avx2 {
    const MR: usize = 6;
    const NR: usize = 16;
    const MC: usize = 72;

    #[target_feature(enable = "avx2,fma")]
    #[inline(never)]
    unsafe fn kernel(
        kc: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        rows: usize,
        cols: usize,
        first: bool,
    ) {
        const MR: usize = Avx2::MR;
        const NR: usize = Avx2::NR;
        prefetch_rows(c, ldc, rows, NR * 4);
        let mut acc = [[_mm256_setzero_ps(); 2]; MR];
        for l in 0..kc {
            // SAFETY: l < kc: inside the panels.
            unsafe {
                let b0 = _mm256_loadu_ps(b.add(l * NR));
                let b1 = _mm256_loadu_ps(b.add(l * NR + 8));
                let al = a.add(l * MR);
                for (r, acc) in acc.iter_mut().enumerate() {
                    let av = _mm256_broadcast_ss(&*al.add(r));
                    acc[0] = _mm256_fmadd_ps(av, b0, acc[0]);
                    acc[1] = _mm256_fmadd_ps(av, b1, acc[1]);
                }
            }
        }
        if rows == MR && cols == NR {
            for (r, acc) in acc.iter().enumerate() {
                // SAFETY: the full tile is in C (contract).
                unsafe {
                    let cr = c.add(r * ldc);
                    if first {
                        _mm256_storeu_ps(cr, acc[0]);
                        _mm256_storeu_ps(cr.add(8), acc[1]);
                    } else {
                        _mm256_storeu_ps(cr, _mm256_add_ps(_mm256_loadu_ps(cr), acc[0]));
                        _mm256_storeu_ps(
                            cr.add(8),
                            _mm256_add_ps(_mm256_loadu_ps(cr.add(8)), acc[1]),
                        );
                    }
                }
            }
        } else {
            let mut tile = [0.0f32; NR];
            for (r, acc) in acc.iter().enumerate().take(rows) {
                // SAFETY: `tile` holds NR values; the row's first `cols` elements are in C.
                unsafe {
                    _mm256_storeu_ps(tile.as_mut_ptr(), acc[0]);
                    _mm256_storeu_ps(tile.as_mut_ptr().add(8), acc[1]);
                    let cr = c.add(r * ldc);
                    for (t, &v) in tile.iter().enumerate().take(cols) {
                        let d = cr.add(t);
                        *d = if first { v } else { *d + v };
                    }
                }
            }
        }
    }

    #[inline(always)]
    unsafe fn pack_nr(dst: &mut [f32], x: Strided, l0: usize, kc: usize, j0: usize, nc: usize) {
        // SAFETY: forwarded.
        unsafe { pack_panels::<{ Avx2::NR }>(dst, x, l0, kc, j0, nc) }
    }

    #[inline(always)]
    unsafe fn pack_mr(dst: &mut [f32], x: Strided, l0: usize, kc: usize, j0: usize, nc: usize) {
        // SAFETY: forwarded.
        unsafe { pack_panels::<{ Avx2::MR }>(dst, x, l0, kc, j0, nc) }
    }
}

/// The AVX-512 tile: 12 x 32, twenty-four 16-lane accumulators. Per `l`: two loads of `B`,
/// twelve broadcast loads of `A`, twenty-four FMAs, no spill (checked in the disassembly:
/// the loop is unrolled twice, 48 FMAs, 30 of the 32 vector registers); 24 chains cover the
/// FMA latency of two 16-lane pipes (4 cycles: 8 needed). The 32 KB `B` micro-panel
/// stays in L1 (48 KB on Zen 4/5, Intel since Ice Lake) while the `A` block comes from L2.
/// Edge tiles store through lane masks.
#[cfg(target_arch = "x86_64")]
struct Avx512;

#[cfg(target_arch = "x86_64")]
impl Tile for Avx512 {
    const MR: usize = 12;
    const NR: usize = 32;
    const MC: usize = 144;

    #[target_feature(enable = "avx512f")]
    #[inline(never)]
    unsafe fn kernel(
        kc: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        rows: usize,
        cols: usize,
        first: bool,
    ) {
        const MR: usize = Avx512::MR;
        const NR: usize = Avx512::NR;
        prefetch_rows(c, ldc, rows, NR * 4);
        let mut acc = [[_mm512_setzero_ps(); 2]; MR];
        for l in 0..kc {
            // SAFETY: l < kc: inside the panels.
            unsafe {
                let b0 = _mm512_loadu_ps(b.add(l * NR));
                let b1 = _mm512_loadu_ps(b.add(l * NR + 16));
                let al = a.add(l * MR);
                for (r, acc) in acc.iter_mut().enumerate() {
                    let av = _mm512_set1_ps(*al.add(r));
                    acc[0] = _mm512_fmadd_ps(av, b0, acc[0]);
                    acc[1] = _mm512_fmadd_ps(av, b1, acc[1]);
                }
            }
        }
        // Lane masks of the columns in C: all 16 and 16 for a full tile.
        let mask = |from: usize| -> __mmask16 {
            let lanes = cols.saturating_sub(from).min(16);
            ((1u32 << lanes) - 1) as __mmask16
        };
        let (m0, m1) = (mask(0), mask(16));
        for (r, acc) in acc.iter().enumerate().take(rows) {
            // SAFETY: the row's first `cols` elements are in C (contract); the masked loads
            // and stores touch no other element (masked-off lanes do not fault).
            unsafe {
                let cr = c.add(r * ldc);
                if first {
                    _mm512_mask_storeu_ps(cr, m0, acc[0]);
                    _mm512_mask_storeu_ps(cr.add(16), m1, acc[1]);
                } else {
                    let c0 = _mm512_maskz_loadu_ps(m0, cr);
                    let c1 = _mm512_maskz_loadu_ps(m1, cr.add(16));
                    _mm512_mask_storeu_ps(cr, m0, _mm512_add_ps(c0, acc[0]));
                    _mm512_mask_storeu_ps(cr.add(16), m1, _mm512_add_ps(c1, acc[1]));
                }
            }
        }
    }

    #[inline(always)]
    unsafe fn pack_nr(dst: &mut [f32], x: Strided, l0: usize, kc: usize, j0: usize, nc: usize) {
        // SAFETY: forwarded.
        unsafe { pack_panels::<{ Avx512::NR }>(dst, x, l0, kc, j0, nc) }
    }

    #[inline(always)]
    unsafe fn pack_mr(dst: &mut [f32], x: Strided, l0: usize, kc: usize, j0: usize, nc: usize) {
        // SAFETY: forwarded.
        unsafe { pack_panels::<{ Avx512::MR }>(dst, x, l0, kc, j0, nc) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_xoshiro::Xoshiro256PlusPlus;

    /// Values whose sums depend on the order: magnitudes over 2^-20..2^20 with both signs, and
    /// (with `special`) -0.0, infinities and NaN among them.
    fn values(len: usize, rng: &mut Xoshiro256PlusPlus, special: bool) -> Vec<f32> {
        (0..len)
            .map(|_| {
                if special && rng.gen_bool(0.01) {
                    [-0.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN][rng.gen_range(0..4)]
                } else {
                    let m: f32 = rng.gen_range(-1.0..1.0);
                    m * 2f32.powi(rng.gen_range(-20..20))
                }
            })
            .collect()
    }

    /// A `rows x cols` matrix stored in `data` with the given layout; returns the operand.
    /// `N`: rows contiguous; `T`: columns contiguous; `S`: both strided (padding between).
    fn stored(
        data: &mut Vec<f32>,
        rows: usize,
        cols: usize,
        layout: char,
        rng: &mut Xoshiro256PlusPlus,
        special: bool,
    ) -> (isize, isize) {
        let (rs, cs, len) = match layout {
            'N' => (cols as isize, 1, rows * cols),
            'T' => (1, rows as isize, rows * cols),
            _ => (2 * cols as isize + 3, 2, (2 * cols + 3) * rows),
        };
        *data = values(len, rng, special);
        (rs, cs)
    }

    fn same_bits(x: f32, y: f32) -> bool {
        x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan())
    }

    /// Runs one product every way: the reference, matrixmultiply, each of this module's
    /// kernels that the CPU runs on 1..=3 threads, and the dispatching `sgemm`; all must agree
    /// bit for bit.
    fn check(m: usize, k: usize, n: usize, layouts: &str, seed: u64, special: bool) {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let (mut da, mut db) = (Vec::new(), Vec::new());
        let la = layouts.as_bytes()[0] as char;
        let lb = layouts.as_bytes()[1] as char;
        let (rsa, csa) = stored(&mut da, m, k, la, &mut rng, special);
        let (rsb, csb) = stored(&mut db, k, n, lb, &mut rng, special);
        let at = |i: usize, l: usize| da[(i as isize * rsa + l as isize * csa) as usize];
        let bt = |l: usize, j: usize| db[(l as isize * rsb + j as isize * csb) as usize];
        let want = reference(m, k, n, &at, &bt);
        let a = Strided {
            ptr: da.as_ptr(),
            rs: rsa,
            cs: csa,
        };
        let b = Strided {
            ptr: db.as_ptr(),
            rs: rsb,
            cs: csb,
        };
        let mut runs: Vec<(String, Vec<f32>)> = Vec::new();
        let mut mm = vec![f32::NAN; m * n];
        // SAFETY: `da`/`db` hold every element the strides reach; `mm` is m x n.
        unsafe { with_matrixmultiply(m, k, n, a, b, mm.as_mut_ptr()) };
        runs.push(("matrixmultiply".into(), mm));
        let mut c = vec![f32::NAN; m * n];
        // SAFETY: as above.
        unsafe { sgemm(m, k, n, a, b, c.as_mut_ptr()) };
        runs.push(("sgemm".into(), c));
        if k < MIN_K && has_avx2_fma() {
            for threads in 1..=3 {
                let mut c = vec![f32::NAN; m * n];
                // SAFETY: as above.
                unsafe { with_short_k(threads, m, k, n, a, b, c.as_mut_ptr()) };
                runs.push((format!("short k, {threads} threads"), c));
            }
        }
        for kernel in [Kernel::Avx2, Kernel::Avx512]
            .into_iter()
            .filter(|k| k.available())
        {
            for threads in 1..=3 {
                // Stale values in C must not leak into the result.
                let mut c = vec![f32::NAN; m * n];
                // SAFETY: as above.
                unsafe { with_kernel(kernel, threads, m, k, n, a, b, c.as_mut_ptr()) };
                runs.push((format!("{kernel:?} kernel, {threads} threads"), c));
            }
        }
        for (name, got) in &runs {
            let bad = (0..m * n).find(|&e| !same_bits(got[e], want[e]));
            assert!(
                bad.is_none(),
                "{name}, {m}x{k}x{n} {layouts}: C[{e}] = {g:e} ({gb:#x}), reference {w:e} ({wb:#x})",
                e = bad.unwrap(),
                g = got[bad.unwrap()],
                gb = got[bad.unwrap()].to_bits(),
                w = want[bad.unwrap()],
                wb = want[bad.unwrap()].to_bits(),
            );
        }
    }

    /// Every layout, tile edges (m, n not multiples of the tiles' 6, 12, 16 and 32), short `k`
    /// (with `n` past the short-`k` path's 32- and 8-column steps), `k` on both sides of the
    /// block size and of its multiples, with and without special values.
    #[test]
    fn products_match_the_reference_and_matrixmultiply_bit_for_bit() {
        let shapes = [
            (1, 1, 1),
            (5, 3, 7),
            (37, 5, 70),
            (9, 25, 45),
            (6, 256, 16),
            (7, 255, 17),
            (13, 257, 33),
            (37, 511, 5),
            (64, 512, 40),
            (73, 513, 100),
            (23, 1000, 19),
            (150, 300, 1030),
        ];
        let mut seed = 1;
        for &(m, k, n) in &shapes {
            for layouts in ["NN", "NT", "TN", "TT", "SS", "NS"] {
                for special in [false, true] {
                    seed += 1;
                    check(m, k, n, layouts, seed, special);
                }
            }
        }
    }

    /// Large enough to take the threaded path of the dispatching `sgemm` (`THREAD_MACS`), in
    /// the step's layouts: the forward `NN`, the input gradient `NT`, the weight gradient `TN`,
    /// and the query logits' gradient (`TN`, `k` = 5: the short-`k` path).
    #[test]
    fn threaded_products_match_bit_for_bit() {
        check(700, 300, 130, "NN", 91, false);
        check(700, 130, 300, "NT", 92, true);
        check(130, 2100, 40, "TN", 93, false);
        check(1500, 5, 710, "TN", 94, true);
    }

    /// Batches of small products (shared out between threads, whole products each) and of
    /// large ones (one after another, each threaded): every product's block equals its
    /// reference, bit for bit, with each product reading its own operands.
    #[test]
    fn batched_products_match_the_reference_bit_for_bit() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(77);
        for &(batch, m, k, n) in &[(7, 37, 300, 50), (3, 300, 260, 70), (1, 9, 40, 9)] {
            let da = values(batch * m * k, &mut rng, true);
            let db = values(batch * k * n, &mut rng, false);
            // A row-major, B transposed (column-contiguous), each product at its offset.
            let operands = |i: usize| {
                (
                    Strided {
                        ptr: da[i * m * k..].as_ptr(),
                        rs: k as isize,
                        cs: 1,
                    },
                    Strided {
                        ptr: db[i * k * n..].as_ptr(),
                        rs: 1,
                        cs: k as isize,
                    },
                )
            };
            let mut c = vec![f32::NAN; batch * m * n];
            // SAFETY: product i's operands lie in `da`/`db`; `c` holds every block.
            unsafe { sgemm_batched(batch, m, k, n, operands, c.as_mut_ptr()) };
            for i in 0..batch {
                let want = reference(m, k, n, &|r, l| da[i * m * k + r * k + l], &|l, j| {
                    db[i * k * n + j * k + l]
                });
                let got = &c[i * m * n..(i + 1) * m * n];
                let bad = (0..m * n).find(|&e| !same_bits(got[e], want[e]));
                assert!(
                    bad.is_none(),
                    "batch {batch} {m}x{k}x{n}: product {i}, C[{bad:?}]"
                );
            }
        }
    }

    /// A row of -0.0 times positive values: every product is -0.0, and the chain starts at
    /// +0.0, so C is +0.0 (starting from the first product instead would give -0.0).
    #[test]
    fn a_sum_of_negative_zeros_is_positive_zero() {
        let (m, k, n) = (12, 300, 32);
        let da = vec![-0.0f32; m * k];
        let db = vec![1.5f32; k * n];
        let mut c = vec![f32::NAN; m * n];
        let a = Strided {
            ptr: da.as_ptr(),
            rs: k as isize,
            cs: 1,
        };
        let b = Strided {
            ptr: db.as_ptr(),
            rs: n as isize,
            cs: 1,
        };
        for kernel in [Kernel::Avx2, Kernel::Avx512]
            .into_iter()
            .filter(|k| k.available())
        {
            // SAFETY: the buffers hold the operands.
            unsafe { with_kernel(kernel, 2, m, k, n, a, b, c.as_mut_ptr()) };
            assert!(
                c.iter().all(|x| x.to_bits() == 0),
                "{kernel:?}: {:?}",
                &c[..4]
            );
        }
        let want = reference(m, k, n, &|i, l| da[i * k + l], &|l, j| db[l * n + j]);
        assert!(want.iter().all(|x| x.to_bits() == 0));
    }
}
