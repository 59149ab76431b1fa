//! Borrowing the weights of a model file in place as nalgebra views.

use formats::ModelFile;
use nalgebra::SVectorView;

use crate::error::EngineError;
use crate::ops::layer_norm::LayerNorm;
use crate::ops::Weight;

/// One attention block. Every matrix is the file's `[in][out]` dense layer seen column-major,
/// i.e. its transpose (`out x in`), so `wq * x` is AWGIM.md's `x Wq`. Head `j` owns rows
/// `j d/h..(j+1) d/h` of `wq`, `wk`, `wv` (its outputs) and columns `j d/h..(j+1) d/h` of `wo`
/// (its inputs).
pub(crate) struct Block<'a, const L: usize, const L2: usize> {
    pub wq: Weight<'a, L, L>,
    pub wk: Weight<'a, L, L>,
    pub wv: Weight<'a, L, L>,
    pub wo: Weight<'a, L, L>,
    pub ln1: LayerNorm<'a, L>,
    pub f1: Weight<'a, L2, L>,
    pub f2: Weight<'a, L, L2>,
    pub ln2: LayerNorm<'a, L>,
}

/// The error for a tensor with the wrong number of elements.
pub(crate) fn shape_error(name: &str, expected: usize, found: usize) -> EngineError {
    EngineError::Format(formats::FormatError::LengthMismatch {
        name: name.try_into().unwrap_or_default(),
        expected: expected as u64,
        found: found as u64,
    })
}

/// The `R * C` values of `data` (checked) as an `R x C` column-major view.
pub(crate) fn view<'a, const R: usize, const C: usize>(
    data: &'a [f32],
    name: &str,
) -> Result<Weight<'a, R, C>, EngineError> {
    if data.len() != R * C {
        return Err(shape_error(name, R * C, data.len()));
    }
    Ok(Weight::from_slice(data))
}

/// The file's `[C][R]` row-major tensor `name`, borrowed as the `R x C` view of its transpose.
pub(crate) fn weight<'a, const R: usize, const C: usize>(
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

/// The tensor names of block `$b` (`sa_ap`, `ca_ap` or `sa_cp`), in [`block`]'s order.
macro_rules! block_names {
    ($b:literal) => {
        [
            concat!($b, ".wq"),
            concat!($b, ".wk"),
            concat!($b, ".wv"),
            concat!($b, ".wo"),
            concat!($b, ".ln1.gain"),
            concat!($b, ".ln1.bias"),
            concat!($b, ".f1"),
            concat!($b, ".f2"),
            concat!($b, ".ln2.gain"),
            concat!($b, ".ln2.bias"),
        ]
    };
}
pub(crate) use block_names;

/// The attention block with tensors `names` (from [`block_names!`]); its layer norms use
/// `epsilon`.
pub(crate) fn block<'a, const L: usize, const L2: usize>(
    file: &ModelFile<'a>,
    names: [&str; 10],
    epsilon: f32,
) -> Result<Block<'a, L, L2>, EngineError> {
    let [wq, wk, wv, wo, gain1, bias1, f1, f2, gain2, bias2] = names;
    Ok(Block {
        wq: weight(file, wq)?,
        wk: weight(file, wk)?,
        wv: weight(file, wv)?,
        wo: weight(file, wo)?,
        ln1: LayerNorm {
            gain: vector(file, gain1)?,
            bias: vector(file, bias1)?,
            epsilon,
        },
        f1: weight(file, f1)?,
        f2: weight(file, f2)?,
        ln2: LayerNorm {
            gain: vector(file, gain2)?,
            bias: vector(file, bias2)?,
            epsilon,
        },
    })
}
