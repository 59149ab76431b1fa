//! Fast CPU kernels, swapped in for luminal's primitive ops by two compiler passes.
//!
//! luminal 0.2.0's CPU ops evaluate a symbolic index expression (a small stack machine)
//! for every element of every operand. Our shapes are all known, so each edge's view is
//! resolved once, at compile time, to strides and valid ranges ([`Access`]); the kernels
//! then walk buffers with plain loops (whole-row copies, broadcast scalars, no per-element
//! interpretation). Semantics are luminal's exactly: padding reads 0 in element-wise ops and
//! is skipped by reductions, reductions add in the same order (so sums are bit-identical),
//! `MaxReduce` uses `f32::max`. [`MatMulCompiler`] replaces a broadcast multiply + sum
//! over the last axis (how matmuls are lowered) by a batched `sgemm` over arbitrary strides.

use luminal::compiler_utils::{move_outgoing_edge, move_references, Compiler, ToIdsMut};
use luminal::graph::Graph as LuminalGraph;
use luminal::op::{self, InputTensor, Operator};
use luminal::prelude::petgraph::{visit::EdgeRef, Direction};
use luminal::prelude::{NodeIndex, ShapeTracker};
use luminal::tensor::Tensor as LuminalTensor;

use super::view::{Access, AxisAccess, View};
use crate::sgemm::Strided;
use std::mem::MaybeUninit;

fn data<'a>(t: &'a InputTensor<'a>) -> &'a [f32] {
    match t.borrowed().data.as_any().downcast_ref::<Vec<f32>>() {
        Some(v) => v,
        None => panic!("CPU kernel received non-CPU data"),
    }
}

/// Largest offset read must be inside the buffer (views come from the graph builder, so
/// this holds by construction; checked because indexing below relies on it).
fn assert_fits(acc: &Access, len: usize, what: &str) {
    if let (Some(lo), Some(hi)) = (acc.min_offset(), acc.max_offset()) {
        assert!(
            lo >= 0 && (hi as usize) < len,
            "{what}: view reads offsets {lo}..={hi} of a {len}-element buffer"
        );
    }
}

/// Copy one row (the last axis) of a view: `fill` outside `[lo, hi)`.
fn copy_row(src: &[f32], base: isize, axis: &AxisAccess, fill: f32, out: &mut [f32]) {
    out[..axis.lo].fill(fill);
    out[axis.hi..].fill(fill);
    if axis.lo >= axis.hi {
        return;
    }
    let start = (base + axis.lo as isize * axis.stride) as usize;
    let dst = &mut out[axis.lo..axis.hi];
    match axis.stride {
        1 => dst.copy_from_slice(&src[start..start + dst.len()]),
        0 => dst.fill(src[start]),
        s => {
            for (i, d) in dst.iter_mut().enumerate() {
                *d = src[(start as isize + i as isize * s) as usize];
            }
        }
    }
}

/// An axis of length 1 read at offset 0: appended to a view whose every axis is a row axis,
/// so that [`for_each_row`] visits each of its elements as a row.
const UNIT_AXIS: AxisAccess = AxisAccess {
    len: 1,
    stride: 0,
    lo: 0,
    hi: 1,
};

/// The multi-index of flat index `flat` over axes of lengths `lens`, row-major.
fn unravel(mut flat: usize, lens: &[usize]) -> Vec<usize> {
    let mut idx = vec![0usize; lens.len()];
    for (i, &len) in idx.iter_mut().zip(lens).rev() {
        *i = flat % len;
        flat /= len;
    }
    idx
}

/// Visit every row (all axes but the last) of a view: (row number, row base offset, valid).
fn for_each_row(acc: &Access, f: impl FnMut(usize, isize, bool)) {
    let rows: usize = acc.axes[..acc.axes.len().saturating_sub(1)]
        .iter()
        .map(|a| a.len)
        .product();
    for_each_row_in(acc, 0..rows, f);
}

/// [`for_each_row`] for the rows `rows` only, in order.
fn for_each_row_in(
    acc: &Access,
    rows: std::ops::Range<usize>,
    mut f: impl FnMut(usize, isize, bool),
) {
    if rows.is_empty() {
        return;
    }
    let outer = &acc.axes[..acc.axes.len().saturating_sub(1)];
    let lens: Vec<usize> = outer.iter().map(|a| a.len).collect();
    let mut idx = unravel(rows.start, &lens);
    for row in rows {
        let mut off = acc.base;
        let mut valid = true;
        for (a, &i) in outer.iter().zip(&idx) {
            off += i as isize * a.stride;
            valid &= i >= a.lo && i < a.hi;
        }
        f(row, off, valid);
        for ax in (0..outer.len()).rev() {
            idx[ax] += 1;
            if idx[ax] < outer[ax].len {
                break;
            }
            idx[ax] = 0;
        }
    }
}

/// Materialise a view row-major into `out` (padding becomes `fill`).
fn gather(src: &[f32], acc: &Access, fill: f32, out: &mut [f32]) {
    let acc = acc.coalesced();
    let Some((_, outer)) = acc.axes.split_last() else {
        out[0] = src[acc.base as usize];
        return;
    };
    let rows = outer.iter().map(|a| a.len).product();
    gather_rows(src, &acc, 0..rows, fill, out);
}

/// Rows `rows` of a view (all axes but the last give the rows) into `out`, row-major from
/// its start (padding becomes `fill`).
fn gather_rows(
    src: &[f32],
    acc: &Access,
    rows: std::ops::Range<usize>,
    fill: f32,
    out: &mut [f32],
) {
    let Some(last) = acc.axes.last().copied() else {
        return;
    };
    let (n, first) = (last.len, rows.start);
    for_each_row_in(acc, rows, |row, off, valid| {
        let dst = &mut out[(row - first) * n..(row - first + 1) * n];
        if valid {
            copy_row(src, off, &last, fill, dst);
        } else {
            dst.fill(fill);
        }
    });
}

/// An operand of an element-wise kernel, read in the cheapest form.
#[derive(Clone, Copy)]
enum Operand<'a> {
    Slice(&'a [f32]),
    Scalar(f32),
}

fn operand<'a>(src: &'a [f32], acc: &Access, scratch: &'a mut Vec<f32>) -> Operand<'a> {
    let c = acc.coalesced();
    let n = acc.numel();
    if c.axes.iter().all(|a| a.stride == 0 && a.is_full()) {
        return Operand::Scalar(src[c.base as usize]);
    }
    if c.axes.len() == 1 && c.axes[0].stride == 1 && c.axes[0].is_full() {
        let b = c.base as usize;
        return Operand::Slice(&src[b..b + n]);
    }
    scratch.resize(n, 0.0);
    gather(src, acc, 0.0, scratch);
    Operand::Slice(scratch)
}

impl<'a> Operand<'a> {
    /// Elements `start..start + len` of the operand.
    fn part(self, start: usize, len: usize) -> Operand<'a> {
        match self {
            Operand::Slice(x) => Operand::Slice(&x[start..start + len]),
            scalar => scalar,
        }
    }
}

/// Element-wise work of at least this many outputs is split over threads.
const PAR_ELEMS: usize = 1 << 18;

/// Runs `f(start, part)` on consecutive parts of `out` that together cover it, each part a
/// whole number of `unit`-element rows starting at element `start`: one part on this thread
/// when `out` has fewer than [`PAR_ELEMS`] elements, else one per product thread
/// ([`crate::sgemm::threads`]) on their pool ([`crate::sgemm::run_parts`]). Every element is
/// computed exactly as in one part; only which core does it changes (bit-identical).
fn par_split<T: Send>(out: &mut [T], unit: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    let unit = unit.max(1);
    let rows = out.len() / unit;
    let parts = if out.len() >= PAR_ELEMS {
        crate::sgemm::threads().min(rows).max(1)
    } else {
        1
    };
    if parts == 1 {
        f(0, out);
        return;
    }
    // The parts, each taken once by the one `run_parts` call that computes it.
    let mut pieces = Vec::with_capacity(parts);
    let (mut rest, mut start) = (out, 0);
    for p in 0..parts {
        let end = if p + 1 == parts {
            start + rest.len()
        } else {
            rows * (p + 1) / parts * unit
        };
        let (part, tail) = std::mem::take(&mut rest).split_at_mut(end - start);
        rest = tail;
        pieces.push(std::sync::Mutex::new(Some((start, part))));
        start = end;
    }
    crate::sgemm::run_parts(parts, |p| {
        let piece = pieces[p].lock().map(|mut piece| piece.take());
        if let Ok(Some((start, part))) = piece {
            f(start, part);
        }
    });
}

/// `out[i] = f(a[i], b[i])`, split over threads when large ([`par_split`]).
fn par_zip_apply(
    a: Operand,
    b: Operand,
    out: &mut [MaybeUninit<f32>],
    f: impl Fn(f32, f32) -> f32 + Sync,
) {
    par_split(out, 1, |start, part| {
        let len = part.len();
        zip_apply(a.part(start, len), b.part(start, len), part, &f)
    });
}

/// `out[i] = f(out[i], other[i])` (or `f(other[i], out[i])`), split over threads when large.
fn par_apply_in_place(
    out: &mut [f32],
    other: Operand,
    lhs_is_out: bool,
    f: impl Fn(f32, f32) -> f32 + Sync,
) {
    par_split(out, 1, |start, part| {
        let len = part.len();
        apply_in_place(part, other.part(start, len), lhs_is_out, &f)
    });
}

/// `out[i] = f(a[i], b[i])`, writing every element of `out` (it may be uninitialised; a
/// slice operand shorter than `out` is a bug and panics rather than leave elements unset).
fn zip_apply(a: Operand, b: Operand, out: &mut [MaybeUninit<f32>], f: impl Fn(f32, f32) -> f32) {
    let n = out.len();
    match (a, b) {
        (Operand::Slice(x), Operand::Slice(y)) => {
            for ((o, &x), &y) in out.iter_mut().zip(&x[..n]).zip(&y[..n]) {
                o.write(f(x, y));
            }
        }
        (Operand::Slice(x), Operand::Scalar(y)) => {
            for (o, &x) in out.iter_mut().zip(&x[..n]) {
                o.write(f(x, y));
            }
        }
        (Operand::Scalar(x), Operand::Slice(y)) => {
            for (o, &y) in out.iter_mut().zip(&y[..n]) {
                o.write(f(x, y));
            }
        }
        (Operand::Scalar(x), Operand::Scalar(y)) => fill(out, f(x, y)),
    }
}

/// Writes `v` to every element of `out`.
fn fill(out: &mut [MaybeUninit<f32>], v: f32) {
    out.iter_mut().for_each(|o| {
        o.write(v);
    });
}

/// Two unpadded views of one shape walked together, row by row: the axes both can merge
/// (adjacent, each view's outer stride = inner stride x inner length) merged, length-1
/// axes dropped. Rows are in row-major order, so the `r`-th row of `inner.0` elements is
/// `out[r * inner.0..]` of a dense output.
struct RowWalk {
    /// Outer axes: (len, stride in a, stride in b).
    outer: Vec<(usize, isize, isize)>,
    /// The last axis: (len, stride in a, stride in b).
    inner: (usize, isize, isize),
    base: (isize, isize),
}

impl RowWalk {
    /// `None` when the shapes differ or either view has padding.
    fn new(a: &Access, b: &Access) -> Option<RowWalk> {
        if a.axes.len() != b.axes.len()
            || a.axes.iter().zip(&b.axes).any(|(x, y)| x.len != y.len)
            || !a.axes.iter().chain(&b.axes).all(AxisAccess::is_full)
        {
            return None;
        }
        let mut axes: Vec<(usize, isize, isize)> = Vec::with_capacity(a.axes.len());
        for (x, y) in a.axes.iter().zip(&b.axes) {
            if x.len == 1 {
                continue;
            }
            if let Some(last) = axes.last_mut() {
                let n = x.len as isize;
                if last.1 == x.stride * n && last.2 == y.stride * n {
                    *last = (last.0 * x.len, x.stride, y.stride);
                    continue;
                }
            }
            axes.push((x.len, x.stride, y.stride));
        }
        let inner = axes.pop().unwrap_or((1, 0, 0));
        Some(RowWalk {
            outer: axes,
            inner,
            base: (a.base, b.base),
        })
    }

    /// Call `f(row, offset in a, offset in b)` for the rows `rows`, in order.
    fn for_each_row_in(
        &self,
        rows: std::ops::Range<usize>,
        mut f: impl FnMut(usize, usize, usize),
    ) {
        if rows.is_empty() {
            return;
        }
        let lens: Vec<usize> = self.outer.iter().map(|a| a.0).collect();
        let mut idx = unravel(rows.start, &lens);
        let (mut oa, mut ob) = self.base;
        for (&i, &(_, sa, sb)) in idx.iter().zip(&self.outer) {
            oa += i as isize * sa;
            ob += i as isize * sb;
        }
        for row in rows {
            f(row, oa as usize, ob as usize);
            for (ax, &(len, sa, sb)) in self.outer.iter().enumerate().rev() {
                idx[ax] += 1;
                oa += sa;
                ob += sb;
                if idx[ax] < len {
                    break;
                }
                idx[ax] = 0;
                oa -= sa * len as isize;
                ob -= sb * len as isize;
            }
        }
    }
}

/// One row of a strided operand: `n` values from `start`, `stride` apart.
enum Row<'a> {
    Slice(&'a [f32]),
    Scalar(f32),
    Strided(&'a [f32], usize, isize),
}

impl<'a> Row<'a> {
    fn new(src: &'a [f32], start: usize, n: usize, stride: isize) -> Row<'a> {
        match stride {
            0 => Row::Scalar(src[start]),
            1 => Row::Slice(&src[start..start + n]),
            s => Row::Strided(src, start, s),
        }
    }

    fn get(&self, i: usize) -> f32 {
        match *self {
            Row::Slice(x) => x[i],
            Row::Scalar(x) => x,
            Row::Strided(x, start, s) => x[(start as isize + i as isize * s) as usize],
        }
    }
}

/// `out[i] = f(a[i], b[i])` over one row, with the cheap forms vectorisable.
fn zip_row(a: Row, b: Row, out: &mut [MaybeUninit<f32>], f: impl Fn(f32, f32) -> f32) {
    match (a, b) {
        (Row::Slice(x), Row::Slice(y)) => zip_apply(Operand::Slice(x), Operand::Slice(y), out, f),
        (Row::Slice(x), Row::Scalar(y)) => zip_apply(Operand::Slice(x), Operand::Scalar(y), out, f),
        (Row::Scalar(x), Row::Slice(y)) => zip_apply(Operand::Scalar(x), Operand::Slice(y), out, f),
        (Row::Scalar(x), Row::Scalar(y)) => fill(out, f(x, y)),
        (a, b) => out.iter_mut().enumerate().for_each(|(i, o)| {
            o.write(f(a.get(i), b.get(i)));
        }),
    }
}

/// `out = f(a, b)` over a joint row walk (`out` dense, row-major). In place when `own` says
/// which operand `out` already holds (true: `a`, false: `b`); the other is read from `src`.
fn zip_rows(
    walk: &RowWalk,
    srcs: (&[f32], &[f32]),
    out: &mut [MaybeUninit<f32>],
    f: impl Fn(f32, f32) -> f32 + Sync,
) {
    let (n, sa, sb) = walk.inner;
    let rows: usize = walk.outer.iter().map(|a| a.0).product();
    assert_eq!(rows * n, out.len(), "row walk and output differ in size");
    par_split(out, n, |start, out| {
        let first = start / n.max(1);
        walk.for_each_row_in(first..first + out.len() / n.max(1), |row, oa, ob| {
            let dst = &mut out[(row - first) * n..(row - first + 1) * n];
            zip_row(
                Row::new(srcs.0, oa, n, sa),
                Row::new(srcs.1, ob, n, sb),
                dst,
                &f,
            );
        });
    });
}

/// As [`zip_rows`], `out` holding one operand already (`lhs_is_out`: it is `a`).
fn zip_rows_in_place(
    walk: &RowWalk,
    other: &[f32],
    lhs_is_out: bool,
    out: &mut [f32],
    f: impl Fn(f32, f32) -> f32 + Sync,
) {
    let (n, sa, sb) = walk.inner;
    par_split(out, n, |start, out| {
        let first = start / n.max(1);
        walk.for_each_row_in(first..first + out.len() / n.max(1), |row, oa, ob| {
            let dst = &mut out[(row - first) * n..(row - first + 1) * n];
            if lhs_is_out {
                let y = Row::new(other, ob, n, sb);
                match y {
                    Row::Slice(y) => apply_in_place(dst, Operand::Slice(y), true, &f),
                    Row::Scalar(y) => apply_in_place(dst, Operand::Scalar(y), true, &f),
                    y => dst
                        .iter_mut()
                        .enumerate()
                        .for_each(|(i, o)| *o = f(*o, y.get(i))),
                }
            } else {
                let x = Row::new(other, oa, n, sa);
                match x {
                    Row::Slice(x) => apply_in_place(dst, Operand::Slice(x), false, &f),
                    Row::Scalar(x) => apply_in_place(dst, Operand::Scalar(x), false, &f),
                    x => dst
                        .iter_mut()
                        .enumerate()
                        .for_each(|(i, o)| *o = f(x.get(i), *o)),
                }
            }
        });
    });
}

/// Elements per block of [`zip_gathered`]: both operands' blocks stay in L1.
const GATHER_BLOCK: usize = 2048;

/// `out = f(a, b)` over two views of one shape that [`RowWalk`] cannot walk together (padded:
/// the halves of a concatenation), a block of rows at a time: each operand's rows gathered
/// into an L1-sized buffer (padding read as 0, as luminal's element-wise ops read it), then
/// combined; the rows split over threads ([`par_split`]). The same operation on the same
/// pairs of values as gathering both operands whole first, which was one thread writing and
/// re-reading two operand-sized copies (the 1-shot generator input's concatenation, 24.6 MB:
/// 20 ms a step on the Zen 3 machine). False, with nothing written, unless the shapes match
/// and rows hold at least 64 values.
fn zip_gathered(
    (a, xa): (&Access, &[f32]),
    (b, xb): (&Access, &[f32]),
    out: &mut [MaybeUninit<f32>],
    f: impl Fn(f32, f32) -> f32 + Sync,
) -> bool {
    let Some(n) = a.axes.last().map(|l| l.len) else {
        return false;
    };
    if n < 64
        || a.axes.len() != b.axes.len()
        || a.axes.iter().zip(&b.axes).any(|(x, y)| x.len != y.len)
        || a.numel() != out.len()
    {
        return false;
    }
    let block_rows = (GATHER_BLOCK / n).max(1);
    par_split(out, n, |start, part| {
        let (mut ba, mut bb) = (vec![0.0f32; block_rows * n], vec![0.0f32; block_rows * n]);
        let (first, rows) = (start / n, part.len() / n);
        for r0 in (0..rows).step_by(block_rows) {
            let r1 = rows.min(r0 + block_rows);
            let len = (r1 - r0) * n;
            gather_rows(xa, a, first + r0..first + r1, 0.0, &mut ba[..len]);
            gather_rows(xb, b, first + r0..first + r1, 0.0, &mut bb[..len]);
            let (x, y) = (Operand::Slice(&ba[..len]), Operand::Slice(&bb[..len]));
            zip_apply(x, y, &mut part[r0 * n..r1 * n], &f);
        }
    });
    true
}

/// True when [`operand`] would have to copy the view (neither a broadcast scalar nor one
/// dense run).
fn needs_gather(acc: &Access) -> bool {
    let c = acc.coalesced();
    let scalar = c.axes.iter().all(|a| a.stride == 0 && a.is_full());
    let dense = c.axes.len() == 1 && c.axes[0].stride == 1 && c.axes[0].is_full();
    !scalar && !dense
}

/// Which element-wise binary op.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryKind {
    /// `a + b`
    Add,
    /// `a * b`
    Mul,
    /// `a % b`
    Mod,
    /// `1.0` if `a < b` else `0.0`
    LessThan,
}

/// Element-wise binary op over two strided views.
#[derive(Clone, Debug, PartialEq)]
pub struct StridedBinary {
    kind: BinaryKind,
    a: Access,
    b: Access,
}

/// True when a view reads a whole buffer of `n` elements in order.
fn is_dense(acc: &Access, n: usize) -> bool {
    let c = acc.coalesced();
    c.base == 0
        && (c.axes.is_empty()
            || (c.axes.len() == 1 && c.axes[0].stride == 1 && c.axes[0].is_full()))
        && acc.numel() == n
}

/// The buffer of an input the executor hands over (its last use), if it is dense.
fn take_owned(input: &mut InputTensor, acc: &Access) -> Option<Vec<f32>> {
    match input {
        InputTensor::Owned(t) => {
            let v = t.data.as_any_mut().downcast_mut::<Vec<f32>>()?;
            is_dense(acc, v.len()).then(|| std::mem::take(v))
        }
        InputTensor::Borrowed(_) => None,
    }
}

fn apply_in_place(out: &mut [f32], other: Operand, lhs_is_out: bool, f: impl Fn(f32, f32) -> f32) {
    match (other, lhs_is_out) {
        (Operand::Slice(y), true) => out.iter_mut().zip(y).for_each(|(o, &y)| *o = f(*o, y)),
        (Operand::Slice(x), false) => out.iter_mut().zip(x).for_each(|(o, &x)| *o = f(x, *o)),
        (Operand::Scalar(y), true) => out.iter_mut().for_each(|o| *o = f(*o, y)),
        (Operand::Scalar(x), false) => out.iter_mut().for_each(|o| *o = f(x, *o)),
    }
}

impl StridedBinary {
    /// Which op it is.
    pub fn kind(&self) -> BinaryKind {
        self.kind
    }

    fn run(&self, a: Operand, b: Operand, out: &mut [MaybeUninit<f32>]) {
        match self.kind {
            BinaryKind::Add => par_zip_apply(a, b, out, |x, y| x + y),
            BinaryKind::Mul => par_zip_apply(a, b, out, |x, y| x * y),
            BinaryKind::Mod => par_zip_apply(a, b, out, |x, y| x % y),
            BinaryKind::LessThan => par_zip_apply(a, b, out, |x, y| if x < y { 1.0 } else { 0.0 }),
        }
    }

    fn run_rows(&self, walk: &RowWalk, srcs: (&[f32], &[f32]), out: &mut [MaybeUninit<f32>]) {
        match self.kind {
            BinaryKind::Add => zip_rows(walk, srcs, out, |x, y| x + y),
            BinaryKind::Mul => zip_rows(walk, srcs, out, |x, y| x * y),
            BinaryKind::Mod => zip_rows(walk, srcs, out, |x, y| x % y),
            BinaryKind::LessThan => zip_rows(walk, srcs, out, |x, y| if x < y { 1.0 } else { 0.0 }),
        }
    }

    /// [`zip_gathered`] with this op, when an operand has to be gathered; false when it does
    /// not apply (nothing written).
    fn run_gathered(&self, (xa, xb): (&[f32], &[f32]), out: &mut [MaybeUninit<f32>]) -> bool {
        if !needs_gather(&self.a) && !needs_gather(&self.b) {
            return false;
        }
        let (a, b) = ((&self.a, xa), (&self.b, xb));
        match self.kind {
            BinaryKind::Add => zip_gathered(a, b, out, |x, y| x + y),
            BinaryKind::Mul => zip_gathered(a, b, out, |x, y| x * y),
            BinaryKind::Mod => zip_gathered(a, b, out, |x, y| x % y),
            BinaryKind::LessThan => zip_gathered(a, b, out, |x, y| if x < y { 1.0 } else { 0.0 }),
        }
    }

    fn run_rows_in_place(&self, walk: &RowWalk, other: &[f32], lhs_is_out: bool, out: &mut [f32]) {
        let (w, o) = (walk, other);
        match self.kind {
            BinaryKind::Add => zip_rows_in_place(w, o, lhs_is_out, out, |x, y| x + y),
            BinaryKind::Mul => zip_rows_in_place(w, o, lhs_is_out, out, |x, y| x * y),
            BinaryKind::Mod => zip_rows_in_place(w, o, lhs_is_out, out, |x, y| x % y),
            BinaryKind::LessThan => {
                zip_rows_in_place(w, o, lhs_is_out, out, |x, y| if x < y { 1.0 } else { 0.0 })
            }
        }
    }

    fn run_in_place(&self, out: &mut [f32], other: Operand, lhs_is_out: bool) {
        match self.kind {
            BinaryKind::Add => par_apply_in_place(out, other, lhs_is_out, |x, y| x + y),
            BinaryKind::Mul => par_apply_in_place(out, other, lhs_is_out, |x, y| x * y),
            BinaryKind::Mod => par_apply_in_place(out, other, lhs_is_out, |x, y| x % y),
            BinaryKind::LessThan => {
                par_apply_in_place(out, other, lhs_is_out, |x, y| if x < y { 1.0 } else { 0.0 })
            }
        }
    }
}

impl Operator for StridedBinary {
    fn process(&mut self, mut inp: Vec<(InputTensor, ShapeTracker)>) -> Vec<LuminalTensor> {
        let n = self.a.numel();
        // Reuse a dense input buffer the executor no longer needs.
        for (i, own) in [(0usize, &self.a), (1, &self.b)] {
            if let Some(mut out) = take_owned(&mut inp[i].0, own) {
                let (other_acc, other_in) = if i == 0 {
                    (&self.b, &inp[1].0)
                } else {
                    (&self.a, &inp[0].0)
                };
                let other = data(other_in);
                assert_fits(other_acc, other.len(), "StridedBinary operand");
                // A broadcast or strided operand is read row by row where it lies rather
                // than copied out first (same operation on the same pairs of values).
                let walk = needs_gather(other_acc)
                    .then(|| RowWalk::new(&self.a, &self.b))
                    .flatten();
                if let Some(walk) = walk {
                    self.run_rows_in_place(&walk, other, i == 0, &mut out);
                    return vec![LuminalTensor::new(out)];
                }
                let mut scratch = Vec::new();
                let op = operand(other, other_acc, &mut scratch);
                self.run_in_place(&mut out, op, i == 0);
                return vec![LuminalTensor::new(out)];
            }
        }
        let (xa, xb) = (data(&inp[0].0), data(&inp[1].0));
        assert_fits(&self.a, xa.len(), "StridedBinary lhs");
        assert_fits(&self.b, xb.len(), "StridedBinary rhs");
        // A fresh output, not zeroed first (zeroing it was one more pass over up to 61 MB):
        // `run_rows` and `run` write every one of its `n` elements (each checks that its
        // operands cover them all, panicking otherwise).
        let mut out: Vec<f32> = Vec::with_capacity(n);
        let slots = &mut out.spare_capacity_mut()[..n];
        let walk = (needs_gather(&self.a) || needs_gather(&self.b))
            .then(|| RowWalk::new(&self.a, &self.b))
            .flatten();
        if let Some(walk) = walk {
            self.run_rows(&walk, (xa, xb), slots);
        } else if !self.run_gathered((xa, xb), slots) {
            let (mut sa, mut sb) = (Vec::new(), Vec::new());
            let (a, b) = (operand(xa, &self.a, &mut sa), operand(xb, &self.b, &mut sb));
            self.run(a, b, slots);
        }
        // SAFETY: the first `n` elements were all written just above (see the comment there).
        unsafe { out.set_len(n) };
        vec![LuminalTensor::new(out)]
    }
}

/// Which of luminal's unary ops a [`ParUnary`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnaryKind {
    /// `2^x`
    Exp2,
    /// `log2(x)`
    Log2,
    /// `1 / x`
    Recip,
    /// `sin(x)`
    Sin,
    /// `sqrt(x)`
    Sqrt,
}

impl UnaryKind {
    /// The function luminal's op applies to each element (the same `f32` method).
    fn function(self) -> fn(f32) -> f32 {
        match self {
            UnaryKind::Exp2 => f32::exp2,
            UnaryKind::Log2 => f32::log2,
            UnaryKind::Recip => f32::recip,
            UnaryKind::Sin => f32::sin,
            UnaryKind::Sqrt => f32::sqrt,
        }
    }

    /// Applies the op to every element of `x`, each as [`UnaryKind::function`] gives it
    /// (`exp2` eight at a time by [`crate::exp2`], the same bits).
    fn apply(self, x: &mut [f32]) {
        if self == UnaryKind::Exp2 {
            crate::exp2::exp2_in_place(x);
        } else {
            let f = self.function();
            x.iter_mut().for_each(|a| *a = f(*a));
        }
    }
}

/// One of luminal's unary ops, computed as luminal does (the same function on every element
/// of the input's buffer, which is taken over when the executor hands it over and copied
/// otherwise), with the work split over threads when large (`par_split`). The forward
/// pass's `exp2` over the `[B, M, N, D]` reparameterisation was the one costly unary op of
/// the step (61 MB on one core); `exp2` runs [`crate::exp2`]'s vector code.
#[derive(Clone, PartialEq)]
pub struct ParUnary {
    kind: UnaryKind,
}

impl std::fmt::Debug for ParUnary {
    /// luminal's name for the op (`Exp2`, ...), as profiles label it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.kind)
    }
}

impl Operator for ParUnary {
    fn process(&mut self, mut inp: Vec<(InputTensor, ShapeTracker)>) -> Vec<LuminalTensor> {
        let Some((input, _)) = inp.pop() else {
            panic!("{self:?} without an input");
        };
        let mut tensor = input.cloned();
        let Some(values) = tensor.data.as_any_mut().downcast_mut::<Vec<f32>>() else {
            panic!("{self:?} on a tensor that is not f32 on the CPU");
        };
        let kind = self.kind;
        par_split(values, 1, |_, part| kind.apply(part));
        vec![tensor]
    }
}

/// Replaces luminal's single unary ops (chains fused by luminal's `UnaryFusionCompiler`
/// stay as they are) with [`ParUnary`].
#[derive(Debug, Default)]
pub struct UnaryKernelCompiler;

impl Compiler for UnaryKernelCompiler {
    fn compile<T: ToIdsMut>(&self, graph: &mut LuminalGraph, _: T) {
        for node in graph.graph.node_indices().collect::<Vec<_>>() {
            let Some(w) = graph.graph.node_weight_mut(node) else {
                continue;
            };
            let any = w.as_any();
            let kind = if any.is::<op::Exp2>() {
                UnaryKind::Exp2
            } else if any.is::<op::Log2>() {
                UnaryKind::Log2
            } else if any.is::<op::Recip>() {
                UnaryKind::Recip
            } else if any.is::<op::Sin>() {
                UnaryKind::Sin
            } else if any.is::<op::Sqrt>() {
                UnaryKind::Sqrt
            } else {
                continue;
            };
            *w = Box::new(ParUnary { kind });
        }
    }
}

/// Copy a strided view into a row-major buffer.
#[derive(Clone, Debug, PartialEq)]
pub struct StridedCopy {
    src: Access,
}

impl Operator for StridedCopy {
    fn process(&mut self, inp: Vec<(InputTensor, ShapeTracker)>) -> Vec<LuminalTensor> {
        let x = data(&inp[0].0);
        assert_fits(&self.src, x.len(), "StridedCopy");
        let mut out = vec![0.0f32; self.src.numel()];
        gather(x, &self.src, 0.0, &mut out);
        vec![LuminalTensor::new(out)]
    }
}

/// Rows reduced together by [`StridedReduce`] when each row has one output.
const LANES: usize = 8;
/// Rows a reduction with one output per row takes at a time (a multiple of `LANES`): 4 KB of
/// accumulators, in L1. 512 rather than 64 read the 5-shot K-mean about 10% faster (Zen 5,
/// within the noise of one series); 1024 rather than 512 lets a run of the K-mean's 640 rows
/// be one block, so that its 5 x 640 values are read in memory order instead of in two
/// interleaved passes: the 5-shot K-mean alone (`[32, 75, 5, 640, 5]`, 154 MB, two threads,
/// Zen 4) 13.3-16.9 -> 9.9-10.0 ms (medians of 7; 640 and 2048 in between).
const BLOCK_ROWS: usize = 1024;

/// Reduces one row per output: `out[f]` (holding the initial value, `0.0` or `-inf`) becomes
/// the sum (or maximum) of `len` values `stride` apart starting at element `f` of `starts`,
/// a view whose elements are the rows' first offsets; each row's terms are taken in order,
/// one rounding each, so the result is the same however rows are grouped. Padded rows keep
/// the initial value.
///
/// `starts` is walked in runs along its innermost axis (its other axes give the runs), the
/// outputs split over threads when there are many (`par_split`; a run may be split). Within a run, when
/// consecutive rows start at consecutive elements (the reduced axis is an outer one: the
/// K-mean over `[B, M, N, K, D]`, or a transposed operand) up to `BLOCK_ROWS` rows advance
/// together over contiguous runs of `x`, which vectorise; otherwise `LANES` rows at a time,
/// so that as many dependency chains are in flight.
///
/// `MAX` is a type parameter, not a flag read in the loops: with a run-time flag the inner
/// loops compiled to scalar code that reloaded it for every value (`perf` on the 5-shot
/// K-mean: 2 G values/s); each instance now vectorises.
fn reduce_rows<const MAX: bool>(
    x: &[f32],
    starts: &Access,
    len: usize,
    stride: isize,
    out: &mut [f32],
) {
    let starts = starts.coalesced();
    let inner = starts.axes.last().copied().unwrap_or(UNIT_AXIS);
    // The runs: every axis but the innermost, and a unit axis for `for_each_row`.
    let runs = Access {
        base: starts.base,
        axes: starts.axes[..starts.axes.len().saturating_sub(1)]
            .iter()
            .copied()
            .chain(std::iter::once(UNIT_AXIS))
            .collect(),
    };
    let step = |acc: f32, v: f32| if MAX { acc.max(v) } else { acc + v };
    let run_len = inner.len.max(1);
    // Parts of the outputs (any boundary: a run may be split between threads).
    par_split(out, 1, |first_out, out| {
        let end_out = first_out + out.len();
        let runs_here = first_out / run_len..end_out.div_ceil(run_len);
        for_each_row_in(&runs, runs_here, |run, off, valid| {
            let run_start = run * run_len;
            // This part's valid rows of the run.
            let lo = inner.lo.max(first_out.saturating_sub(run_start));
            let hi = inner.hi.min(end_out - run_start);
            if !valid || lo >= hi {
                return;
            }
            let dst = &mut out[run_start + lo - first_out..run_start + hi - first_out];
            let row0 = off + lo as isize * inner.stride;
            for (b, block) in dst.chunks_mut(BLOCK_ROWS).enumerate() {
                let s0 = row0 + (b * BLOCK_ROWS) as isize * inner.stride;
                if inner.stride == 1 {
                    // Consecutive rows at consecutive elements: the block's chains advance
                    // together over contiguous runs of `x`.
                    let w = block.len();
                    for k in 0..len {
                        let at = (s0 + k as isize * stride) as usize;
                        for (acc, &v) in block.iter_mut().zip(&x[at..at + w]) {
                            *acc = step(*acc, v);
                        }
                    }
                    continue;
                }
                let mut chunks = block.chunks_exact_mut(LANES);
                let mut row = 0;
                for chunk in &mut chunks {
                    let mut acc: [f32; LANES] = std::array::from_fn(|r| chunk[r]);
                    let first = s0 + row as isize * inner.stride;
                    #[cfg(target_arch = "x86_64")]
                    if !MAX && stride == 1 && sum_rows_fit(x, first, inner.stride, len) {
                        // SAFETY: the rows lie in `x`, AVX2 and FMA are available (`sum_rows_fit`).
                        unsafe {
                            sum_8_rows(x, first as usize, inner.stride as usize, len, &mut acc)
                        };
                        chunk.copy_from_slice(&acc);
                        row += LANES;
                        continue;
                    }
                    let mut at: [isize; LANES] =
                        std::array::from_fn(|r| s0 + (row + r) as isize * inner.stride);
                    for _ in 0..len {
                        for r in 0..LANES {
                            acc[r] = step(acc[r], x[at[r] as usize]);
                            at[r] += stride;
                        }
                    }
                    chunk.copy_from_slice(&acc);
                    row += LANES;
                }
                for acc in chunks.into_remainder() {
                    let start = s0 + row as isize * inner.stride;
                    for k in 0..len {
                        *acc = step(*acc, x[(start + k as isize * stride) as usize]);
                    }
                    row += 1;
                }
            }
        });
    });
}

/// Whether [`sum_8_rows`] may run: the CPU has AVX2 and FMA and the 8 rows of `len` contiguous values,
/// starting at `first` and `row_stride` apart, lie in `x`.
#[cfg(target_arch = "x86_64")]
fn sum_rows_fit(x: &[f32], first: isize, row_stride: isize, len: usize) -> bool {
    len >= 8
        && first >= 0
        && row_stride > 0
        && first as usize + 7 * row_stride as usize + len <= x.len()
        && crate::sgemm::has_avx2_fma()
}

/// Adds to `acc[r]` the `len` contiguous values of row `r` (`x[start + r * row_stride..]`),
/// `r < 8`, in order, one rounding each: the scalar loop's additions, 8 rows in the lanes of
/// one vector. Blocks of 8 rows x 8 values are transposed in registers, so that the vector of
/// the `l`-th values of the 8 rows is added whole; a row's sum stays one chain in its order.
/// For rows that are contiguous (`SumReduce` over the last axis: the attention's dot products
/// over `D`, the per-head sums), where 8 scalar chains read one value at a time: about 3x
/// fewer instructions.
///
/// # Safety
/// AVX2 and FMA are available; `x[start + 7 * row_stride + len - 1]` is in `x` ([`sum_rows_fit`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn sum_8_rows(x: &[f32], start: usize, row_stride: usize, len: usize, acc: &mut [f32; 8]) {
    use crate::sgemm::interleave4;
    use std::arch::x86_64::*;
    // SAFETY: every load is of row r < 8, value l < len: inside `x` (contract).
    unsafe {
        let p = x.as_ptr().add(start);
        let mut sum = _mm256_loadu_ps(acc.as_ptr());
        let mut l = 0;
        while l + 8 <= len {
            let r: [__m256; 8] =
                std::array::from_fn(|i| _mm256_loadu_ps(p.add(i * row_stride + l)));
            // 8 x 8 transpose: 4 x 4 transposes of rows 0-3 and 4-7 per half, then halves.
            let s = interleave4([r[0], r[1], r[2], r[3]]);
            let h = interleave4([r[4], r[5], r[6], r[7]]);
            // Column c (the c-th value of each row) in lane order of the rows.
            let columns = [
                _mm256_permute2f128_ps::<0x20>(s[0], h[0]),
                _mm256_permute2f128_ps::<0x20>(s[1], h[1]),
                _mm256_permute2f128_ps::<0x20>(s[2], h[2]),
                _mm256_permute2f128_ps::<0x20>(s[3], h[3]),
                _mm256_permute2f128_ps::<0x31>(s[0], h[0]),
                _mm256_permute2f128_ps::<0x31>(s[1], h[1]),
                _mm256_permute2f128_ps::<0x31>(s[2], h[2]),
                _mm256_permute2f128_ps::<0x31>(s[3], h[3]),
            ];
            for c in columns {
                sum = _mm256_add_ps(sum, c);
            }
            l += 8;
        }
        _mm256_storeu_ps(acc.as_mut_ptr(), sum);
        for l in l..len {
            for (r, a) in acc.iter_mut().enumerate() {
                *a += *p.add(r * row_stride + l);
            }
        }
    }
}

/// Sum or max over one axis of a strided view.
#[derive(Clone, Debug, PartialEq)]
pub struct StridedReduce {
    max: bool,
    src: Access,
    axis: usize,
}

impl StridedReduce {
    /// True for a max, false for a sum.
    pub fn is_max(&self) -> bool {
        self.max
    }

    /// The reduced axis.
    pub fn axis(&self) -> usize {
        self.axis
    }
}

impl Operator for StridedReduce {
    fn process(&mut self, mut inp: Vec<(InputTensor, ShapeTracker)>) -> Vec<LuminalTensor> {
        let axes = &self.src.axes;
        let red = axes[self.axis];
        let init = if self.max { f32::NEG_INFINITY } else { 0.0 };
        let unit = red.len == 1 && red.is_full();
        // The view without the reduced axis (what a reduction over a length-1 axis reads).
        let rest = || Access {
            base: self.src.base,
            axes: axes[..self.axis]
                .iter()
                .chain(&axes[self.axis + 1..])
                .copied()
                .collect(),
        };
        let one_term = |out: &mut [f32]| {
            if self.max {
                out.iter_mut().for_each(|o| *o = init.max(*o));
            } else {
                // `v + 0.0` is `0.0 + v` bit for bit (IEEE addition commutes): -0.0 becomes 0.0.
                out.iter_mut().for_each(|o| *o += init);
            }
        };
        if unit {
            // A dense input the executor hands over: the one term of each output is where
            // the output goes, so apply the operation in place (no buffer, no copy).
            if let Some(mut out) = take_owned(&mut inp[0].0, &rest()) {
                one_term(&mut out);
                return vec![LuminalTensor::new(out)];
            }
        }
        let x = data(&inp[0].0);
        assert_fits(&self.src, x.len(), "StridedReduce");
        let front = Access {
            base: self.src.base,
            axes: axes[..self.axis].to_vec(),
        };
        let back = Access {
            base: 0,
            axes: axes[self.axis + 1..].to_vec(),
        };
        let back_n = back.numel();
        if unit {
            // One term per output (the backward pass sums broadcast axes of length 1, the
            // K-mean sums K = 1): the loops below would compute `init + v` (or
            // `init.max(v)`) one row at a time; gather the view without that axis and apply
            // the same operation in one pass.
            let rest = rest();
            let mut out = vec![init; rest.numel()];
            gather(x, &rest, init, &mut out);
            one_term(&mut out);
            return vec![LuminalTensor::new(out)];
        }
        let front_n = front.numel();
        let mut out = vec![init; front_n * back_n];
        let mut row = vec![init; back_n];
        let back_c = back.coalesced();
        let back_dense =
            back_c.axes.len() == 1 && back_c.axes[0].stride == 1 && back_c.axes[0].is_full();
        let front_c = Access {
            base: front.base,
            // Row helper walks all axes but the last: append a unit axis.
            axes: front
                .axes
                .iter()
                .copied()
                .chain(std::iter::once(UNIT_AXIS))
                .collect(),
        };
        let max = self.max;
        if back_n == 1 && back.axes.iter().all(AxisAccess::is_full) {
            // One output per row: each row is still summed (or maxed) alone and in order.
            let first = Access {
                base: front.base + back.base + red.lo as isize * red.stride,
                axes: front.axes.clone(),
            };
            let len = red.hi.saturating_sub(red.lo);
            if max {
                reduce_rows::<true>(x, &first, len, red.stride, &mut out);
            } else {
                reduce_rows::<false>(x, &first, len, red.stride, &mut out);
            }
            return vec![LuminalTensor::new(out)];
        }
        for_each_row(&front_c, |f, off, valid| {
            if !valid {
                return;
            }
            let dst = &mut out[f * back_n..(f + 1) * back_n];
            for k in red.lo..red.hi {
                let base = off + k as isize * red.stride + back_c.base;
                let vals: &[f32] = if back_dense {
                    let b = base as usize;
                    &x[b..b + back_n]
                } else {
                    gather(
                        x,
                        &Access {
                            base,
                            axes: back.axes.clone(),
                        },
                        init,
                        &mut row,
                    );
                    &row
                };
                if max {
                    for (d, &v) in dst.iter_mut().zip(vals) {
                        *d = d.max(v);
                    }
                } else {
                    for (d, &v) in dst.iter_mut().zip(vals) {
                        *d += v;
                    }
                }
            }
        });
        vec![LuminalTensor::new(out)]
    }
}

/// Batched matrix product `[.., M, K] x [.., K, N]` over strided operands.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchedMatMul {
    /// Batch axes: (len, a stride, b stride).
    batch: Vec<(usize, isize, isize)>,
    m: usize,
    n: usize,
    k: usize,
    a_base: isize,
    b_base: isize,
    /// (row stride, column stride) of A (M x K) and B (K x N).
    a_strides: (isize, isize),
    b_strides: (isize, isize),
    a_access: Access,
    b_access: Access,
}

impl BatchedMatMul {
    /// (batch count, m, n, k): `batch` products of `[m, k] x [k, n]`.
    pub fn dims(&self) -> (usize, usize, usize, usize) {
        let batches = self.batch.iter().map(|b| b.0).product();
        (batches, self.m, self.n, self.k)
    }

    /// How A and B lie in memory, e.g. `NT`: `N` when rows are contiguous (column stride
    /// 1), `T` when columns are (row stride 1), `S` otherwise.
    pub fn layout(&self) -> String {
        let one = |(r, c): (isize, isize)| match (r, c) {
            (_, 1) => 'N',
            (1, _) => 'T',
            _ => 'S',
        };
        [one(self.a_strides), one(self.b_strides)].iter().collect()
    }
}

impl Operator for BatchedMatMul {
    fn process(&mut self, inp: Vec<(InputTensor, ShapeTracker)>) -> Vec<LuminalTensor> {
        let (a, b) = (data(&inp[0].0), data(&inp[1].0));
        assert_fits(&self.a_access, a.len(), "BatchedMatMul lhs");
        assert_fits(&self.b_access, b.len(), "BatchedMatMul rhs");
        let batches: usize = self.batch.iter().map(|b| b.0).product();
        let (m, n, k) = (self.m, self.n, self.k);
        if m * n == 0 || k == 0 {
            return vec![LuminalTensor::new(vec![0.0f32; batches * m * n])];
        }
        let len = batches * m * n;
        // Not zeroed: `sgemm` writes every element of each product before anything reads it
        // (zeroing up to 61 MB a product was a measurable part of the step).
        let mut out: Vec<f32> = Vec::with_capacity(len);
        let c = out.as_mut_ptr();
        let (batch, a_base, b_base) = (&self.batch, self.a_base, self.b_base);
        let (a_strides, b_strides) = (self.a_strides, self.b_strides);
        // Product `i`'s operands: its batch multi-index is `i` in row-major order over the
        // batch axes, A's and B's element `[batch index, 0, 0, 0]` are at `oa` and `ob`.
        let operands = |i: usize| {
            let (mut oa, mut ob, mut rest) = (a_base, b_base, i);
            for &(len, sa, sb) in batch.iter().rev() {
                let j = rest % len;
                rest /= len;
                oa += j as isize * sa;
                ob += j as isize * sb;
            }
            (
                Strided {
                    ptr: a.as_ptr().wrapping_offset(oa),
                    rs: a_strides.0,
                    cs: a_strides.1,
                },
                Strided {
                    ptr: b.as_ptr().wrapping_offset(ob),
                    rs: b_strides.0,
                    cs: b_strides.1,
                },
            )
        };
        // SAFETY: product `i` reads A[i, l] at `a + oa + i * a_strides.0 + l * a_strides.1`
        // (i < m, l < k), reads B[l, j] at `b + ob + l * b_strides.0 + j * b_strides.1`
        // (l < k, j < n) and writes C[i, j] at `c + i * m * n + i * n + j`, every one of them.
        // - Reads. `MatMulCompiler`, the only place a `BatchedMatMul` is built (its fields
        //   are private), took every field from `a_access` / `b_access`: two views of the
        //   same rank-r shape `[batch.., m, n, k]` with no padding (`lo = 0`, `hi = len`:
        //   every multi-index is a valid element, at `base + sum(index * stride)`). `oa`
        //   is the offset of element `[batch index, 0, 0, 0]` of `a_access`, so A[i, l]
        //   is its element `[batch index, i, 0, l]` (axis r-2 has length n > 0); likewise
        //   B[l, j] is element `[batch index, 0, j, l]` of `b_access` (axis r-3 has length
        //   m > 0). m, n, k > 0 here (the early return above), so no axis is empty and
        //   `assert_fits` checked, panicking otherwise, that every valid element's
        //   offset lies in `0..a.len()` (resp. `0..b.len()`). So every read, and the
        //   pointers `a.as_ptr() + oa` / `b.as_ptr() + ob`, stay inside `a` and `b`.
        // - Writes. `out` has capacity `batches * m * n`, so product `i`'s `m * n`
        //   elements from `c + i * m * n` are inside its allocation; `out` is fresh,
        //   borrowed only here, so they alias neither `a` nor `b`. `set_len` below comes
        //   after every product has written all of its elements.
        unsafe { crate::sgemm::sgemm_batched(batches, m, k, n, operands, c) };
        // SAFETY: the `batches` products wrote all `len` elements (`sgemm`'s contract).
        unsafe { out.set_len(len) };
        vec![LuminalTensor::new(out)]
    }
}

/// The data inputs of `node`, in input order, with the views they are read through.
pub(crate) fn sources(graph: &LuminalGraph, node: NodeIndex) -> Vec<(NodeIndex, ShapeTracker)> {
    let mut v: Vec<(u8, NodeIndex, ShapeTracker)> = graph
        .graph
        .edges_directed(node, Direction::Incoming)
        .filter_map(|e| e.weight().as_data().map(|d| (d.0, e.source(), d.2)))
        .collect();
    v.sort_by_key(|x| x.0);
    v.into_iter().map(|(_, n, s)| (n, s)).collect()
}

fn access_of(st: &ShapeTracker) -> Option<(View, Access)> {
    let v = View::from_tracker(st).ok()?;
    Some((v, v.access()))
}

/// Replaces `Mul` -> `SumReduce(last)` matmul patterns (any batch rank, broadcast batch
/// axes, transposed or sliced operands) with [`BatchedMatMul`].
#[derive(Debug, Default)]
pub struct MatMulCompiler;

impl Compiler for MatMulCompiler {
    fn compile<T: ToIdsMut>(&self, graph: &mut LuminalGraph, mut remap: T) {
        let reduces: Vec<NodeIndex> = graph
            .graph
            .node_indices()
            .filter(|&n| {
                graph
                    .graph
                    .node_weight(n)
                    .is_some_and(|o| o.as_any().is::<op::SumReduce>())
            })
            .collect();
        for sum in reduces {
            let Some(op::SumReduce(axis)) = graph
                .graph
                .node_weight(sum)
                .and_then(|o| o.as_any().downcast_ref::<op::SumReduce>())
                .cloned()
            else {
                continue;
            };
            let srcs = sources(graph, sum);
            let [(mul, prod_st)] = srcs.as_slice() else {
                continue;
            };
            let mul = *mul;
            let is_mul = graph
                .graph
                .node_weight(mul)
                .is_some_and(|o| o.as_any().is::<op::Mul>());
            let single_use = graph.graph.edges_directed(mul, Direction::Outgoing).count() == 1;
            if !is_mul || !single_use || graph.no_delete.contains(&mul) {
                continue;
            }
            let Some((prod_view, _)) = access_of(prod_st) else {
                continue;
            };
            let rank = prod_view.rank();
            if !prod_view.is_plain() || rank < 3 || axis != rank - 1 {
                continue;
            }
            let ins = sources(graph, mul);
            let [(a_node, a_st), (b_node, b_st)] = ins.as_slice() else {
                continue;
            };
            let (Some((a_view, a_acc)), Some((b_view, b_acc))) = (access_of(a_st), access_of(b_st))
            else {
                continue;
            };
            let unpadded = a_acc
                .axes
                .iter()
                .chain(&b_acc.axes)
                .all(AxisAccess::is_full);
            // The safety argument of `BatchedMatMul::process` rests on both operands having
            // the same rank-`rank` shape (as a `Mul`'s operands always do).
            let lens = |acc: &Access| -> Vec<usize> { acc.axes.iter().map(|x| x.len).collect() };
            let same_shape = a_acc.axes.len() == rank && lens(&a_acc) == lens(&b_acc);
            if !a_view.is_fake(rank - 2) || !b_view.is_fake(rank - 3) || !unpadded || !same_shape {
                continue;
            }
            let batch = (0..rank - 3)
                .map(|i| {
                    (
                        a_acc.axes[i].len,
                        a_acc.axes[i].stride,
                        b_acc.axes[i].stride,
                    )
                })
                .collect();
            let mm = BatchedMatMul {
                batch,
                m: a_acc.axes[rank - 3].len,
                n: b_acc.axes[rank - 2].len,
                k: a_acc.axes[rank - 1].len,
                a_base: a_acc.base,
                b_base: b_acc.base,
                a_strides: (a_acc.axes[rank - 3].stride, a_acc.axes[rank - 1].stride),
                b_strides: (b_acc.axes[rank - 1].stride, b_acc.axes[rank - 2].stride),
                a_access: a_acc,
                b_access: b_acc,
            };
            let new = graph
                .add_op(mm)
                .input(*a_node, 0, *a_st)
                .input(*b_node, 0, *b_st)
                .finish();
            move_outgoing_edge(sum, new, &mut graph.graph);
            move_references(
                &mut remap,
                &mut graph.no_delete,
                &mut graph.to_retrieve,
                sum,
                new,
            );
            graph.graph.remove_node(mul);
            graph.graph.remove_node(sum);
        }
    }
}

/// Replaces luminal's interpreted `Add`, `Mul`, `Mod`, `LessThan`, `Contiguous`,
/// `SumReduce` and `MaxReduce` with strided kernels.
#[derive(Debug, Default)]
pub struct StridedKernelCompiler;

impl Compiler for StridedKernelCompiler {
    fn compile<T: ToIdsMut>(&self, graph: &mut LuminalGraph, _: T) {
        for node in graph.graph.node_indices().collect::<Vec<_>>() {
            let srcs = sources(graph, node);
            let accesses: Option<Vec<Access>> = srcs
                .iter()
                .map(|(_, st)| access_of(st).map(|x| x.1))
                .collect();
            let Some(acc) = accesses else {
                continue;
            };
            let Some(op_ref) = graph.graph.node_weight(node) else {
                continue;
            };
            let any = op_ref.as_any();
            let binary = |kind| -> Option<Box<dyn Operator>> {
                let [a, b] = acc.as_slice() else {
                    return None;
                };
                Some(Box::new(StridedBinary {
                    kind,
                    a: a.clone(),
                    b: b.clone(),
                }))
            };
            let replacement: Option<Box<dyn Operator>> = if any.is::<op::Add>() {
                binary(BinaryKind::Add)
            } else if any.is::<op::Mul>() {
                binary(BinaryKind::Mul)
            } else if any.is::<op::Mod>() {
                binary(BinaryKind::Mod)
            } else if any.is::<op::LessThan>() {
                binary(BinaryKind::LessThan)
            } else if any.is::<op::Contiguous>() {
                acc.first()
                    .map(|a| Box::new(StridedCopy { src: a.clone() }) as Box<dyn Operator>)
            } else if let Some(op::SumReduce(d)) = any.downcast_ref::<op::SumReduce>() {
                acc.first().map(|a| {
                    Box::new(StridedReduce {
                        max: false,
                        src: a.clone(),
                        axis: *d,
                    }) as Box<dyn Operator>
                })
            } else if let Some(op::MaxReduce(d)) = any.downcast_ref::<op::MaxReduce>() {
                acc.first().map(|a| {
                    Box::new(StridedReduce {
                        max: true,
                        src: a.clone(),
                        axis: *d,
                    }) as Box<dyn Operator>
                })
            } else {
                None
            };
            if let (Some(new), Some(w)) = (replacement, graph.graph.node_weight_mut(node)) {
                *w = new;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{Backend, Evaluator, GraphBuilder, Tensor};

    fn run(
        build: fn(&mut GraphBuilder) -> Vec<Tensor>,
        x: &[f32],
        backend: Backend,
    ) -> Vec<Vec<f32>> {
        let mut g = GraphBuilder::new();
        let outs = build(&mut g);
        let mut ev = Evaluator::new(g, &outs, backend).unwrap();
        ev.set_input("a", x).unwrap();
        ev.run().unwrap()
    }

    /// Runs `build` (input `a`: 12 values, -0.0, NaN and infinities among them) on the fast
    /// kernels and on luminal's primitive ops, and checks every output bit for bit.
    fn matches_luminal(build: fn(&mut GraphBuilder) -> Vec<Tensor>) {
        matches_luminal_on(
            build,
            &[
                1.5,
                -0.0,
                0.0,
                f32::NAN,
                -2.25,
                f32::INFINITY,
                f32::NEG_INFINITY,
                3.0,
                -0.0,
                7.0,
                -1e-40,
                1e30,
            ],
        );
    }

    /// As [`matches_luminal`], with the input `x`.
    fn matches_luminal_on(build: fn(&mut GraphBuilder) -> Vec<Tensor>, x: &[f32]) {
        let fast = run(build, x, Backend::Cpu);
        let reference = run(build, x, Backend::CpuPrimitive);
        assert_eq!(fast.len(), reference.len());
        for (i, (f, r)) in fast.iter().zip(&reference).enumerate() {
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(f), bits(r), "output {i}: {f:?} vs {r:?}");
        }
    }

    /// Sums and maxima over axes of length 1 (the fast path of `StridedReduce`) agree bit
    /// for bit with luminal's primitive ops, over plain, permuted, padded, sliced and
    /// broadcast views, with -0.0, NaN and infinities among the values.
    #[test]
    fn reductions_over_unit_axes_match_luminal_bit_for_bit() {
        let build: fn(&mut GraphBuilder) -> Vec<Tensor> = |g| {
            let a = g.input("a", &[3, 1, 4]);
            let b = a.reshape(&[3, 4]);
            vec![
                a.sum(&[1]),
                a.max_axis(1),
                a.permute(&[2, 1, 0]).sum(&[1]),
                a.permute(&[1, 2, 0]).max_axis(0),
                a.pad(2, 1, 2).sum(&[1]),
                a.pad(0, 2, 0).max_axis(1),
                b.slice(1, 2, 3).sum(&[1]),
                b.slice(0, 1, 2).permute(&[1, 0]).max_axis(1),
                b.expand(1, 1).sum(&[1]),
                b.pad(1, 1, 0).slice(1, 0, 1).max_axis(1),
                b.pad(1, 1, 0).slice(1, 0, 1).sum(&[1]),
                a.reshape(&[12, 1]).sum(&[1]),
                // Intermediates used once: reduced in place.
                a.mul_scalar(2.0).sum(&[1]),
                a.add_scalar(-1.0).max_axis(1),
                a.mul_scalar(-1.0).reshape(&[12, 1]).sum(&[1]),
            ]
        };
        matches_luminal(build);
    }

    /// Element-wise ops whose operands are broadcast or strided (read row by row where they
    /// lie, fresh output or in place) agree bit for bit with luminal's primitive ops.
    #[test]
    fn broadcast_and_strided_operands_match_luminal_bit_for_bit() {
        let build: fn(&mut GraphBuilder) -> Vec<Tensor> = |g| {
            let a = g.input("a", &[3, 1, 4]);
            let col = a.reshape(&[3, 4]).slice(1, 0, 1).reshape(&[3]);
            let row = a.reshape(&[12]).slice(0, 4, 8);
            // Outer products: one operand broadcast along rows, the other along columns.
            let outer = col.expand(1, 4) * row.expand(0, 3);
            let lt = row.expand(0, 3).less_than(col.expand(1, 4));
            // Transposed and broadcast batch axes, fresh output.
            let m = a.reshape(&[3, 4]);
            let t = m.permute(&[1, 0]).expand(0, 2) + col.expand(0, 4).expand(0, 2);
            // In place: the left operand is an intermediate used once (dense, handed over).
            let own = m.mul_scalar(3.0) % m.permute(&[1, 0]).reshape(&[3, 4]).add_scalar(0.5);
            let own_rhs = m.permute(&[1, 0]).reshape(&[3, 4]) + m.add_scalar(-1.0);
            let own_bcast = m.mul_scalar(2.0) * row.expand(0, 3);
            // In place on the right: the broadcast left operand is read row by row.
            let rhs_mod = col.expand(1, 4) % m.mul_scalar(3.0);
            let rhs_lt = row.expand(0, 3).less_than(m.mul_scalar(2.0));
            vec![outer, lt, t, own, own_rhs, own_bcast, rhs_mod, rhs_lt]
        };
        matches_luminal(build);
    }

    /// Element-wise ops large enough to be split over threads (`par_split`: at least
    /// `PAR_ELEMS` outputs, parts at row boundaries of the joint row walk) agree bit for bit
    /// with luminal's primitive ops: dense operands (fresh output and in place), broadcast
    /// rows and scalars, transposed operands.
    #[test]
    fn large_element_wise_ops_split_over_threads_match_luminal_bit_for_bit() {
        let build: fn(&mut GraphBuilder) -> Vec<Tensor> = |g| {
            let a = g.input("a", &[3, 1, 4]);
            let m = a.reshape(&[3, 4]);
            let row = a.reshape(&[12]).slice(0, 4, 8);
            // 30,001 x 12 = 360,012 outputs (not a multiple of the thread count).
            let big = m.expand(0, 30_001);
            let x = big.mul_scalar(2.0);
            let y = big.add_scalar(1.0);
            // Both dense and used twice: fresh outputs from two slices.
            let sum = x + y;
            let prod = x * y;
            // In place (an intermediate used once), with a dense and a broadcast operand.
            let own = big.mul_scalar(3.0) % y;
            let own_bcast = big.add_scalar(-1.0) * row.expand(0, 3).expand(0, 30_001);
            // Row walks with a fresh output: broadcast and transposed operands.
            let walk = big * m.permute(&[1, 0]).permute(&[1, 0]).expand(0, 30_001);
            let t = big
                .permute(&[0, 2, 1])
                .less_than(y.permute(&[0, 2, 1]).mul_scalar(0.5));
            vec![sum, prod, own, own_bcast, walk, t]
        };
        matches_luminal(build);
    }

    /// Element-wise ops on padded operands with rows of 64 values or more (a concatenation's
    /// halves; `zip_gathered`: a block of rows gathered at a time) agree bit for bit with
    /// luminal's primitive ops: on one thread and split over threads (several blocks a part,
    /// the split not on a block boundary), padding on the row axis and on an outer axis (whole
    /// rows of padding), `-0.0` meeting the padding's `0.0`.
    #[test]
    fn padded_operands_match_luminal_bit_for_bit() {
        let build: fn(&mut GraphBuilder) -> Vec<Tensor> = |g| {
            let a = g.input("a", &[3, 1, 4]);
            let wide = a.reshape(&[3, 4]).expand(2, 20).reshape(&[3, 80]);
            let small = wide.concat(&[wide.mul_scalar(-1.0)], 1); // [3, 160]
            let outer = small.pad(0, 1, 2) * small.add_scalar(0.5).pad(0, 2, 1); // [6, 160]
            let lt = wide
                .pad(1, 8, 0)
                .less_than(wide.mul_scalar(2.0).pad(1, 0, 8));
            // 3,001 x 3 x 160 = 1,440,480 outputs, split over the threads.
            let big = wide.expand(0, 3_001);
            let big_cat = big.concat(&[big.mul_scalar(0.25)], 2);
            let big_mod =
                big.pad(0, 1, 0).pad(2, 3, 0) % big.add_scalar(2.0).pad(0, 0, 1).pad(2, 0, 3);
            vec![small, outer, lt, big_cat, big_mod]
        };
        matches_luminal(build);
    }

    /// A multiply by 1 adds no op (`GraphBuilder`'s `mul_scalar`): the tensor comes back as it
    /// was, so a mean over an axis of length 1 is its sum alone, and it equals, bit for bit,
    /// the sum multiplied by a tensor of ones (-0.0, NaN and infinities among the values).
    /// Seen to fail with the shortcut removed (the node changes).
    #[test]
    fn multiplying_by_one_adds_no_op() {
        let mut g = GraphBuilder::new();
        let a = g.input("a", &[3, 1, 4]);
        let same = a.mul_scalar(1.0);
        assert_eq!((same.node(), same.view()), (a.node(), a.view()));
        assert_ne!(a.mul_scalar(-1.0).node(), a.node());
        let build: fn(&mut GraphBuilder) -> Vec<Tensor> = |g| {
            let a = g.input("a", &[3, 1, 4]);
            let sum = a.sum(&[1]);
            vec![a.mean(&[1]), sum * sum.full_like(1.0)]
        };
        matches_luminal(build);
        let x: Vec<f32> = (0..12)
            .map(|i| [1.5, -0.0, f32::NAN, f32::INFINITY][i % 4])
            .collect();
        let outs = run(build, &x, crate::Backend::Cpu);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&outs[0]), bits(&outs[1]));
    }

    /// Reductions with one output per row and enough rows to be split over threads agree
    /// bit for bit with luminal's primitive ops: contiguous and strided rows, sums and
    /// maxima, and padded rows (outputs left at the initial value, results scattered). Rows
    /// of 7 over the 12 input values repeat every 12 rows, and the two threads' split
    /// (row 140,000) is not a multiple of 12, so a part reading another part's rows shows.
    #[test]
    fn many_row_reductions_split_over_threads_match_luminal_bit_for_bit() {
        let build: fn(&mut GraphBuilder) -> Vec<Tensor> = |g| {
            let a = g.input("a", &[3, 1, 4]);
            // 163,338 x 12 = 280,008 x 7 values.
            let flat = a.reshape(&[3, 4]).expand(0, 163_338).mul_scalar(1.5);
            let rows = flat.reshape(&[280_008, 7]);
            // The same shape, its rows strided (280,008 apart).
            let strided = flat.reshape(&[7, 280_008]).permute(&[1, 0]);
            vec![
                rows.sum(&[1]),
                rows.max_axis(1),
                strided.sum(&[1]),
                strided.max_axis(1),
                rows.pad(0, 2, 3).sum(&[1]),
            ]
        };
        matches_luminal(build);
    }

    /// luminal's unary ops, replaced by `ParUnary` (split over threads when large), agree bit
    /// for bit with luminal's own: each op on a small and on a large input, on an input the
    /// executor hands over and on one it must copy (used twice), and a fused chain.
    #[test]
    fn unary_ops_match_luminal_bit_for_bit() {
        let build: fn(&mut GraphBuilder) -> Vec<Tensor> = |g| {
            let a = g.input("a", &[3, 1, 4]);
            let m = a.reshape(&[3, 4]);
            let big = m.expand(0, 30_001).mul_scalar(0.75);
            let shared = m.add_scalar(0.5);
            vec![
                m.exp2(),
                m.log2(),
                m.sqrt(),
                m.recip(),
                m.sin(),
                big.exp2(),
                big.log2(),
                big.sqrt(),
                big.recip(),
                big.sin(),
                shared.exp2(),
                shared.recip() + shared,
                m.mul_scalar(2.0).log2().exp2(),
            ]
        };
        matches_luminal(build);
    }

    /// Reductions with one output per row (eight rows at a time, then the rest) agree bit
    /// for bit with luminal's primitive ops: rows of several lengths, a strided reduced
    /// axis, padded rows and a padded reduced axis, -0.0, NaN and infinities among the values.
    #[test]
    fn row_reductions_match_luminal_bit_for_bit() {
        let build: fn(&mut GraphBuilder) -> Vec<Tensor> = |g| {
            let a = g.input("a", &[3, 1, 4]);
            let m = a.reshape(&[3, 4]);
            let tall = a
                .reshape(&[12, 1])
                .expand(1, 3)
                .contiguous()
                .reshape(&[9, 4]);
            vec![
                tall.sum(&[1]),
                tall.max_axis(1),
                tall.permute(&[1, 0]).sum(&[1]),
                tall.permute(&[1, 0]).max_axis(1),
                tall.pad(0, 2, 3).sum(&[1]),
                tall.pad(1, 1, 2).max_axis(1),
                tall.slice(1, 1, 3).sum(&[1]),
                m.expand(0, 5).sum(&[2]),
                m.expand(2, 3).max_axis(1),
            ]
        };
        matches_luminal(build);
    }

    /// Sums of contiguous rows of 8 values or more (`sum_8_rows`: 8 rows in the lanes of a
    /// vector, blocks transposed in registers) agree bit for bit with luminal's primitive ops,
    /// on finite values whose sums depend on the order (1e8 and -1e8 among small ones): 24
    /// rows of 20 (two blocks of 8 values and 4 more), the same from the second value on, and
    /// the maxima (which keep the scalar path).
    #[test]
    fn contiguous_row_sums_match_luminal_bit_for_bit() {
        let build: fn(&mut GraphBuilder) -> Vec<Tensor> = |g| {
            let a = g.input("a", &[3, 1, 4]);
            let wide = a
                .reshape(&[12])
                .expand(0, 40)
                .contiguous()
                .reshape(&[24, 20]);
            vec![
                wide.sum(&[1]),
                wide.slice(1, 1, 19).sum(&[1]),
                wide.max_axis(1),
            ]
        };
        let x = [
            1.0, 1e8, 0.1, -1e8, 3.0, 0.7, -0.3, 2.5e-3, 1e-8, 5.0, -7.25, 0.33,
        ];
        matches_luminal_on(build, &x);
    }
}
