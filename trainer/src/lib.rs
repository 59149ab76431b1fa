//! AWGIM host trainer (work in progress).

#[warn(missing_docs)]
pub mod autodiff;
pub mod data;
