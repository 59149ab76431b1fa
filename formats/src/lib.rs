//! The AWGIM model file format (work in progress).
#![no_std]
