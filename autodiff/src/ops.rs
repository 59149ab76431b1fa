//! Tensor operations, lowered to luminal primitives the way luminal's own `hl_ops` do
//! (so luminal's compilers recognise the same patterns, e.g. matmuls).

use std::ops::{Add, Div, Mul, Neg, Rem, Sub};

use luminal::op;

use super::error::AutodiffError;
use super::graph::{with_ctx, Ctx, LeafKind, NodeRole, Tensor};
use super::view::{View, MAX_RANK};

const LN_2: f32 = std::f32::consts::LN_2;

impl Ctx {
    pub fn permute(&mut self, t: Tensor, axes: &[usize]) -> Tensor {
        let mut seen = vec![false; t.rank()];
        let valid = axes.len() == t.rank()
            && axes
                .iter()
                .all(|&a| a < seen.len() && !std::mem::replace(&mut seen[a], true));
        if !valid {
            self.fail(AutodiffError::InvalidArgument {
                op: "permute",
                reason: format!(
                    "{axes:?} is not a permutation of the axes of a rank-{} tensor",
                    t.rank()
                ),
            });
            return t;
        }
        Tensor {
            view: t.view.permute(axes),
            ..t
        }
    }

    pub fn expand(&mut self, t: Tensor, axis: usize, size: usize) -> Tensor {
        if axis > t.rank() || t.rank() >= MAX_RANK {
            self.fail(AutodiffError::InvalidArgument {
                op: "expand",
                reason: format!(
                    "cannot insert axis {axis} into a rank-{} tensor (max rank {MAX_RANK})",
                    t.rank()
                ),
            });
            return t;
        }
        Tensor {
            view: t.view.expand(axis, size),
            ..t
        }
    }

    pub fn broadcast_to(&mut self, t: Tensor, shape: &[usize]) -> Tensor {
        let src = t.shape();
        let compatible = shape.len() >= src.len()
            && shape.len() <= MAX_RANK
            && src
                .iter()
                .rev()
                .zip(shape.iter().rev())
                .all(|(&s, &d)| s == d || s == 1);
        if !compatible {
            self.fail(AutodiffError::InvalidArgument {
                op: "broadcast_to",
                reason: format!("cannot broadcast shape {src:?} to {shape:?}"),
            });
            return self.poison(shape);
        }
        let mut t = t;
        let lead = shape.len() - src.len();
        for (axis, &n) in shape.iter().enumerate().take(lead) {
            t = self.expand(t, axis, n);
        }
        for (i, &s) in src.iter().enumerate() {
            let axis = lead + i;
            if s == 1 && shape[axis] != 1 {
                if !t.view.can_broadcast_unit(axis) {
                    t = self.contiguous(t);
                }
                t.view = t.view.broadcast_unit(axis, shape[axis]);
            }
        }
        t
    }

    pub fn reshape(&mut self, t: Tensor, shape: &[usize]) -> Tensor {
        if shape.iter().product::<usize>() != t.numel() {
            self.fail(AutodiffError::InvalidArgument {
                op: "reshape",
                reason: format!(
                    "cannot reshape {:?} ({} elements) to {shape:?}",
                    t.shape(),
                    t.numel()
                ),
            });
            return self.poison(shape);
        }
        if shape == t.shape().as_slice() {
            return t;
        }
        let t = self.contiguous(t);
        match View::contiguous(shape) {
            Ok(view) => Tensor { view, ..t },
            Err(e) => {
                self.fail(e);
                t
            }
        }
    }

    pub fn slice(&mut self, t: Tensor, axis: usize, start: usize, end: usize) -> Tensor {
        if !self.axis_ok("slice", &t, axis) {
            return t;
        }
        let len = t.view.axis_len(axis);
        if start > end || end > len {
            self.fail(AutodiffError::InvalidArgument {
                op: "slice",
                reason: format!(
                    "range {start}..{end} out of bounds for axis {axis} of length {len}"
                ),
            });
            let mut shape = t.shape();
            shape[axis] = 0;
            return self.poison(&shape);
        }
        if start == 0 && end == len {
            return t;
        }
        if t.view.can_slice(axis, start, end) {
            return Tensor {
                view: t.view.slice(axis, start, end),
                ..t
            };
        }
        if start > 0 && end < len && t.view.can_slice(axis, start, len) {
            // A slice bounded on both ends: cut the front, copy, then cut the back.
            let front = Tensor {
                view: t.view.slice(axis, start, len),
                ..t
            };
            let front = self.contiguous(front);
            return self.slice(front, axis, 0, end - start);
        }
        let t = self.contiguous(t);
        self.slice(t, axis, start, end)
    }

    pub fn pad(&mut self, t: Tensor, axis: usize, before: usize, after: usize) -> Tensor {
        if !self.axis_ok("pad", &t, axis) {
            return t;
        }
        if before == 0 && after == 0 {
            return t;
        }
        let t = if t.view.can_pad(axis) {
            t
        } else {
            self.contiguous(t)
        };
        Tensor {
            view: t.view.pad(axis, before, after),
            ..t
        }
    }

    pub fn concat(&mut self, parts: &[Tensor], axis: usize) -> Tensor {
        let Some(first) = parts.first().copied() else {
            self.fail(AutodiffError::InvalidArgument {
                op: "concat",
                reason: "no tensors given".into(),
            });
            return self.poison(&[]);
        };
        if !self.axis_ok("concat", &first, axis) {
            return first;
        }
        let mut rest_shape = first.shape();
        rest_shape[axis] = 0;
        let mut total = 0;
        for p in parts {
            let mut s = p.shape();
            if s.len() != rest_shape.len() {
                self.fail(AutodiffError::ShapeMismatch {
                    op: "concat",
                    lhs: first.shape(),
                    rhs: s,
                });
                return first;
            }
            total += s[axis];
            s[axis] = 0;
            if s != rest_shape {
                self.fail(AutodiffError::ShapeMismatch {
                    op: "concat",
                    lhs: first.shape(),
                    rhs: p.shape(),
                });
                return first;
            }
        }
        let mut offset = 0;
        let mut sum: Option<Tensor> = None;
        for &p in parts {
            let len = p.view.axis_len(axis);
            let padded = self.pad(p, axis, offset, total - offset - len);
            offset += len;
            sum = Some(match sum {
                None => padded,
                Some(s) => self.add(s, padded),
            });
        }
        sum.unwrap_or(first)
    }

    pub fn add(&mut self, a: Tensor, b: Tensor) -> Tensor {
        self.binary("add", op::Add, a, b)
    }

    pub fn mul(&mut self, a: Tensor, b: Tensor) -> Tensor {
        self.binary("mul", op::Mul, a, b)
    }

    pub fn rem(&mut self, a: Tensor, b: Tensor) -> Tensor {
        self.binary("rem", op::Mod, a, b)
    }

    pub fn less_than(&mut self, a: Tensor, b: Tensor) -> Tensor {
        self.binary("less_than", op::LessThan, a, b)
    }

    /// `t * v`; `t` itself when `v` is 1 (a mean over axes of length 1: `x * 1` is `x` bit
    /// for bit, so the pass over the tensor, forward and backward, is left out).
    pub fn mul_scalar(&mut self, t: Tensor, v: f32) -> Tensor {
        if v == 1.0 {
            return t;
        }
        let c = self.splat(v, &t.shape());
        self.mul(t, c)
    }

    pub fn add_scalar(&mut self, t: Tensor, v: f32) -> Tensor {
        let c = self.splat(v, &t.shape());
        self.add(t, c)
    }

    pub fn neg(&mut self, t: Tensor) -> Tensor {
        self.mul_scalar(t, -1.0)
    }

    pub fn sub(&mut self, a: Tensor, b: Tensor) -> Tensor {
        let nb = self.neg(b);
        self.add(a, nb)
    }

    pub fn div(&mut self, a: Tensor, b: Tensor) -> Tensor {
        let r = self.unary(op::Recip, b);
        self.mul(a, r)
    }

    pub fn exp(&mut self, t: Tensor) -> Tensor {
        let scaled = self.mul_scalar(t, 1.0 / LN_2);
        self.unary(op::Exp2, scaled)
    }

    pub fn ln(&mut self, t: Tensor) -> Tensor {
        let l = self.unary(op::Log2, t);
        self.mul_scalar(l, LN_2)
    }

    pub fn relu(&mut self, t: Tensor) -> Tensor {
        let zero = self.splat(0.0, &t.shape());
        let positive = self.less_than(zero, t);
        self.mul(t, positive)
    }

    pub fn maximum(&mut self, a: Tensor, b: Tensor) -> Tensor {
        let b_wins = self.less_than(a, b);
        let a_wins = self.mul_scalar(b_wins, -1.0);
        let a_wins = self.add_scalar(a_wins, 1.0);
        let from_b = self.mul(b_wins, b);
        let from_a = self.mul(a_wins, a);
        self.add(from_b, from_a)
    }

    /// Sorted, deduplicated, checked axes.
    fn axes_ok(&mut self, op: &'static str, t: &Tensor, axes: &[usize]) -> Option<Vec<usize>> {
        let mut v = axes.to_vec();
        v.sort_unstable();
        v.dedup();
        if v.is_empty() || v.len() != axes.len() {
            self.fail(AutodiffError::InvalidArgument {
                op,
                reason: format!("bad axis list {axes:?}"),
            });
            return None;
        }
        for &a in &v {
            if !self.axis_ok(op, t, a) {
                return None;
            }
        }
        Some(v)
    }

    pub fn sum(&mut self, t: Tensor, axes: &[usize]) -> Tensor {
        let Some(axes) = self.axes_ok("sum", &t, axes) else {
            return t;
        };
        let mut t = t;
        for &a in axes.iter().rev() {
            t = self.reduce("sum", false, t, a);
        }
        t
    }

    pub fn mean(&mut self, t: Tensor, axes: &[usize]) -> Tensor {
        let count: usize = axes
            .iter()
            .filter(|&&a| a < t.rank())
            .map(|&a| t.view.axis_len(a))
            .product();
        let s = self.sum(t, axes);
        self.mul_scalar(s, 1.0 / count.max(1) as f32)
    }

    pub fn max_axis(&mut self, t: Tensor, axis: usize) -> Tensor {
        self.reduce("max", true, t, axis)
    }

    /// Expand a reduced tensor back over the (sorted) reduced axes.
    fn unreduce(&mut self, t: Tensor, axes: &[usize], shape: &[usize]) -> Tensor {
        let mut t = t;
        for &a in axes {
            t = self.expand(t, a, shape[a]);
        }
        t
    }

    pub fn softmax(&mut self, t: Tensor, axis: usize) -> Tensor {
        if !self.axis_ok("softmax", &t, axis) {
            return t;
        }
        let shape = t.shape();
        let m = self.max_axis(t, axis);
        let m = self.unreduce(m, &[axis], &shape);
        let shifted = self.sub(t, m);
        let e = self.exp(shifted);
        let s = self.sum(e, &[axis]);
        let s = self.unreduce(s, &[axis], &shape);
        self.div(e, s)
    }

    pub fn log_softmax(&mut self, t: Tensor, axis: usize) -> Tensor {
        if !self.axis_ok("log_softmax", &t, axis) {
            return t;
        }
        let shape = t.shape();
        let m = self.max_axis(t, axis);
        let m = self.unreduce(m, &[axis], &shape);
        let shifted = self.sub(t, m);
        let e = self.exp(shifted);
        let s = self.sum(e, &[axis]);
        let lse = self.ln(s);
        let lse = self.unreduce(lse, &[axis], &shape);
        self.sub(shifted, lse)
    }

    pub fn layer_norm(&mut self, t: Tensor, axes: &[usize], eps: f32) -> Tensor {
        let Some(axes) = self.axes_ok("layer_norm", &t, axes) else {
            return t;
        };
        let shape = t.shape();
        let mean = self.mean(t, &axes);
        let mean = self.unreduce(mean, &axes, &shape);
        let centered = self.sub(t, mean);
        let sq = self.mul(centered, centered);
        let var = self.mean(sq, &axes);
        let var = self.add_scalar(var, eps);
        let std = self.unary(op::Sqrt, var);
        let inv = self.unary(op::Recip, std);
        let inv = self.unreduce(inv, &axes, &shape);
        self.mul(centered, inv)
    }

    pub fn one_hot(&mut self, labels: Tensor, classes: usize) -> Tensor {
        if labels.rank() >= MAX_RANK {
            self.fail(AutodiffError::RankTooHigh {
                rank: labels.rank() + 1,
                max: MAX_RANK,
            });
            return labels;
        }
        let name = format!("__ramp_{classes}_{}", self.leaves.len());
        let ramp_data: Vec<f32> = (0..classes).map(|i| i as f32).collect();
        let ramp = self.leaf(&name, &[classes], LeafKind::Constant, Some(ramp_data));
        let mut shape = labels.shape();
        shape.push(classes);
        let ramp = self.broadcast_to(ramp, &shape);
        let labels = self.expand(labels, labels.rank(), classes);
        let below = self.less_than(labels, ramp);
        let above = self.less_than(ramp, labels);
        let differs = self.add(below, above);
        let same = self.mul_scalar(differs, -1.0);
        self.add_scalar(same, 1.0)
    }

    pub fn cross_entropy_with_logits(&mut self, logits: Tensor, target: Tensor) -> Tensor {
        if logits.rank() == 0 {
            self.fail(AutodiffError::InvalidArgument {
                op: "cross_entropy_with_logits",
                reason: "logits must have a class axis".into(),
            });
            return logits;
        }
        let last = logits.rank() - 1;
        let logp = self.log_softmax(logits, last);
        let picked = self.mul(target, logp);
        let s = self.sum(picked, &[last]);
        self.neg(s)
    }

    pub fn squared_error(&mut self, a: Tensor, b: Tensor) -> Tensor {
        if a.rank() == 0 {
            self.fail(AutodiffError::InvalidArgument {
                op: "squared_error",
                reason: "tensors must have a feature axis".into(),
            });
            return a;
        }
        let d = self.sub(a, b);
        let sq = self.mul(d, d);
        self.sum(sq, &[a.rank() - 1])
    }

    pub fn mean_all(&mut self, t: Tensor) -> Tensor {
        if t.rank() == 0 {
            return t;
        }
        let axes: Vec<usize> = (0..t.rank()).collect();
        self.mean(t, &axes)
    }

    pub fn stop_gradient(&mut self, t: Tensor) -> Tensor {
        if !self.owns(&t) {
            return t;
        }
        self.force_contiguous(t, NodeRole::StopGradient)
    }

    /// Make a matmul operand acceptable to every backend's matmul kernel.
    fn matmul_operand(&mut self, t: Tensor) -> Tensor {
        if t.view.is_plain_or_transposed() {
            t
        } else {
            self.force_contiguous(t, NodeRole::Op)
        }
    }

    /// `[.., M, K] x [.., K, N]` with equal batch dims, as broadcast-multiply + sum.
    fn matmul_lowered(&mut self, a: Tensor, b: Tensor) -> Tensor {
        let r = a.rank();
        let n = b.view.axis_len(r - 1);
        let m = a.view.axis_len(r - 2);
        let a = self.matmul_operand(a);
        let b = self.matmul_operand(b);
        // a: [.., M, N(fake), K]; b: [.., M(fake), N, K]; multiply, sum over K.
        let a = self.expand(a, r - 1, n);
        let mut axes: Vec<usize> = (0..r).collect();
        axes.swap(r - 2, r - 1);
        let b = self.permute(b, &axes);
        let b = self.expand(b, r - 2, m);
        let prod = self.mul(a, b);
        self.reduce("matmul", false, prod, r)
    }

    pub fn matmul(&mut self, a: Tensor, b: Tensor) -> Tensor {
        if !self.owns(&a) || !self.owns(&b) {
            return a;
        }
        let (sa, sb) = (a.shape(), b.shape());
        let bad = |c: &mut Ctx, reason: String| {
            c.fail(AutodiffError::InvalidArgument {
                op: "matmul",
                reason,
            });
        };
        if sa.len() < 2 || sb.len() < 2 {
            bad(
                self,
                format!("operands must be at least 2-D, got {sa:?} x {sb:?}"),
            );
            return self.poison(&[]);
        }
        let (k, k2) = (sa[sa.len() - 1], sb[sb.len() - 2]);
        let mut out = sa[..sa.len() - 1].to_vec();
        out.push(sb[sb.len() - 1]);
        if k != k2 {
            bad(self, format!("inner dimensions differ: {sa:?} x {sb:?}"));
            return self.poison(&out);
        }
        if sb.len() == 2 {
            if sa.len() == 2 {
                return self.matmul_lowered(a, b);
            }
            // Fold the leading dims into M: one 2-D matmul.
            let rows: usize = sa[..sa.len() - 1].iter().product();
            let flat = self.reshape(a, &[rows, k]);
            let y = self.matmul_lowered(flat, b);
            return self.reshape(y, &out);
        }
        if sa.len() != sb.len() || sa[..sa.len() - 2] != sb[..sb.len() - 2] {
            bad(self, format!("batch dimensions differ: {sa:?} x {sb:?}"));
            return self.poison(&out);
        }
        if sa.len() + 1 > MAX_RANK {
            self.fail(AutodiffError::RankTooHigh {
                rank: sa.len() + 1,
                max: MAX_RANK,
            });
            return self.poison(&out);
        }
        self.matmul_lowered(a, b)
    }
}

macro_rules! method {
    ($(#[$doc:meta])* $name:ident($($arg:ident: $ty:ty),*)) => {
        $(#[$doc])*
        pub fn $name(self, $($arg: $ty),*) -> Tensor {
            with_ctx(self.graph, |c| c.$name(self, $($arg),*))
        }
    };
}

impl Tensor {
    method!(
        /// Reorder axes: new axis `i` is old axis `axes[i]`.
        permute(axes: &[usize])
    );
    method!(
        /// Insert a broadcast axis of `size` at position `axis` (no copy).
        expand(axis: usize, size: usize)
    );
    method!(
        /// NumPy-style broadcast (new leading axes, length-1 axes stretched; no copy).
        broadcast_to(shape: &[usize])
    );
    method!(
        /// Reinterpret as `shape` (copies first unless the view is plain row-major).
        reshape(shape: &[usize])
    );
    method!(
        /// Elements `start..end` of `axis`.
        slice(axis: usize, start: usize, end: usize)
    );
    method!(
        /// Zero-pad `axis` with `before` and `after` elements.
        pad(axis: usize, before: usize, after: usize)
    );
    method!(
        /// 1.0 where `self < rhs`, else 0.0 (no gradient).
        less_than(rhs: Tensor)
    );
    method!(
        /// Element-wise maximum; where equal, the gradient goes to `self`.
        maximum(rhs: Tensor)
    );
    method!(
        /// `self + v` element-wise.
        add_scalar(v: f32)
    );
    method!(
        /// `self * v` element-wise.
        mul_scalar(v: f32)
    );
    method!(
        /// Natural exponential (lowered as `exp2(x / ln 2)`).
        exp()
    );
    method!(
        /// Natural logarithm (lowered as `log2(x) * ln 2`).
        ln()
    );
    method!(
        /// `max(x, 0)`, computed as `x * (0 < x)`: the gradient at 0 is 0 (as in TF).
        relu()
    );
    method!(
        /// Sum over `axes` (removed from the shape).
        sum(axes: &[usize])
    );
    method!(
        /// Mean over `axes` (removed from the shape).
        mean(axes: &[usize])
    );
    method!(
        /// Maximum over one axis (removed). Gradient: split evenly among tied maxima.
        max_axis(axis: usize)
    );
    method!(
        /// Mean of all elements (a scalar).
        mean_all()
    );
    method!(
        /// Softmax along `axis` (max-shifted).
        softmax(axis: usize)
    );
    method!(
        /// Log-softmax along `axis` (max-shifted).
        log_softmax(axis: usize)
    );
    method!(
        /// Normalise to zero mean and unit variance jointly over `axes` (no gain/bias):
        /// `(x - mean) / sqrt(var + eps)`, variance biased. `&[rank-1]` is the per-row
        /// layer norm; `&[1, 2]` on `(task, rows, d)` is the TF reference's task-wide one.
        layer_norm(axes: &[usize], eps: f32)
    );
    method!(
        /// One-hot encoding of class indices (given as floats) with a new last axis.
        one_hot(classes: usize)
    );
    method!(
        /// Per-row cross-entropy `-sum(target * log_softmax(self))` over the last axis.
        cross_entropy_with_logits(target: Tensor)
    );
    method!(
        /// Per-row squared L2 distance over the last axis.
        squared_error(rhs: Tensor)
    );
    method!(
        /// Same values, but no gradient flows back through this tensor.
        stop_gradient()
    );
    method!(
        /// Matrix product: `[M,K]x[K,N]`, `[..,M,K]x[K,N]` (shared right operand) or
        /// `[..,M,K]x[..,K,N]` (equal batch dims).
        matmul(rhs: Tensor)
    );

    /// Element-wise `exp2`.
    pub fn exp2(self) -> Tensor {
        with_ctx(self.graph, |c| c.unary(op::Exp2, self))
    }

    /// Element-wise `log2`.
    pub fn log2(self) -> Tensor {
        with_ctx(self.graph, |c| c.unary(op::Log2, self))
    }

    /// Element-wise square root.
    pub fn sqrt(self) -> Tensor {
        with_ctx(self.graph, |c| c.unary(op::Sqrt, self))
    }

    /// Element-wise reciprocal.
    pub fn recip(self) -> Tensor {
        with_ctx(self.graph, |c| c.unary(op::Recip, self))
    }

    /// Element-wise sine.
    pub fn sin(self) -> Tensor {
        with_ctx(self.graph, |c| c.unary(op::Sin, self))
    }

    /// Swap the last two axes.
    pub fn t(self) -> Tensor {
        let r = self.rank();
        let mut axes: Vec<usize> = (0..r).collect();
        if r >= 2 {
            axes.swap(r - 2, r - 1);
        }
        self.permute(&axes)
    }

    /// Copy into a row-major buffer (no-op when already one).
    pub fn contiguous(self) -> Tensor {
        with_ctx(self.graph, |c| c.contiguous(self))
    }

    /// Per-row cross-entropy against class indices (floats) over the last axis.
    pub fn cross_entropy_with_labels(self, labels: Tensor) -> Tensor {
        let classes = self.shape().last().copied().unwrap_or(0);
        with_ctx(self.graph, |c| {
            let target = c.one_hot(labels, classes);
            c.cross_entropy_with_logits(self, target)
        })
    }

    /// Concatenate `self` and `others` (in that order) along `axis`.
    pub fn concat(self, others: &[Tensor], axis: usize) -> Tensor {
        let mut parts = vec![self];
        parts.extend_from_slice(others);
        with_ctx(self.graph, |c| c.concat(&parts, axis))
    }
}

macro_rules! binop {
    ($tr:ident, $m:ident, $scalar:expr) => {
        impl $tr for Tensor {
            type Output = Tensor;
            fn $m(self, rhs: Tensor) -> Tensor {
                with_ctx(self.graph, |c| c.$m(self, rhs))
            }
        }
        impl $tr<f32> for Tensor {
            type Output = Tensor;
            fn $m(self, rhs: f32) -> Tensor {
                #[allow(clippy::redundant_closure_call)]
                ($scalar)(self, rhs)
            }
        }
    };
}

binop!(Add, add, |t: Tensor, v: f32| t.add_scalar(v));
binop!(Sub, sub, |t: Tensor, v: f32| t.add_scalar(-v));
binop!(Mul, mul, |t: Tensor, v: f32| t.mul_scalar(v));
binop!(Div, div, |t: Tensor, v: f32| t.mul_scalar(1.0 / v));

/// Element-wise remainder with the sign of the dividend (`f32 %`).
impl Rem for Tensor {
    type Output = Tensor;
    fn rem(self, rhs: Tensor) -> Tensor {
        with_ctx(self.graph, |c| c.rem(self, rhs))
    }
}

/// `-x`, lowered as `x * -1` (like luminal).
impl Neg for Tensor {
    type Output = Tensor;
    fn neg(self) -> Tensor {
        with_ctx(self.graph, |c| c.neg(self))
    }
}
