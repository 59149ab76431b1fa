//! Training machinery on luminal 0.2.0: a run-time-shaped tensor front end, reverse-mode
//! differentiation over luminal's primitive graph, AdamW training steps compiled once, and
//! fast CPU kernels.
//!
//! (Module documentation with an example is completed below.)

mod backward;
mod error;
mod graph;
pub mod kernels;
mod ops;
mod program;
pub mod reference;
mod train;
mod view;

pub use backward::backward;
pub use error::AutodiffError;
pub use graph::{GraphBuilder, LeafKind, Tensor};
pub use program::Backend;
pub use train::{AdamWConfig, Evaluator, OptimizerState, StepOutcome, TrainStep};
pub use view::{Access, AxisAccess, View, MAX_RANK};
