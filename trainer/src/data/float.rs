//! Decoding float32 / float64 array data of either byte order into `f32`.

/// The element types accepted for embeddings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FloatType {
    F32Le,
    F32Be,
    F64Le,
    F64Be,
}

impl FloatType {
    /// The float type of an element size and byte order, `None` for other sizes.
    pub(crate) fn new(size: usize, big_endian: bool) -> Option<FloatType> {
        match (size, big_endian) {
            (4, false) => Some(FloatType::F32Le),
            (4, true) => Some(FloatType::F32Be),
            (8, false) => Some(FloatType::F64Le),
            (8, true) => Some(FloatType::F64Be),
            _ => None,
        }
    }

    /// Bytes per element.
    pub(crate) fn width(self) -> usize {
        match self {
            FloatType::F32Le | FloatType::F32Be => 4,
            FloatType::F64Le | FloatType::F64Be => 8,
        }
    }

    fn decode(self, b: &[u8]) -> f32 {
        let mut w4 = [0u8; 4];
        let mut w8 = [0u8; 8];
        match self {
            FloatType::F32Le | FloatType::F32Be => w4.copy_from_slice(&b[..4]),
            FloatType::F64Le | FloatType::F64Be => w8.copy_from_slice(&b[..8]),
        }
        match self {
            FloatType::F32Le => f32::from_le_bytes(w4),
            FloatType::F32Be => f32::from_be_bytes(w4),
            FloatType::F64Le => f64::from_le_bytes(w8) as f32,
            FloatType::F64Be => f64::from_be_bytes(w8) as f32,
        }
    }

    /// Decodes `dst.len()` elements of `src`: element `j` of `dst` is the
    /// element at index `start + j * stride` of `src`. `None` if an index
    /// falls outside `src`.
    pub(crate) fn gather(self, src: &[u8], start: usize, stride: usize, dst: &mut [f32]) -> Option<()> {
        let w = self.width();
        if stride == 1 {
            let begin = start.checked_mul(w)?;
            let end = begin.checked_add(dst.len().checked_mul(w)?)?;
            let bytes = src.get(begin..end)?;
            for (d, b) in dst.iter_mut().zip(bytes.chunks_exact(w)) {
                *d = self.decode(b);
            }
        } else {
            for (j, d) in dst.iter_mut().enumerate() {
                let begin = stride.checked_mul(j)?.checked_add(start)?.checked_mul(w)?;
                *d = self.decode(src.get(begin..begin.checked_add(w)?)?);
            }
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gathers_all_four_types_contiguous_and_strided() {
        let values = [1.5f32, -2.25, 3.0, 0.125];
        let le32: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let be32: Vec<u8> = values.iter().flat_map(|v| v.to_be_bytes()).collect();
        let le64: Vec<u8> = values.iter().flat_map(|&v| f64::from(v).to_le_bytes()).collect();
        let be64: Vec<u8> = values.iter().flat_map(|&v| f64::from(v).to_be_bytes()).collect();
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
