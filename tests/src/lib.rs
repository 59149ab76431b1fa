//! Shared test support: an independent f64 reference of AWGIM's evaluation path, and seeded
//! random model files and tasks for any configuration.
#![deny(missing_docs)]

pub mod random;
pub mod reference;
