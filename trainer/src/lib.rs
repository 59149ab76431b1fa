//! AWGIM host trainer: meta-trains AWGIM (`../shared/AWGIM.md`) on luminal compiled graphs
//! (CPU, or CUDA with the `cuda` feature) and writes `formats` model files for the engine.
//!
//! - [`autodiff`] (the `autodiff` crate, re-exported while the modules move to it): the
//!   graphs' front end, gradients and AdamW;
//! - [`awgim`]: the model, one module to read next to the paper;
//! - [`data`]: LEO / AWGIM / npy readers, the synthetic data set, the episode sampler;
//! - [`run`]: the training loop; [`evaluate`]: the test protocol;
//! - [`model_file`], [`infer`], [`curves`], [`options`]: files, exports and flags.
#![warn(missing_docs)]

pub use autodiff;
pub mod awgim;
pub mod curves;
pub mod data;
pub mod error;
pub mod evaluate;
pub mod infer;
pub mod model_file;
pub mod options;
pub mod run;
