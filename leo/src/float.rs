//! Decoding float32 / float64 array data of either byte order into `f32`.

/// The element types accepted for embeddings (also by the trainer's `.npy`
/// reader): numpy's float32 and float64, little- or big-endian.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloatType {
    /// `<f4`.
    F32Le,
    /// `>f4`.
    F32Be,
    /// `<f8` (rounded to `f32` when decoded).
    F64Le,
    /// `>f8` (rounded to `f32` when decoded).
    F64Be,
}

impl FloatType {
    /// The float type of an element size and byte order, `None` for other sizes.
    pub fn new(size: usize, big_endian: bool) -> Option<FloatType> {
        match (size, big_endian) {
            (4, false) => Some(FloatType::F32Le),
            (4, true) => Some(FloatType::F32Be),
            (8, false) => Some(FloatType::F64Le),
            (8, true) => Some(FloatType::F64Be),
            _ => None,
        }
    }

    /// Bytes per element.
    pub fn width(self) -> usize {
        match self {
            FloatType::F32Le | FloatType::F32Be => 4,
            FloatType::F64Le | FloatType::F64Be => 8,
        }
    }

    /// Decodes `dst.len()` elements of `src`: element `j` of `dst` is the
    /// element at index `start + j * stride` of `src`. `None` if an index
    /// falls outside `src`.
    pub fn gather(self, src: &[u8], start: usize, stride: usize, dst: &mut [f32]) -> Option<()> {
        match self {
            FloatType::F32Le => gather_with::<4>(src, start, stride, dst, f32::from_le_bytes),
            FloatType::F32Be => gather_with::<4>(src, start, stride, dst, f32::from_be_bytes),
            FloatType::F64Le => {
                gather_with::<8>(src, start, stride, dst, |b| f64::from_le_bytes(b) as f32)
            }
            FloatType::F64Be => {
                gather_with::<8>(src, start, stride, dst, |b| f64::from_be_bytes(b) as f32)
            }
        }
    }
}

/// [`FloatType::gather`] for elements of `W` bytes decoded by `decode`
/// (monomorphised so the contiguous loop has no per-element dispatch).
#[inline(always)]
fn gather_with<const W: usize>(
    src: &[u8],
    start: usize,
    stride: usize,
    dst: &mut [f32],
    decode: impl Fn([u8; W]) -> f32,
) -> Option<()> {
    let word = |b: &[u8]| -> [u8; W] {
        let mut w = [0u8; W];
        w.copy_from_slice(b);
        w
    };
    if stride == 1 {
        let begin = start.checked_mul(W)?;
        let end = begin.checked_add(dst.len().checked_mul(W)?)?;
        let bytes = src.get(begin..end)?;
        for (d, b) in dst.iter_mut().zip(bytes.chunks_exact(W)) {
            *d = decode(word(b));
        }
    } else {
        for (j, d) in dst.iter_mut().enumerate() {
            let begin = stride.checked_mul(j)?.checked_add(start)?.checked_mul(W)?;
            *d = decode(word(src.get(begin..begin.checked_add(W)?)?));
        }
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gathers_all_four_types_contiguous_and_strided() {
        let values = [1.5f32, -2.25, 3.0, 0.125];
        let le32: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let be32: Vec<u8> = values.iter().flat_map(|v| v.to_be_bytes()).collect();
        let le64: Vec<u8> = values
            .iter()
            .flat_map(|&v| f64::from(v).to_le_bytes())
            .collect();
        let be64: Vec<u8> = values
            .iter()
            .flat_map(|&v| f64::from(v).to_be_bytes())
            .collect();
        for (ty, src) in [
            (FloatType::F32Le, &le32),
            (FloatType::F32Be, &be32),
            (FloatType::F64Le, &le64),
            (FloatType::F64Be, &be64),
        ] {
            let mut all = [0f32; 4];
            ty.gather(src, 0, 1, &mut all).unwrap();
            assert_eq!(all, values);
            let mut odd = [0f32; 2];
            ty.gather(src, 1, 2, &mut odd).unwrap();
            assert_eq!(odd, [-2.25, 0.125]);
            let mut too_many = [0f32; 3];
            assert!(ty.gather(src, 2, 1, &mut too_many).is_none());
            assert!(ty.gather(src, 1, 2, &mut too_many).is_none());
        }
    }
}
