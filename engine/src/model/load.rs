//! The model's parameters as typed structs, one per part of AWGIM.md's "Parameters", each
//! built from its tensor names in [`formats::tensors`] by borrowing the file's weights in place
//! as nalgebra views. A missing tensor or one of the wrong size is an error when the model is
//! loaded, never a panic when it is used.

use formats::tensors::{BlockNames, GeneratorNames, LayerNormNames, ENC_AP, ENC_CP};
use formats::{FormatError, ModelFile};
use nalgebra::Dim;

use crate::dims::Dims;
use crate::error::EngineError;
use crate::ops::layer_norm::LayerNorm;
use crate::ops::Weight;

/// One attention block. Every matrix is the file's `[in][out]` dense layer seen column-major,
/// i.e. its transpose (`out x in`), so `wq * x` is AWGIM.md's `x Wq`. Head `j` owns rows
/// `j d/h..(j+1) d/h` of `wq`, `wk`, `wv` (its outputs) and columns `j d/h..(j+1) d/h` of `wo`
/// (its inputs).
pub(crate) struct Block<'a, S: Dims> {
    pub wq: Weight<'a, S::d, S::d>,
    pub wk: Weight<'a, S::d, S::d>,
    pub wv: Weight<'a, S::d, S::d>,
    pub wo: Weight<'a, S::d, S::d>,
    pub ln1: LayerNorm<'a, S::d>,
    pub f1: Weight<'a, S::d2, S::d>,
    pub f2: Weight<'a, S::d, S::d2>,
    pub ln2: LayerNorm<'a, S::d>,
}

impl<'a, S: Dims> Block<'a, S> {
    /// The block with tensors `names`; its layer norms use `epsilon`.
    pub fn load(
        file: &ModelFile<'a>,
        s: S,
        names: &BlockNames,
        epsilon: f32,
    ) -> Result<Self, EngineError> {
        let (d, d2) = (s.d(), s.d2());
        Ok(Self {
            wq: weight(file, names.wq, d, d)?,
            wk: weight(file, names.wk, d, d)?,
            wv: weight(file, names.wv, d, d)?,
            wo: weight(file, names.wo, d, d)?,
            ln1: layer_norm(file, &names.ln1, d, epsilon)?,
            f1: weight(file, names.f1, d2, d)?,
            f2: weight(file, names.f2, d, d2)?,
            ln2: layer_norm(file, &names.ln2, d, epsilon)?,
        })
    }
}

/// The two encoders, `enc_ap` and `enc_cp` (`[D][d]` in the file), seen as `d x D`.
pub(crate) struct Encoders<'a, S: Dims> {
    /// The attentive path's encoder.
    pub ap: Weight<'a, S::d, S::D>,
    /// The contextual path's encoder.
    pub cp: Weight<'a, S::d, S::D>,
}

impl<'a, S: Dims> Encoders<'a, S> {
    /// Both encoders of `file`.
    pub fn load(file: &ModelFile<'a>, s: S) -> Result<Self, EngineError> {
        Ok(Self {
            ap: weight(file, ENC_AP, s.d(), s.D())?,
            cp: weight(file, ENC_CP, s.d(), s.D())?,
        })
    }
}

/// What evaluation uses of the weight generator: `mu = G2mu relu(G1 z)` (no noise, so no
/// `g2_sigma`), with `G1` split at its input `z = [c_bar[i] ; a(x)]`.
pub(crate) struct Generator<'a, S: Dims> {
    /// Columns `0..d` of `gen.g1` seen as `G x 2d`: the context half, applied to `c_bar[i]`.
    pub g1_context: Weight<'a, S::G, S::d>,
    /// Columns `d..2d` of `gen.g1` seen as `G x 2d`: the attentive half, applied to `a(x)`.
    pub g1_attentive: Weight<'a, S::G, S::d>,
    /// `gen.g2_mu` (`[G][D]` in the file) seen as `D x G`: `W[i] = g2_mu h_i`.
    pub g2_mu: Weight<'a, S::D, S::G>,
}

impl<'a, S: Dims> Generator<'a, S> {
    /// The generator with tensors `names`.
    pub fn load(file: &ModelFile<'a>, s: S, names: &GeneratorNames) -> Result<Self, EngineError> {
        // gen.g1 is [2d][G]: its first d rows (the first G d values) act on c_bar, the rest
        // on a(x).
        let (d, g) = (s.d(), s.G());
        let g1 = file.tensor(names.g1)?;
        let (context, attentive) = g1.split_at(g1.len().min(g.value() * d.value()));
        Ok(Self {
            g1_context: view(context, names.g1, g, d)?,
            g1_attentive: view(attentive, names.g1, g, d)?,
            g2_mu: weight(file, names.g2_mu, s.D(), g)?,
        })
    }
}

/// The error for a tensor with the wrong number of elements.
fn shape_error(name: &str, expected: usize, found: usize) -> EngineError {
    EngineError::Format(FormatError::LengthMismatch {
        name: name.try_into().unwrap_or_default(),
        expected: expected as u64,
        found: found as u64,
    })
}

/// The `r c` values of `data` (checked) as an `r x c` column-major matrix.
fn view<'a, R: Dim, C: Dim>(
    data: &'a [f32],
    name: &str,
    r: R,
    c: C,
) -> Result<Weight<'a, R, C>, EngineError> {
    Weight::from_slice(data, r, c)
        .ok_or_else(|| shape_error(name, r.value().saturating_mul(c.value()), data.len()))
}

/// The file's `[c][r]` row-major tensor `name`, borrowed as the `r x c` matrix of its
/// transpose.
fn weight<'a, R: Dim, C: Dim>(
    file: &ModelFile<'a>,
    name: &str,
    r: R,
    c: C,
) -> Result<Weight<'a, R, C>, EngineError> {
    view(file.tensor(name)?, name, r, c)
}

/// A vector of `w` values borrowed in place.
pub(crate) fn vector<'a>(
    file: &ModelFile<'a>,
    name: &str,
    w: usize,
) -> Result<&'a [f32], EngineError> {
    let data = file.tensor(name)?;
    if data.len() != w {
        return Err(shape_error(name, w, data.len()));
    }
    Ok(data)
}

/// The layer norm of width `w` with tensors `names` and `epsilon`.
fn layer_norm<'a, W: Dim>(
    file: &ModelFile<'a>,
    names: &LayerNormNames,
    w: W,
    epsilon: f32,
) -> Result<LayerNorm<'a, W>, EngineError> {
    Ok(LayerNorm {
        gain: vector(file, names.gain, w.value())?,
        bias: vector(file, names.bias, w.value())?,
        width: w,
        epsilon,
    })
}
