//! Training machinery on luminal 0.2.0: a run-time-shaped tensor front end, reverse-mode
//! differentiation over luminal's primitive graph, AdamW training steps compiled once, and
//! fast CPU kernels.
//!
//! * [`GraphBuilder`] / [`Tensor`]: build a luminal graph whose sizes are known only at run
//!   time. `Tensor` is a `Copy` handle (node + [`View`]); ops lower to luminal primitives
//!   exactly as luminal's `hl_ops` do. Building errors (shape mismatch, bad axis, ...) are
//!   recorded and returned by the next fallible call; nothing panics on bad shapes.
//! * [`backward`]: gradients of a scalar loss, added to the same graph.
//! * [`TrainStep`]: forward + backward + clipping + AdamW (TF1 `AdamWOptimizer`) as one
//!   compiled graph; parameters and moments persist inside luminal; a step with a non-finite
//!   loss or gradient changes nothing and is counted.
//! * [`Evaluator`]: a separate graph (e.g. without training-only heads) whose parameters
//!   are copied in by name.
//! * [`Backend`]: `Cpu` (luminal + this crate's strided kernels and batched sgemm),
//!   `CpuLuminal`, `CpuPrimitive` (reference semantics), and `Cuda` with the `cuda` feature.
//! * [`reference`]: an f64 evaluator of the same graph and a finite-difference gradient check.
//!
//! ```
//! use trainer::autodiff::{AdamWConfig, Backend, Evaluator, GraphBuilder, TrainStep};
//!
//! # fn main() -> Result<(), trainer::autodiff::AutodiffError> {
//! let (batch, d_in, classes) = (4, 3, 2);
//! let mut g = GraphBuilder::new();
//! let x = g.input("x", &[batch, d_in]);
//! let y = g.input("y", &[batch, classes]); // one-hot
//! let w = g.param("w", &[d_in, classes], vec![0.1; d_in * classes]);
//! let logits = x.matmul(w).relu() + 0.5;
//! let loss = logits.cross_entropy_with_logits(y).mean_all();
//! let mut train = TrainStep::new(g, loss, &[], AdamWConfig::default(), Backend::Cpu)?;
//!
//! train.set_input("x", &[1.0, 0.0, 2.0, 0.5, 1.0, 0.0, 0.0, 1.0, 1.0, 2.0, 2.0, 2.0])?;
//! train.set_input("y", &[1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0])?;
//! for step in 0..10 {
//!     let out = train.step(step)?; // out.loss, out.skipped
//!     assert!(!out.skipped);
//! }
//! let trained = train.params()?; // [("w", values)]: checkpoint with optimizer_state()
//!
//! // An evaluation graph with its own batch size, sharing the parameter values.
//! let mut e = GraphBuilder::new();
//! let x = e.input("x", &[1, d_in]);
//! let w = e.param("w", &[d_in, classes], vec![0.0; d_in * classes]);
//! let mut eval = Evaluator::new(e, &[x.matmul(w).softmax(1)], Backend::Cpu)?;
//! eval.load_params(&trained)?;
//! eval.set_input("x", &[1.0, 0.0, 2.0])?;
//! let probs = &eval.run()?[0];
//! assert!((probs[0] + probs[1] - 1.0).abs() < 1e-6);
//! # Ok(())
//! # }
//! ```
//!
//! Conventions: `relu(x) = x * (0 < x)` (gradient 0 at 0, as TF); `maximum(a, b)` sends the
//! gradient to `a` on ties; `max_axis` splits it evenly among tied maxima (TF
//! `reduce_max`); comparisons have zero gradient; `stop_gradient` is a copy the reverse
//! pass does not cross.

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
