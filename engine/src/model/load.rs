//! The model's parameters as typed structs, one per part of AWGIM.md's "Parameters", each
//! built from its tensor names in [`formats::tensors`] by borrowing the file's weights in place
//! as nalgebra views. A missing tensor or one of the wrong size is an error when the model is
//! loaded, never a panic when it is used.

use formats::tensors::{BlockNames, GeneratorNames, LayerNormNames, ENC_AP, ENC_CP};
#[cfg(feature = "int8")]
use formats::QuantAxis;
use formats::{Dtype, FormatError, ModelFile};
use nalgebra::Dim;
#[cfg(feature = "int8")]
use nalgebra::Dyn;

use crate::dims::Dims;
use crate::error::EngineError;
#[cfg(feature = "int8")]
use crate::ops::int8::{self, QuantMat};
use crate::ops::layer_norm::LayerNorm;
use crate::ops::linear;
use crate::ops::{Mat, MatMut, Weight};

/// A dense layer as the file stores it: f32 (the `R x C` view of the file's `[C][R]` matrix,
/// see [`crate::ops`]) or int8 (a [`QuantMat`] with a scale per output row: `R` rows of `C`
/// inputs, [`QuantAxis::Out`]; or, for `G1`'s halves, a depth range of each row).
pub(crate) enum Dense<'a, R: Dim, C: Dim> {
    // (R and C are the f32 variant's; an int8 layer checks them when it is loaded.)
    /// f32 weights.
    F32(Weight<'a, R, C>),
    /// int8 weights: the inputs `start..start + C` of each row of `q`.
    #[cfg(feature = "int8")]
    I8 {
        /// The whole quantised tensor.
        q: QuantMat<'a>,
        /// The first input of this layer in each row (0 but for `G1`'s attentive half).
        start: usize,
    },
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
            Self::I8 { q, start } => int8_product::<false, _, _, _, _>(q, *start, b, scratch, c),
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
            Self::I8 { q, start } => int8_product::<true, _, _, _, _>(q, *start, b, scratch, c),
        }
    }
}

#[cfg(feature = "int8")]
/// `C (+)= A_q[:, start..start + K] B` over the columns `B` and `C` share: the whole depth
/// through [`int8::mul_to`], a depth range (`G1`'s halves) through [`range_product`].
fn int8_product<const ADD: bool, K: Dim, X: Dim, R: Dim, Y: Dim>(
    q: &QuantMat<'_>,
    start: usize,
    b: &Mat<'_, K, X>,
    scratch: &mut [i16],
    c: &mut MatMut<'_, R, Y>,
) {
    let n = b.ncols().value().min(c.ncols().value());
    let b = b.columns(0, n);
    let c = c.columns_mut(0, n);
    if start == 0 && q.depth() == b.nrows().value() {
        match ADD {
            true => int8::mul_add_to(q, b, scratch, c),
            false => int8::mul_to(q, b, scratch, c),
        }
    } else {
        range_product::<ADD, K, R>(q, start, b, scratch, c);
    }
}

#[cfg(feature = "int8")]
/// `C (+)= A_q[:, start..start + K] B`: each column of `B` quantised as [`int8::mul_to`] does
/// ([`int8::quantize_column`], the pair layout), each sum exact in i32 (any order), then
/// scaled the same way, so a range product equals the whole-depth product of `B` padded with
/// zeros.
fn range_product<const ADD: bool, K: Dim, R: Dim>(
    q: &QuantMat<'_>,
    start: usize,
    b: Mat<'_, K, Dyn>,
    scratch: &mut [i16],
    mut c: MatMut<'_, R, Dyn>,
) {
    let (depth, rows, stride) = (b.nrows().value(), q.rows(), q.stride());
    if start + depth > q.depth() || c.nrows().value() != rows {
        return;
    }
    let Some(x) = scratch.get_mut(..int8::stride_of(depth)) else {
        return;
    };
    // Where value k of a column sits in the pair layout (groups of 4 stored 0, 2, 1, 3).
    let at = |k: usize| k / 4 * 4 + [0, 2, 1, 3][k % 4];
    // A range on a group boundary is whole groups of the row: `int8::dot` (the padding of
    // `x` past `depth` is zero, so the row's values there do not count).
    let grouped = start % 4 == 0 && start + x.len() <= stride;
    for (j, out) in c.column_slices_mut().enumerate() {
        let s = int8::quantize_column(b.column(j), x);
        for (r, out) in out.iter_mut().enumerate() {
            let row = &q.values()[r * stride..(r + 1) * stride];
            let sum = match grouped {
                true => int8::dot(&row[start..start + x.len()], x),
                false => row[start..start + depth]
                    .iter()
                    .enumerate()
                    .fold(0i32, |acc, (k, &a)| {
                        acc.wrapping_add(i32::from(a) * i32::from(x[at(k)]))
                    }),
            };
            let v = sum as f32 * q.scale(r) * s;
            *out = if ADD { *out + v } else { v };
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
                let (depth, stride) = (q.depth(), q.stride());
                let columns = hidden.as_slice().chunks_exact(q.rows().max(1));
                for (out, h) in w.column_slices_mut().zip(columns) {
                    out.fill(0.0);
                    for (g, &hg) in h.iter().enumerate() {
                        let a = hg * q.scale(g);
                        let row = &q.values()[g * stride..g * stride + depth];
                        for (o, &v) in out.iter_mut().zip(row) {
                            *o += a * f32::from(v);
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
    pub g1_context: Dense<'a, S::G, S::d>,
    /// Columns `d..2d` of `gen.g1` seen as `G x 2d`: the attentive half, applied to `a(x)`.
    pub g1_attentive: Dense<'a, S::G, S::d>,
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
                g1_context: Dense::I8 { q, start: 0 },
                g1_attentive: Dense::I8 {
                    q,
                    start: d.value(),
                },
                g2_mu,
            });
        }
        let g1 = f32_tensor(file, names.g1)?;
        let (context, attentive) = g1.split_at(g1.len().min(g.value() * d.value()));
        Ok(Self {
            g1_context: Dense::F32(view(context, names.g1, g, d)?),
            g1_attentive: Dense::F32(view(attentive, names.g1, g, d)?),
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

/// The f32 values of the tensor `name` ([`EngineError::Dtype`] if it is stored otherwise).
fn f32_tensor<'a>(file: &ModelFile<'a>, name: &str) -> Result<&'a [f32], EngineError> {
    match file.dtype(name)? {
        Dtype::F32 => Ok(file.tensor(name)?),
        found => Err(EngineError::Dtype {
            name: name.try_into().unwrap_or_default(),
            found,
        }),
    }
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
        Dtype::I8 => Ok(Dense::I8 {
            q: quant(file, name, QuantAxis::Out, r.value(), c.value())?,
            start: 0,
        }),
        _ => Ok(Dense::F32(weight(file, name, r, c)?)),
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
