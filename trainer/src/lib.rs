//! AWGIM host trainer: meta-trains AWGIM (`../shared/AWGIM.md`) on luminal compiled graphs
//! (CPU, or CUDA with the `cuda` feature) and writes `formats` model files for the engine.
//! The graphs' front end, gradients and AdamW are the `autodiff` crate; pickles are read by
//! the `leo` crate.
//!
//! - [`awgim`]: the model, one module to read next to the paper;
//! - [`data`]: data sets from LEO / AWGIM pickles (through `leo`), npy and npz, the
//!   synthetic data set, the episode sampler;
//! - [`run`]: the training loop; [`evaluate`]: the test protocol;
//! - [`model_file`], [`infer`], [`export`], [`curves`], [`options`]: files, exports (int8
//!   included) and flags.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod awgim;
pub mod curves;
pub mod data;
pub mod error;
pub mod evaluate;
pub mod export;
pub mod infer;
pub mod model_file;
pub mod options;
pub mod run;
