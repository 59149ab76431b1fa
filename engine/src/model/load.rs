//! The model's parameters as typed structs, one per part of AWGIM.md's "Parameters", each
//! built from its tensor names in [`formats::tensors`] by borrowing the file's weights in place
//! as nalgebra views. A missing tensor or one of the wrong size is an error when the model is
//! loaded, never a panic when it is used.

use formats::tensors::{BlockNames, GeneratorNames, LayerNormNames, ENC_AP, ENC_CP};
use formats::{FormatError, ModelFile};
use nalgebra::SVectorView;

use crate::error::EngineError;
use crate::ops::layer_norm::LayerNorm;
use crate::ops::Weight;

/// One attention block. Every matrix is the file's `[in][out]` dense layer seen column-major,
/// i.e. its transpose (`out x in`), so `wq * x` is AWGIM.md's `x Wq`. Head `j` owns rows
/// `j d/h..(j+1) d/h` of `wq`, `wk`, `wv` (its outputs) and columns `j d/h..(j+1) d/h` of `wo`
/// (its inputs).
pub(crate) struct Block<'a, const d: usize, const d2: usize> {
    pub wq: Weight<'a, d, d>,
    pub wk: Weight<'a, d, d>,
    pub wv: Weight<'a, d, d>,
    pub wo: Weight<'a, d, d>,
    pub ln1: LayerNorm<'a, d>,
    pub f1: Weight<'a, d2, d>,
    pub f2: Weight<'a, d, d2>,
    pub ln2: LayerNorm<'a, d>,
}

impl<'a, const d: usize, const d2: usize> Block<'a, d, d2> {
    /// The block with tensors `names`; its layer norms use `epsilon`.
    pub fn load(
        file: &ModelFile<'a>,
        names: &BlockNames,
        epsilon: f32,
    ) -> Result<Self, EngineError> {
        Ok(Self {
            wq: weight(file, names.wq)?,
            wk: weight(file, names.wk)?,
            wv: weight(file, names.wv)?,
            wo: weight(file, names.wo)?,
            ln1: layer_norm(file, &names.ln1, epsilon)?,
            f1: weight(file, names.f1)?,
            f2: weight(file, names.f2)?,
            ln2: layer_norm(file, &names.ln2, epsilon)?,
        })
    }
}

/// The two encoders, `enc_ap` and `enc_cp` (`[D][d]` in the file), seen as `d x D`.
pub(crate) struct Encoders<'a, const D: usize, const d: usize> {
    /// The attentive path's encoder.
    pub ap: Weight<'a, d, D>,
    /// The contextual path's encoder.
    pub cp: Weight<'a, d, D>,
}

impl<'a, const D: usize, const d: usize> Encoders<'a, D, d> {
    /// Both encoders of `file`.
    pub fn load(file: &ModelFile<'a>) -> Result<Self, EngineError> {
        Ok(Self {
            ap: weight(file, ENC_AP)?,
            cp: weight(file, ENC_CP)?,
        })
    }
}

/// What evaluation uses of the weight generator: `mu = G2mu relu(G1 z)` (no noise, so no
/// `g2_sigma`), with `G1` split at its input `z = [c_bar[i] ; a(x)]`.
pub(crate) struct Generator<'a, const D: usize, const d: usize, const G: usize> {
    /// Columns `0..d` of `gen.g1` seen as `G x 2d`: the context half, applied to `c_bar[i]`.
    pub g1_context: Weight<'a, G, d>,
    /// Columns `d..2d` of `gen.g1` seen as `G x 2d`: the attentive half, applied to `a(x)`.
    pub g1_attentive: Weight<'a, G, d>,
    /// `gen.g2_mu` (`[G][D]` in the file) seen as `D x G`: `W[i] = g2_mu h_i`.
    pub g2_mu: Weight<'a, D, G>,
}

impl<'a, const D: usize, const d: usize, const G: usize> Generator<'a, D, d, G> {
    /// The generator with tensors `names`.
    pub fn load(file: &ModelFile<'a>, names: &GeneratorNames) -> Result<Self, EngineError> {
        // gen.g1 is [2d][G]: its first d rows (the first G d values) act on c_bar, the rest
        // on a(x).
        let g1 = file.tensor(names.g1)?;
        let (context, attentive) = g1.split_at(g1.len().min(G * d));
        Ok(Self {
            g1_context: view(context, names.g1)?,
            g1_attentive: view(attentive, names.g1)?,
            g2_mu: weight(file, names.g2_mu)?,
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

/// The `R * C` values of `data` (checked) as an `R x C` column-major view.
fn view<'a, const R: usize, const C: usize>(
    data: &'a [f32],
    name: &str,
) -> Result<Weight<'a, R, C>, EngineError> {
    if data.len() != R * C {
        return Err(shape_error(name, R * C, data.len()));
    }
    Ok(Weight::from_slice(data))
}

/// The file's `[C][R]` row-major tensor `name`, borrowed as the `R x C` view of its transpose.
fn weight<'a, const R: usize, const C: usize>(
    file: &ModelFile<'a>,
    name: &str,
) -> Result<Weight<'a, R, C>, EngineError> {
    view(file.tensor(name)?, name)
}

/// A vector of `R` values borrowed in place.
fn vector<'a, const R: usize>(
    file: &ModelFile<'a>,
    name: &str,
) -> Result<SVectorView<'a, f32, R>, EngineError> {
    let data = file.tensor(name)?;
    if data.len() != R {
        return Err(shape_error(name, R, data.len()));
    }
    Ok(SVectorView::from_slice(data))
}

/// The layer norm with tensors `names` and `epsilon`.
fn layer_norm<'a, const W: usize>(
    file: &ModelFile<'a>,
    names: &LayerNormNames,
    epsilon: f32,
) -> Result<LayerNorm<'a, W>, EngineError> {
    Ok(LayerNorm {
        gain: vector(file, names.gain)?,
        bias: vector(file, names.bias)?,
        epsilon,
    })
}
