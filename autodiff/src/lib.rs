#![doc = include_str!("../README.md")]
#![warn(missing_docs)]
#![deny(unsafe_code)]

mod backward;
mod error;
#[allow(unsafe_code)]
pub mod exp2;
mod graph;
// `unsafe` is allowed in three modules: `exp2` (its vector intrinsics), `kernels`, where `BatchedMatMul` calls `sgemm::sgemm`
// on strided operands and products and element-wise ops write fresh, uninitialised outputs,
// and `sgemm`, the products' intrinsics, raw pointers and threads (each block with its own
// safety argument).
#[allow(unsafe_code)]
pub mod kernels;
mod ops;
mod profile;
mod program;
pub mod reference;
#[allow(unsafe_code)]
pub mod sgemm;
mod train;
mod view;

pub use backward::backward;
pub use error::AutodiffError;
pub use graph::{GraphBuilder, LeafKind, Tensor};
pub use profile::{OpClass, OpRecord, Phase, Profile, Totals};
pub use program::Backend;
pub use train::{AdamWConfig, Evaluator, OptimizerState, StepOutcome, TrainStep};
pub use view::{Access, AxisAccess, View, MAX_RANK};
