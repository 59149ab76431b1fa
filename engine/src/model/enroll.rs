//! Enrollment: the support set arrives one labelled row at a time, as a sensor pipeline
//! delivers feature vectors, in any order. Each row is encoded as it arrives (`enc_ap` and
//! `enc_cp`: 2 d values kept instead of the D of the row) and, for prototype weights, added to
//! its class's running mean; [`Enrollment::prepare`] runs the rest of `prepare` when every
//! class has its K shots. The support rows themselves are never stored.

use formats::{Classifier, Sizes, WeightsKind};
use nalgebra::{Const, Dim, Dyn};

use super::{check_finite, l2_normalise, Awgim, Task};
use crate::dims::{Dims, Dynamic, Fixed};
use crate::error::{EngineError, Input};
use crate::ops::{Mat, MatMut};
use crate::workspace::{Arena, Encoded, Prepared, QueryScratch};

/// A support set being enrolled into a workspace: [`FixedEnrollment`] for a compiled-size
/// model (rows `&[f32; D]`), [`DynEnrollment`] for a [`crate::DynModel`] (rows `&[f32]` of
/// `D` values). Made by `enroll`; `prepare` turns it into a [`Task`].
pub struct Enrollment<'m, 'w, 'a, S: Dims, B: Dim> {
    model: &'m Awgim<'a, S>,
    prepared: Prepared<'w, S>,
    /// The variants' class prototypes: while enrolling, the running class means.
    prototypes: Option<MatMut<'w, S::D, S::N>>,
    /// Shots received per class.
    shots: &'w mut [u32],
    scratch: &'w mut [i16],
    /// The phase region: the support's [`Encoded`] rows and one feature row, then `prepare`'s
    /// scratch, then the queries'.
    region: &'w mut [f32],
    batch: B,
}

/// The [`Enrollment`] of a compiled-size model (`B` queries per batch once prepared).
pub type FixedEnrollment<
    'm,
    'w,
    'a,
    const D: usize,
    const d: usize,
    const h: usize,
    const N: usize,
    const K: usize,
    const G: usize,
    const NK: usize,
    const d2: usize,
    const V: bool,
    const B: usize,
> = Enrollment<'m, 'w, 'a, Fixed<D, d, h, N, K, G, NK, d2, V>, Const<B>>;

/// The [`Enrollment`] of a [`crate::DynModel`].
pub type DynEnrollment<'m, 'w, 'a> = Enrollment<'m, 'w, 'a, Dynamic, Dyn>;

impl<'m, 'w, 'a, S: Dims, B: Dim> Enrollment<'m, 'w, 'a, S, B> {
    /// An empty enrollment over the cut workspace `arena`.
    pub(super) fn new(model: &'m Awgim<'a, S>, arena: Arena<'w, S>, batch: B) -> Self {
        let Arena {
            prepared,
            mut prototypes,
            shots,
            scratch,
            region,
        } = arena;
        shots.fill(0);
        if let Some(p) = prototypes.as_mut() {
            p.as_mut_slice().fill(0.0);
        }
        Self {
            model,
            prepared,
            prototypes,
            shots,
            scratch,
            region,
            batch,
        }
    }

    /// The shots class `class` has received (0 past the last class).
    pub fn shots(&self, class: usize) -> usize {
        self.shots.get(class).map_or(0, |&s| s as usize)
    }

    /// Whether every class has its `K` shots.
    pub fn is_complete(&self) -> bool {
        let K = self.model.dims.sizes().K;
        self.shots.iter().all(|&s| s as usize == K)
    }

    /// Enrolls `row` (`D` values, checked by the callers) as the next shot of class `class`.
    fn push_row(&mut self, class: usize, row: &[f32]) -> Result<bool, EngineError> {
        let model = self.model;
        let s = model.dims;
        let Sizes { D, N, K, .. } = s.sizes();
        let shots = self
            .shots
            .get_mut(class)
            .ok_or(EngineError::Class { class, ways: N })?;
        let shot = *shots as usize;
        if shot >= K {
            return Err(EngineError::ClassFull { class, shots: K });
        }
        let r = class * K + shot;
        check_finite(row, D, Input::Support, r)?;
        let (mut encoded, rest) =
            Encoded::cut(&mut *self.region, s).ok_or(model.short_workspace(1, 0))?;
        // Beyond the paper: the row as the model sees it, and its class's running mean
        // (`1/K` times each shot, added in order, as `class_means`).
        let feature = match model.center {
            Some(_) if S::CLASSIFIERS => {
                let out = rest.get_mut(..D).ok_or(model.short_workspace(1, 0))?;
                model.features(row, out);
                &*out
            }
            _ => row,
        };
        if let (Some(p), WeightsKind::Prototype) =
            (self.prototypes.as_mut(), model.classifier.weights)
        {
            let denom = 1.0 / K as f32;
            for (m, &x) in p
                .columns_mut(class, 1)
                .as_mut_slice()
                .iter_mut()
                .zip(feature)
            {
                *m += denom * x;
            }
        }
        let x = Mat::from_slice(feature, s.D(), Const::<1>).ok_or(EngineError::InputLength {
            input: Input::Support,
            expected: D,
            found: feature.len(),
        })?;
        let scratch = &mut *self.scratch;
        model
            .encoders
            .ap
            .mul_to(&x, scratch, &mut encoded.ap.columns_mut(r, 1));
        model
            .encoders
            .cp
            .mul_to(&x, scratch, &mut encoded.cp.columns_mut(r, 1));
        *shots += 1;
        Ok(self.is_complete())
    }

    /// Enrolls the whole support set at once, `N K` rows of `D` values, class-major (row
    /// `class K + shot`), into an empty enrollment: what `prepare` does with all the rows in
    /// hand. Where the model uses its rows as they are (no centred features), each encoder
    /// runs as one product over all the rows instead of one per row: the same sums, column by
    /// column (`ops::linear` and `ops::int8` compute each entry as the same chain over the
    /// depth, whatever the number of columns; `tests/dyn_sizes.rs` checks the logits bit for
    /// bit), a quarter of the time on the host for the paper's 25 rows. Otherwise, and on a
    /// started enrollment, the rows are pushed one by one. Errors as [`Self::push_row`]'s,
    /// numbered by row.
    pub(super) fn push_all(&mut self, support: &[f32]) -> Result<(), EngineError> {
        let model = self.model;
        let s = model.dims;
        let Sizes { D, K, .. } = s.sizes();
        let as_they_are = !(S::CLASSIFIERS && model.center.is_some());
        if !as_they_are || self.shots.iter().any(|&n| n != 0) {
            for (r, row) in support.chunks_exact(D.max(1)).enumerate() {
                self.push_row(r / K.max(1), row)?;
            }
            return Ok(());
        }
        check_finite(support, D, Input::Support, 0)?;
        let x = Mat::from_slice(support, s.D(), s.NK()).ok_or(EngineError::InputLength {
            input: Input::Support,
            expected: s.NK().value() * D,
            found: support.len(),
        })?;
        if let (Some(p), WeightsKind::Prototype) =
            (self.prototypes.as_mut(), model.classifier.weights)
        {
            // Each class's running mean, its shots added in order, as `push_row` adds them.
            let denom = 1.0 / K as f32;
            for (r, row) in support.chunks_exact(D.max(1)).enumerate() {
                let mut mean = p.columns_mut(r / K, 1);
                for (m, &v) in mean.as_mut_slice().iter_mut().zip(row) {
                    *m += denom * v;
                }
            }
        }
        let (mut encoded, _) =
            Encoded::cut(&mut *self.region, s).ok_or(model.short_workspace(1, 0))?;
        let scratch = &mut *self.scratch;
        model.encoders.ap.mul_to(&x, scratch, &mut encoded.ap);
        model.encoders.cp.mul_to(&x, scratch, &mut encoded.cp);
        self.shots.fill(K as u32);
        Ok(())
    }

    /// Runs the support-side work once every class has its `K` shots (the rest of
    /// AWGIM.md's steps 1 to 3, see the model doc) and returns the handle that classifies
    /// queries. Fails with [`EngineError::Incomplete`] while a class lacks shots, or if a
    /// computed value overflows.
    pub fn prepare(self) -> Result<Task<'m, 'w, 'a, S, B>, EngineError> {
        let model = self.model;
        let K = model.dims.sizes().K;
        if let Some((class, &shots)) = self
            .shots
            .iter()
            .enumerate()
            .find(|(_, &n)| n as usize != K)
        {
            return Err(EngineError::Incomplete {
                class,
                shots: shots as usize,
                needed: K,
            });
        }
        let Self {
            mut prepared,
            mut prototypes,
            scratch,
            region,
            batch,
            ..
        } = self;
        let s = model.dims;
        let short = model.short_workspace(batch.value(), 0);
        {
            let (mut encoded, rest) = Encoded::cut(&mut *region, s).ok_or(short.clone())?;
            model.prepare_support(&mut encoded, rest, scratch, &mut prepared)?;
        }
        if let (Some(p), WeightsKind::Prototype) = (prototypes.as_mut(), model.classifier.weights) {
            l2_normalise(p.as_mut_slice(), s.D().value());
        }
        let variants = S::CLASSIFIERS && model.classifier != Classifier::PAPER;
        let (queries, variants) = QueryScratch::cut(region, s, batch, variants).ok_or(short)?;
        Ok(Task {
            model,
            prepared,
            queries,
            prototypes,
            variants,
            scratch,
            batch,
        })
    }
}

impl<
        'm,
        'w,
        'a,
        const D: usize,
        const d: usize,
        const h: usize,
        const N: usize,
        const K: usize,
        const G: usize,
        const NK: usize,
        const d2: usize,
        const V: bool,
        const B: usize,
    > FixedEnrollment<'m, 'w, 'a, D, d, h, N, K, G, NK, d2, V, B>
{
    /// Enrolls `features` as the next shot of class `class`; returns whether the support set
    /// is now complete. Fails on a class past the last ([`EngineError::Class`]), a class that
    /// already has its `K` shots ([`EngineError::ClassFull`]) or a non-finite feature (its
    /// row numbered class-major, `class K + shot`).
    pub fn push(&mut self, class: usize, features: &[f32; D]) -> Result<bool, EngineError> {
        self.push_row(class, features)
    }
}

impl DynEnrollment<'_, '_, '_> {
    /// [`FixedEnrollment::push`] for a row of `D` values ([`EngineError::InputLength`]
    /// otherwise).
    pub fn push(&mut self, class: usize, features: &[f32]) -> Result<bool, EngineError> {
        let D = self.model.dims.sizes().D;
        if features.len() != D {
            return Err(EngineError::InputLength {
                input: Input::Support,
                expected: D,
                found: features.len(),
            });
        }
        self.push_row(class, features)
    }
}
