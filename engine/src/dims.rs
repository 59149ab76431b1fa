//! The model's sizes as nalgebra dimension types: [`Fixed`] compiles them in (`Const`, the
//! device and the engine's aliases), [`Dynamic`] takes them from the model file at run time
//! (`Dyn`, any configuration the trainer writes). The model, its parameters, the workspace
//! layout and the ops are written once, generic over [`Dims`].

use formats::Sizes;
use nalgebra::{Const, Dim, Dyn};

/// AWGIM.md's sizes as dimensions: `D` features, latent `d`, `N` ways, generator width `G`,
/// and the derived `NK = N K` (support examples) and `d2 = 2 d`. The head count `h` and the
/// shots `K` are only ever loop bounds and strides, read from [`Dims::sizes`].
// The associated types are AWGIM.md's letters, `D` and `d` being different sizes.
#[allow(non_snake_case)]
pub trait Dims: Copy {
    /// Feature dimension.
    type D: Dim;
    /// Latent dimension.
    type d: Dim;
    /// Ways.
    type N: Dim;
    /// Generator hidden width.
    type G: Dim;
    /// Support examples, `N K`.
    type NK: Dim;
    /// Feed-forward width, `2 d`.
    type d2: Dim;
    /// Whether models of these dims run the classifiers beyond the paper ([`Dynamic`] and a
    /// [`Fixed`] whose `V` is `true`). `false` compiles their code out of a [`Fixed`] model,
    /// so the device's paper model runs exactly the paper's code.
    const CLASSIFIERS: bool;
    /// All six sizes.
    fn sizes(self) -> Sizes;
    /// `D` as a dimension.
    fn D(self) -> Self::D {
        Self::D::from_usize(self.sizes().D)
    }
    /// `d` as a dimension.
    fn d(self) -> Self::d {
        Self::d::from_usize(self.sizes().d)
    }
    /// `N` as a dimension.
    fn N(self) -> Self::N {
        Self::N::from_usize(self.sizes().N)
    }
    /// `G` as a dimension.
    fn G(self) -> Self::G {
        Self::G::from_usize(self.sizes().G)
    }
    /// `N K` as a dimension.
    fn NK(self) -> Self::NK {
        let s = self.sizes();
        Self::NK::from_usize(s.N * s.K)
    }
    /// `2 d` as a dimension.
    fn d2(self) -> Self::d2 {
        Self::d2::from_usize(2 * self.sizes().d)
    }
}

/// Sizes compiled in: every dimension is a `Const`, every size a constant in the machine code.
/// `NK` and `d2` are parameters of their own because stable Rust cannot compute a type-level
/// `N * K`; a compile-time check in [`crate::Model`] (`CHECK_SIZES`) fails the build when
/// they disagree. `V` says whether the classifier variants' code is compiled in
/// ([`crate::Model`]: `false`, the paper's classifier only; [`crate::VariantModel`]: `true`,
/// every classifier the trainer writes).
#[derive(Clone, Copy, Debug, Default)]
pub struct Fixed<
    const D: usize,
    const d: usize,
    const h: usize,
    const N: usize,
    const K: usize,
    const G: usize,
    const NK: usize,
    const d2: usize,
    const V: bool,
>;

impl<
        const D: usize,
        const d: usize,
        const h: usize,
        const N: usize,
        const K: usize,
        const G: usize,
        const NK: usize,
        const d2: usize,
        const V: bool,
    > Dims for Fixed<D, d, h, N, K, G, NK, d2, V>
{
    type D = Const<D>;
    type d = Const<d>;
    type N = Const<N>;
    type G = Const<G>;
    type NK = Const<NK>;
    type d2 = Const<d2>;
    const CLASSIFIERS: bool = V;
    fn sizes(self) -> Sizes {
        Sizes { D, d, h, N, K, G }
    }
    fn NK(self) -> Const<NK> {
        Const
    }
    fn d2(self) -> Const<d2> {
        Const
    }
}

/// Sizes read from a model file at run time: every dimension is `Dyn`. Made by
/// [`Dynamic::new`], which checks what the engine relies on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dynamic(Sizes);

impl Dynamic {
    /// The sizes `sizes` if the engine can run them: all positive, `h` divides `d`, and every
    /// buffer's length (at most `max(N K, G, 2 d, D)` squared) fits a `usize`.
    pub fn new(sizes: Sizes) -> Option<Self> {
        let Sizes { D, d, h, N, K, G } = sizes;
        let positive = [D, d, h, N, K, G].iter().all(|&s| s > 0);
        let nk = N.checked_mul(K)?;
        let widest = [nk, G, d.checked_mul(2)?, D].into_iter().max()?;
        widest.checked_mul(widest)?.checked_mul(h.max(N))?;
        (positive && d % h == 0).then_some(Self(sizes))
    }
}

impl Dims for Dynamic {
    const CLASSIFIERS: bool = true;
    type D = Dyn;
    type d = Dyn;
    type N = Dyn;
    type G = Dyn;
    type NK = Dyn;
    type d2 = Dyn;
    fn sizes(self) -> Sizes {
        self.0
    }
}
