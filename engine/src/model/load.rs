//! The model's parameters as typed structs, one per part of AWGIM.md's "Parameters", each
//! built from its tensor names in [`formats::tensors`] by borrowing the file's weights in place
//! as nalgebra views. A missing tensor or one of the wrong size is an error when the model is
//! loaded, never a panic when it is used.

use formats::tensors::{BlockNames, GeneratorNames, LayerNormNames, ENC_AP, ENC_CP};
#[cfg(feature = "int8")]
use formats::QuantAxis;
use formats::{Dtype, FormatError, ModelFile};
use nalgebra::Dim;

use crate::dims::Dims;
use crate::error::EngineError;
#[cfg(feature = "int8")]
use crate::ops::int8::{self, QuantMat};
use crate::ops::layer_norm::LayerNorm;
use crate::ops::linear;
use crate::ops::{Mat, MatMut, Weight};

/// A dense layer as the file stores it: f32 (the `R x C` view of the file's `[C][R]` matrix,
/// see [`crate::ops`]) or int8 (a [`QuantMat`] of `R` rows of `C` inputs with a scale per
/// output row, [`QuantAxis::Out`]).
pub(crate) enum Dense<'a, R: Dim, C: Dim> {
    /// f32 weights.
    F32(Weight<'a, R, C>),
    /// int8 weights.
    #[cfg(feature = "int8")]
    I8(QuantMat<'a>),
}

impl<R: Dim, C: Dim> Dense<'_, R, C> {
    /// `C = W B`, with `scratch` for the int8 activations.
    #[cfg_attr(not(feature = "int8"), allow(unused_variables))]
    pub fn mul_to<X: Dim, Y: Dim>(
        &self,
        b: &Mat<'_, C, X>,
        scratch: &mut [i16],
        c: &mut MatMut<'_, R, Y>,
    ) {
        match self {
            Self::F32(w) => linear::mul_to(w, b, c),
            #[cfg(feature = "int8")]
            Self::I8(q) => {
                let n = b.ncols().value().min(c.ncols().value());
                int8::mul_to(q, b.columns(0, n), scratch, c.columns_mut(0, n));
            }
        }
    }

    /// `C += W B`, with `scratch` for the int8 activations.
    #[cfg_attr(not(feature = "int8"), allow(unused_variables))]
    pub fn mul_add_to<X: Dim, Y: Dim>(
        &self,
        b: &Mat<'_, C, X>,
        scratch: &mut [i16],
        c: &mut MatMut<'_, R, Y>,
    ) {
        match self {
            Self::F32(w) => linear::mul_add_to(w, b, c),
            #[cfg(feature = "int8")]
            Self::I8(q) => {
                let n = b.ncols().value().min(c.ncols().value());
                int8::mul_add_to(q, b.columns(0, n), scratch, c.columns_mut(0, n));
            }
        }
    }
}

/// One half of `gen.g1` (its inputs `0..d`, applied to `c_bar[i]`, or `d..2d`, applied to
/// `a(x)`): f32, the `G x d` view of its rows; int8, the inputs `start..start + d` of each of
/// the int8 tensor's `G` rows ([`int8::mul_to_range`]).
pub(crate) enum G1Half<'a, S: Dims> {
    /// f32 weights.
    F32(Weight<'a, S::G, S::d>),
    /// int8 weights: the inputs from `start` on of each row of `q`.
    #[cfg(feature = "int8")]
    I8 {
        /// The whole tensor.
        q: QuantMat<'a>,
        /// The first input of this half.
        start: usize,
    },
}

impl<S: Dims> G1Half<'_, S> {
    /// `C = G1[:, half] B`, with `scratch` for the int8 activations.
    #[cfg_attr(not(feature = "int8"), allow(unused_variables))]
    pub fn mul_to<X: Dim, Y: Dim>(
        &self,
        b: &Mat<'_, S::d, X>,
        scratch: &mut [i16],
        c: &mut MatMut<'_, S::G, Y>,
    ) {
        match self {
            Self::F32(w) => linear::mul_to(w, b, c),
            #[cfg(feature = "int8")]
            Self::I8 { q, start } => {
                let n = b.ncols().value().min(c.ncols().value());
                int8::mul_to_range(q, *start, b.columns(0, n), scratch, c.columns_mut(0, n));
            }
        }
    }
}

/// `gen.g2_mu` as the file stores it: f32 (the `D x G` view of `[G][D]`) or int8 with a scale
/// per input ([`QuantAxis::In`]: `G` rows of `D` values).
pub(crate) enum G2Mu<'a, S: Dims> {
    /// f32 weights.
    F32(Weight<'a, S::D, S::G>),
    /// int8 weights.
    #[cfg(feature = "int8")]
    I8(QuantMat<'a>),
}

impl<S: Dims> G2Mu<'_, S> {
    /// `q = enc_ap x` and `y = G2muᵀ x`, the two products of the queries themselves: as
    /// `enc_ap.mul_to` and [`Self::tr_mul_to`], with one quantisation of `x` where both are
    /// int8 ([`int8::mul_to_both`]; the same results).
    pub fn tr_mul_to_with<X: Dim, Q: Dim, Y: Dim>(
        &self,
        enc_ap: &Dense<'_, S::d, S::D>,
        x: &Mat<'_, S::D, X>,
        scratch: &mut [i16],
        q: &mut MatMut<'_, S::d, Q>,
        y: &mut MatMut<'_, S::G, Y>,
    ) {
        #[cfg(feature = "int8")]
        if let (Dense::I8(e), Self::I8(g)) = (enc_ap, self) {
            let n = x.ncols().value().min(q.ncols().value()).min(y.ncols().value());
            let (q, y) = (q.columns_mut(0, n), y.columns_mut(0, n));
            int8::mul_to_both(e, q, g, y, x.columns(0, n), scratch);
            return;
        }
        enc_ap.mul_to(x, scratch, q);
        self.tr_mul_to(x, scratch, y);
    }

    /// `y = G2muᵀ x` (a G-vector per query: the query product).
    #[cfg_attr(not(feature = "int8"), allow(unused_variables))]
    pub fn tr_mul_to<X: Dim, Y: Dim>(
        &self,
        x: &Mat<'_, S::D, X>,
        scratch: &mut [i16],
        y: &mut MatMut<'_, S::G, Y>,
    ) {
        match self {
            Self::F32(w) => linear::tr_mul_to(w, x, y),
            #[cfg(feature = "int8")]
            Self::I8(q) => {
                let n = x.ncols().value().min(y.ncols().value());
                int8::mul_to(q, x.columns(0, n), scratch, y.columns_mut(0, n));
            }
        }
    }

    /// `W = G2mu H` (a D-vector per column of `H`: the generated weights), in f32 from the
    /// dequantised rows for int8 (`W[:, i] = sum_g (scale_g H[g, i]) row_g`; only cosine
    /// logits and `generated_weights` form `W`).
    pub fn mul_to<Y: Dim>(&self, hidden: &Mat<'_, S::G, S::N>, w: &mut MatMut<'_, S::D, Y>) {
        match self {
            Self::F32(g2) => linear::mul_to(g2, hidden, w),
            #[cfg(feature = "int8")]
            Self::I8(q) => {
                let columns = hidden.as_slice().chunks_exact(q.rows().max(1));
                for (out, h) in w.column_slices_mut().zip(columns) {
                    out.fill(0.0);
                    for (g, &hg) in h.iter().enumerate() {
                        let a = hg * q.scale(g);
                        for (o, v) in out.iter_mut().zip(q.row(g)) {
                            *o += a * v as f32;
                        }
                    }
                }
            }
        }
    }
}

/// One attention block. Every matrix is the file's `[in][out]` dense layer seen column-major,
/// i.e. its transpose (`out x in`), so `wq * x` is AWGIM.md's `x Wq`. Head `j` owns rows
/// `j d/h..(j+1) d/h` of `wq`, `wk`, `wv` (its outputs) and columns `j d/h..(j+1) d/h` of `wo`
/// (its inputs).
pub(crate) struct Block<'a, S: Dims> {
    pub wq: Dense<'a, S::d, S::d>,
    pub wk: Dense<'a, S::d, S::d>,
    pub wv: Dense<'a, S::d, S::d>,
    pub wo: Dense<'a, S::d, S::d>,
    pub ln1: LayerNorm<'a, S::d>,
    pub f1: Dense<'a, S::d2, S::d>,
    pub f2: Dense<'a, S::d, S::d2>,
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
            wq: dense(file, names.wq, d, d)?,
            wk: dense(file, names.wk, d, d)?,
            wv: dense(file, names.wv, d, d)?,
            wo: dense(file, names.wo, d, d)?,
            ln1: layer_norm(file, &names.ln1, d, epsilon)?,
            f1: dense(file, names.f1, d2, d)?,
            f2: dense(file, names.f2, d, d2)?,
            ln2: layer_norm(file, &names.ln2, d, epsilon)?,
        })
    }
}

/// The two encoders, `enc_ap` and `enc_cp` (`[D][d]` in the file), seen as `d x D`.
pub(crate) struct Encoders<'a, S: Dims> {
    /// The attentive path's encoder.
    pub ap: Dense<'a, S::d, S::D>,
    /// The contextual path's encoder.
    pub cp: Dense<'a, S::d, S::D>,
}

impl<'a, S: Dims> Encoders<'a, S> {
    /// Both encoders of `file`.
    pub fn load(file: &ModelFile<'a>, s: S) -> Result<Self, EngineError> {
        Ok(Self {
            ap: dense(file, ENC_AP, s.d(), s.D())?,
            cp: dense(file, ENC_CP, s.d(), s.D())?,
        })
    }
}

/// What evaluation uses of the weight generator: `mu = G2mu relu(G1 z)` (no noise, so no
/// `g2_sigma`), with `G1` split at its input `z = [c_bar[i] ; a(x)]`.
pub(crate) struct Generator<'a, S: Dims> {
    /// Columns `0..d` of `gen.g1` seen as `G x 2d`: the context half, applied to `c_bar[i]`.
    pub g1_context: G1Half<'a, S>,
    /// Columns `d..2d` of `gen.g1` seen as `G x 2d`: the attentive half, applied to `a(x)`.
    pub g1_attentive: G1Half<'a, S>,
    /// `gen.g2_mu` (`[G][D]` in the file) seen as `D x G`: `W[i] = g2_mu h_i`.
    pub g2_mu: G2Mu<'a, S>,
}

impl<'a, S: Dims> Generator<'a, S> {
    /// The generator with tensors `names`.
    pub fn load(file: &ModelFile<'a>, s: S, names: &GeneratorNames) -> Result<Self, EngineError> {
        // gen.g1 is [2d][G]: its first d rows (the first G d values) act on c_bar, the rest
        // on a(x).
        let (d, g) = (s.d(), s.G());
        let g2_mu = match file.dtype(names.g2_mu)? {
            #[cfg(feature = "int8")]
            Dtype::I8 => G2Mu::I8(quant(
                file,
                names.g2_mu,
                QuantAxis::In,
                g.value(),
                s.D().value(),
            )?),
            _ => G2Mu::F32(weight(file, names.g2_mu, s.D(), g)?),
        };
        #[cfg(feature = "int8")]
        if file.dtype(names.g1)? == Dtype::I8 {
            // One row per output, its 2d inputs: the halves are depth ranges of every row.
            let q = quant(file, names.g1, QuantAxis::Out, g.value(), 2 * d.value())?;
            return Ok(Self {
                g1_context: G1Half::I8 { q, start: 0 },
                g1_attentive: G1Half::I8 {
                    q,
                    start: d.value(),
                },
                g2_mu,
            });
        }
        let g1 = f32_tensor(file, names.g1)?;
        let (context, attentive) = g1.split_at(g1.len().min(g.value() * d.value()));
        Ok(Self {
            g1_context: G1Half::F32(view(context, names.g1, g, d)?),
            g1_attentive: G1Half::F32(view(attentive, names.g1, g, d)?),
            g2_mu,
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
/// transpose ([`EngineError::Dtype`] for an int8 tensor: this engine was built without the
/// `int8` feature, or the tensor is one the engine reads as f32).
fn weight<'a, R: Dim, C: Dim>(
    file: &ModelFile<'a>,
    name: &str,
    r: R,
    c: C,
) -> Result<Weight<'a, R, C>, EngineError> {
    view(f32_tensor(file, name)?, name, r, c)
}

/// The f32 values of the tensor `name` ([`EngineError::Dtype`] if it is stored otherwise):
/// one look-up in the file's table.
fn f32_tensor<'a>(file: &ModelFile<'a>, name: &str) -> Result<&'a [f32], EngineError> {
    file.tensor(name).map_err(|e| match e {
        FormatError::WrongDtype { name, found, .. } => EngineError::Dtype { name, found },
        e => e.into(),
    })
}

#[cfg(feature = "int8")]
/// The int8 tensor `name` as a matrix of `rows` rows of `depth` values along `axis` (a shape
/// or axis other than the model's is a format error naming the tensor).
fn quant<'a>(
    file: &ModelFile<'a>,
    name: &str,
    axis: QuantAxis,
    rows: usize,
    depth: usize,
) -> Result<QuantMat<'a>, EngineError> {
    let t = file.tensor_i8(name)?;
    if t.axis != axis || t.rows != rows || t.depth != depth {
        return Err(shape_error(
            name,
            rows.saturating_mul(depth),
            t.rows.saturating_mul(t.depth),
        ));
    }
    Ok(QuantMat::new(t))
}

/// The file's dense layer `name` (`[c][r]` in f32) as an `r x c` [`Dense`] of its dtype.
fn dense<'a, R: Dim, C: Dim>(
    file: &ModelFile<'a>,
    name: &str,
    r: R,
    c: C,
) -> Result<Dense<'a, R, C>, EngineError> {
    match file.dtype(name)? {
        #[cfg(feature = "int8")]
        Dtype::I8 => Ok(Dense::I8(quant(
            file,
            name,
            QuantAxis::Out,
            r.value(),
            c.value(),
        )?)),
        // The dtype is known: the values directly (a third look-up otherwise).
        Dtype::F32 => Ok(Dense::F32(view(file.tensor(name)?, name, r, c)?)),
        found => Err(EngineError::Dtype {
            name: name.try_into().unwrap_or_default(),
            found,
        }),
    }
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
