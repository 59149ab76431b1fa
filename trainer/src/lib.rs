//! AWGIM host trainer (work in progress).
