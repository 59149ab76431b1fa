//! AWGIM inference engine (work in progress).
#![no_std]
