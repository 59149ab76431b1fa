//! AWGIM host trainer (work in progress).

pub mod autodiff;
