//! Concrete views: luminal's `ShapeTracker` with every dimension known.
//!
//! A luminal edge carries a `ShapeTracker` that says how the consumer sees the producer's
//! buffer: which physical dimensions exist (some *fake*, i.e. broadcast), how they are
//! permuted, sliced and zero-padded. Our shapes are all known when the graph is built, so
//! [`View`] stores the same information with plain `usize`s, converts to and from
//! `ShapeTracker` exactly, and resolves to per-axis strides ([`Access`]) for the fast CPU
//! kernels and the f64 reference evaluator.
//!
//! Invariants kept by the front end (each documented luminal quirk is avoided, not
//! emulated): a physical dimension is never both sliced and padded, never sliced on both
//! ends, and fake dimensions are never sliced or padded.

use luminal::prelude::symbolic::Expression;
use luminal::prelude::ShapeTracker;

use super::error::AutodiffError;

/// Most dimensions a luminal `ShapeTracker` can hold.
pub const MAX_RANK: usize = 6;

/// luminal's marker for "no upper slice bound".
const OPEN_END: usize = i32::MAX as usize;

/// One physical dimension of a view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
struct Dim {
    size: usize,
    fake: bool,
    slice: (usize, usize),
    pad: (usize, usize),
}

impl Dim {
    fn real(size: usize) -> Self {
        Dim {
            size,
            fake: false,
            slice: (0, OPEN_END),
            pad: (0, 0),
        }
    }

    /// Size as seen by the consumer: padded, then sliced.
    fn logical(&self) -> usize {
        (self.size + self.pad.0 + self.pad.1).min(self.slice.1) - self.slice.0
    }

    fn is_sliced(&self) -> bool {
        self.slice.0 != 0 || self.slice.1 != OPEN_END
    }

    fn is_padded(&self) -> bool {
        self.pad != (0, 0)
    }
}

/// A view of a contiguous buffer: luminal's `ShapeTracker` with concrete sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct View {
    rank: usize,
    /// Physical dimensions, in buffer order (fake ones have no extent in the buffer).
    dims: [Dim; MAX_RANK],
    /// Logical axis -> physical dimension (luminal's `indexes`).
    order: [usize; MAX_RANK],
}

impl View {
    /// A plain row-major view of a buffer with this shape.
    pub fn contiguous(shape: &[usize]) -> Result<Self, AutodiffError> {
        if shape.len() > MAX_RANK {
            return Err(AutodiffError::RankTooHigh {
                rank: shape.len(),
                max: MAX_RANK,
            });
        }
        let mut view = View {
            rank: shape.len(),
            dims: [Dim::default(); MAX_RANK],
            order: [0; MAX_RANK],
        };
        for (i, &s) in shape.iter().enumerate() {
            view.dims[i] = Dim::real(s);
            view.order[i] = i;
        }
        Ok(view)
    }

    /// A scalar (rank 0) view.
    pub fn scalar() -> Self {
        View {
            rank: 0,
            dims: [Dim::default(); MAX_RANK],
            order: [0; MAX_RANK],
        }
    }

    /// Number of logical axes.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Logical shape.
    pub fn shape(&self) -> Vec<usize> {
        (0..self.rank).map(|a| self.axis_len(a)).collect()
    }

    /// Logical size of one axis.
    pub fn axis_len(&self, axis: usize) -> usize {
        self.dims[self.order[axis]].logical()
    }

    /// Number of logical elements.
    pub fn numel(&self) -> usize {
        self.shape().iter().product()
    }

    /// Number of elements the viewed buffer must hold (product of non-fake dims).
    pub fn physical_numel(&self) -> usize {
        self.dims[..self.rank]
            .iter()
            .filter(|d| !d.fake)
            .map(|d| d.size)
            .product()
    }

    /// Shape of the viewed buffer: the non-fake physical dims in buffer order.
    pub fn physical_shape(&self) -> Vec<usize> {
        self.dims[..self.rank]
            .iter()
            .filter(|d| !d.fake)
            .map(|d| d.size)
            .collect()
    }

    /// True when the view reads the whole buffer in row-major order with no broadcast,
    /// slice, pad or permutation: a consumer may reinterpret the buffer freely.
    pub fn is_plain(&self) -> bool {
        (0..self.rank).all(|a| self.order[a] == a)
            && self.dims[..self.rank]
                .iter()
                .all(|d| !d.fake && !d.is_sliced() && !d.is_padded())
    }

    /// True when any physical dim is zero-padded.
    pub fn is_padded(&self) -> bool {
        self.dims[..self.rank].iter().any(Dim::is_padded)
    }

    /// True when any physical dim is sliced.
    pub fn is_sliced(&self) -> bool {
        self.dims[..self.rank].iter().any(Dim::is_sliced)
    }

    /// True when this logical axis is a broadcast (fake) axis.
    pub fn is_fake(&self, axis: usize) -> bool {
        self.dims[self.order[axis]].fake
    }

    /// True when every axis except possibly the last two is in buffer order, nothing is
    /// broadcast, sliced or padded, and the last two axes are either in order or swapped:
    /// the layouts BLAS-style matmul kernels accept.
    pub fn is_plain_or_transposed(&self) -> bool {
        if self.rank < 2 {
            return self.is_plain();
        }
        let r = self.rank;
        let leading_ok = (0..r - 2).all(|a| self.order[a] == a);
        let tail = (self.order[r - 2], self.order[r - 1]);
        leading_ok
            && (tail == (r - 2, r - 1) || tail == (r - 1, r - 2))
            && self.dims[..r]
                .iter()
                .all(|d| !d.fake && !d.is_sliced() && !d.is_padded())
    }

    /// Permute logical axes: new axis `i` is old axis `axes[i]`.
    ///
    /// # Panics
    /// If `axes` is not a permutation of `0..rank` ([`crate::Tensor::permute`]
    /// checks and reports this as an error instead).
    pub fn permute(&self, axes: &[usize]) -> Self {
        let mut v = *self;
        for (i, &a) in axes.iter().enumerate() {
            v.order[i] = self.order[a];
        }
        v
    }

    /// Insert a broadcast axis of `size` at logical position `axis`.
    ///
    /// # Panics
    /// If the view already has [`MAX_RANK`] axes or `axis > rank` (the tensor methods check
    /// and report this as an error instead).
    pub fn expand(&self, axis: usize, size: usize) -> Self {
        let mut v = *self;
        let phys = v.rank;
        v.dims[phys] = Dim {
            fake: true,
            ..Dim::real(size)
        };
        for a in (axis..v.rank).rev() {
            v.order[a + 1] = v.order[a];
        }
        v.order[axis] = phys;
        v.rank += 1;
        v
    }

    /// Remove a logical axis (its physical dim disappears too).
    ///
    /// # Panics
    /// If `axis >= rank`.
    pub fn remove_axis(&self, axis: usize) -> Self {
        let mut v = *self;
        let phys = self.order[axis];
        for a in axis..v.rank - 1 {
            v.order[a] = v.order[a + 1];
        }
        for p in phys..v.rank - 1 {
            v.dims[p] = v.dims[p + 1];
        }
        v.rank -= 1;
        v.dims[v.rank] = Dim::default();
        for a in 0..v.rank {
            if v.order[a] > phys {
                v.order[a] -= 1;
            }
        }
        v
    }

    /// True when slicing `axis` to `[start, end)` can be expressed on this view directly
    /// (without first copying to a contiguous buffer).
    pub fn can_slice(&self, axis: usize, start: usize, end: usize) -> bool {
        let d = &self.dims[self.order[axis]];
        if d.fake {
            return true;
        }
        let len = d.logical();
        let two_sided = start > 0 && end < len;
        !d.is_sliced() && !d.is_padded() && !two_sided
    }

    /// Restrict `axis` to `[start, end)`; caller checks [`View::can_slice`] first.
    pub fn slice(&self, axis: usize, start: usize, end: usize) -> Self {
        let mut v = *self;
        let d = &mut v.dims[self.order[axis]];
        if d.fake {
            d.size = end - start;
        } else {
            let len = d.logical();
            if start > 0 {
                d.slice.0 = start;
            }
            if end < len {
                d.slice.1 = end;
            }
        }
        v
    }

    /// True when a length-1 axis can become a broadcast axis in place.
    pub fn can_broadcast_unit(&self, axis: usize) -> bool {
        let d = &self.dims[self.order[axis]];
        d.logical() == 1 && (d.fake || (d.size == 1 && !d.is_sliced() && !d.is_padded()))
    }

    /// Broadcast a length-1 axis to `size`; caller checks [`View::can_broadcast_unit`].
    pub fn broadcast_unit(&self, axis: usize, size: usize) -> Self {
        let mut v = *self;
        let d = &mut v.dims[self.order[axis]];
        d.fake = true;
        d.size = size;
        v
    }

    /// True when zero-padding `axis` can be expressed on this view directly.
    pub fn can_pad(&self, axis: usize) -> bool {
        let d = &self.dims[self.order[axis]];
        !d.fake && !d.is_sliced()
    }

    /// Zero-pad `axis` with `before` and `after` elements; caller checks [`View::can_pad`].
    pub fn pad(&self, axis: usize, before: usize, after: usize) -> Self {
        let mut v = *self;
        let d = &mut v.dims[self.order[axis]];
        d.pad.0 += before;
        d.pad.1 += after;
        v
    }

    /// Physical dim behind each logical axis (luminal's `indexes`).
    pub fn order(&self) -> Vec<usize> {
        self.order[..self.rank].to_vec()
    }

    /// Per physical dim: (fake, slice start, slice end or None, pad before, pad after, size).
    pub(crate) fn physical_dims(&self) -> Vec<PhysicalDim> {
        self.dims[..self.rank]
            .iter()
            .map(|d| PhysicalDim {
                size: d.size,
                fake: d.fake,
                slice_start: d.slice.0,
                slice_end: (d.slice.1 != OPEN_END).then_some(d.slice.1),
                pad_before: d.pad.0,
                pad_after: d.pad.1,
            })
            .collect()
    }

    /// The equivalent luminal `ShapeTracker`.
    pub fn to_tracker(&self) -> ShapeTracker {
        let sizes: Vec<Expression> = self.dims[..self.rank]
            .iter()
            .map(|d| Expression::from(d.size))
            .collect();
        let mut st = ShapeTracker::new(&sizes);
        for p in 0..self.rank {
            let d = &self.dims[p];
            st.fake[p] = d.fake;
            st.slices[p] = (d.slice.0.into(), d.slice.1.into());
            st.padding[p] = (d.pad.0.into(), d.pad.1.into());
        }
        for a in 0..self.rank {
            st.indexes[a] = self.order[a];
        }
        st
    }

    /// Read a luminal `ShapeTracker` whose sizes are all known.
    pub fn from_tracker(st: &ShapeTracker) -> Result<Self, AutodiffError> {
        let rank = st.dims.len();
        if rank > MAX_RANK {
            return Err(AutodiffError::RankTooHigh {
                rank,
                max: MAX_RANK,
            });
        }
        let known = |e: &Expression| e.to_usize().ok_or(AutodiffError::SymbolicShape);
        let mut v = View::scalar();
        v.rank = rank;
        for p in 0..rank {
            v.dims[p] = Dim {
                size: known(&st.dims[p])?,
                fake: st.fake[p],
                slice: (known(&st.slices[p].0)?, known(&st.slices[p].1)?),
                pad: (known(&st.padding[p].0)?, known(&st.padding[p].1)?),
            };
            v.order[p] = st.indexes[p];
        }
        Ok(v)
    }

    /// Resolve to strides and valid ranges, in logical axis order.
    pub fn access(&self) -> Access {
        let mut strides = [0usize; MAX_RANK];
        let mut acc = 1usize;
        for p in (0..self.rank).rev() {
            if !self.dims[p].fake {
                strides[p] = acc;
                acc *= self.dims[p].size;
            }
        }
        let mut base = 0isize;
        let mut axes = Vec::with_capacity(self.rank);
        for a in 0..self.rank {
            let d = &self.dims[self.order[a]];
            let len = d.logical();
            if d.fake {
                axes.push(AxisAccess {
                    len,
                    stride: 0,
                    lo: 0,
                    hi: len,
                });
                continue;
            }
            let stride = strides[self.order[a]] as isize;
            // Logical index i reads physical index i + slice_start - pad_before.
            let shift = d.slice.0 as isize - d.pad.0 as isize;
            base += shift * stride;
            let lo = (d.pad.0 as isize - d.slice.0 as isize).clamp(0, len as isize) as usize;
            let hi = ((d.pad.0 + d.size) as isize - d.slice.0 as isize)
                .clamp(lo as isize, len as isize) as usize;
            axes.push(AxisAccess {
                len,
                stride,
                lo,
                hi,
            });
        }
        Access { base, axes }
    }
}

/// Description of one physical dimension (for the reverse pass).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PhysicalDim {
    pub size: usize,
    pub fake: bool,
    pub slice_start: usize,
    pub slice_end: Option<usize>,
    pub pad_before: usize,
    pub pad_after: usize,
}

/// How to read one logical axis of a view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AxisAccess {
    /// Logical length.
    pub len: usize,
    /// Buffer stride (0 for broadcast axes).
    pub stride: isize,
    /// First valid logical index (before it: zero padding).
    pub lo: usize,
    /// One past the last valid logical index (from it on: zero padding).
    pub hi: usize,
}

impl AxisAccess {
    /// True when every index of the axis reads the buffer.
    pub fn is_full(&self) -> bool {
        self.lo == 0 && self.hi == self.len
    }
}

/// A view resolved to buffer offsets: element `i` (multi-index) lives at
/// `base + sum(i[a] * stride[a])` when every `i[a]` is in `[lo, hi)`, and reads 0 otherwise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Access {
    /// Offset of logical element 0 (may be negative when padded; never read then).
    pub base: isize,
    /// Per logical axis.
    pub axes: Vec<AxisAccess>,
}

impl Access {
    /// Logical element count.
    pub fn numel(&self) -> usize {
        self.axes.iter().map(|a| a.len).product()
    }

    /// Largest buffer offset any valid element reads, or None when nothing is read.
    pub fn max_offset(&self) -> Option<isize> {
        let mut off = self.base;
        for a in &self.axes {
            if a.lo >= a.hi {
                return None;
            }
            off += a.stride * if a.stride >= 0 { a.hi - 1 } else { a.lo } as isize;
        }
        Some(off)
    }

    /// Smallest buffer offset any valid element reads, or None when nothing is read.
    pub fn min_offset(&self) -> Option<isize> {
        let mut off = self.base;
        for a in &self.axes {
            if a.lo >= a.hi {
                return None;
            }
            off += a.stride * if a.stride >= 0 { a.lo } else { a.hi - 1 } as isize;
        }
        Some(off)
    }

    /// Merge neighbouring axes that walk the buffer as one (for faster loops).
    pub fn coalesced(&self) -> Access {
        let mut axes: Vec<AxisAccess> = Vec::with_capacity(self.axes.len());
        for &a in &self.axes {
            if a.len == 1 && a.is_full() {
                continue;
            }
            if let Some(last) = axes.last_mut() {
                if last.is_full() && a.is_full() && last.stride == a.stride * a.len as isize {
                    last.len *= a.len;
                    last.hi = last.len;
                    last.stride = a.stride;
                    continue;
                }
            }
            axes.push(a);
        }
        Access {
            base: self.base,
            axes,
        }
    }

    /// Visit every logical element in row-major order with its buffer offset (None when
    /// the element is padding). Used by the reference evaluator; kernels use faster loops.
    pub fn for_each(&self, mut f: impl FnMut(usize, Option<usize>)) {
        let n = self.numel();
        let rank = self.axes.len();
        let mut idx = vec![0usize; rank];
        for flat in 0..n {
            let mut off = self.base;
            let mut valid = true;
            for (a, &i) in self.axes.iter().zip(&idx) {
                valid &= i >= a.lo && i < a.hi;
                off += i as isize * a.stride;
            }
            f(flat, valid.then_some(off as usize));
            for ax in (0..rank).rev() {
                idx[ax] += 1;
                if idx[ax] < self.axes[ax].len {
                    break;
                }
                idx[ax] = 0;
            }
        }
    }
}
