//! Embedding a model file in a `static` with the alignment the zero-copy path needs.

/// `N` bytes aligned to 64, for a model file in a `static` (or flash): every tensor of a file
/// stored in it is an aligned `&[f32]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C, align(64))]
pub struct Aligned<const N: usize>(pub [u8; N]);

impl<const N: usize> Aligned<N> {
    /// The bytes.
    pub const fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Includes a model file in the binary as a 64-byte aligned `&'static [u8]`, like
/// `include_bytes!` (the path is relative to the invoking source file).
///
/// ```
/// static MODEL: &[u8] = formats::include_model!("../FORMAT.md");
/// assert_eq!(MODEL.as_ptr() as usize % 64, 0);
/// ```
#[macro_export]
macro_rules! include_model {
    ($path:expr) => {{
        const LEN: usize = include_bytes!($path).len();
        static ALIGNED: $crate::Aligned<LEN> = $crate::Aligned(*include_bytes!($path));
        ALIGNED.as_bytes()
    }};
}
