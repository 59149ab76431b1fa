#![doc = include_str!("../README.md")]
#![warn(missing_docs)]
#![deny(unsafe_code)]

mod backward;
mod error;
mod graph;
// The one `unsafe` block of the crate: `BatchedMatMul` calls `matrixmultiply::sgemm` on
// strided operands; its safety argument is at the block.
#[allow(unsafe_code)]
pub mod kernels;
mod ops;
mod profile;
mod program;
pub mod reference;
mod train;
mod view;

pub use backward::backward;
pub use error::AutodiffError;
pub use graph::{GraphBuilder, LeafKind, Tensor};
pub use profile::{OpClass, OpRecord, Phase, Profile, Totals};
pub use program::Backend;
pub use train::{AdamWConfig, Evaluator, OptimizerState, StepOutcome, TrainStep};
pub use view::{Access, AxisAccess, View, MAX_RANK};
