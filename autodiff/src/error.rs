//! Errors of graph building, differentiation, compilation and training.

use thiserror::Error;

/// Everything that can go wrong in this crate.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum AutodiffError {
    /// A tensor would need more dimensions than luminal's shape tracker holds.
    #[error("tensor rank {rank} exceeds luminal's maximum of {max} dimensions")]
    RankTooHigh {
        /// Requested rank.
        rank: usize,
        /// luminal's limit.
        max: usize,
    },
    /// A luminal shape tracker with a symbolic (run-time) dimension was met.
    #[error("shape has a symbolic dimension; this front end needs every size known")]
    SymbolicShape,
    /// Two operands of an element-wise op have different shapes.
    #[error("{op}: shapes {lhs:?} and {rhs:?} differ")]
    ShapeMismatch {
        /// The operation.
        op: &'static str,
        /// Left operand shape.
        lhs: Vec<usize>,
        /// Right operand shape.
        rhs: Vec<usize>,
    },
    /// An axis argument is out of range.
    #[error("{op}: axis {axis} out of range for a rank-{rank} tensor")]
    BadAxis {
        /// The operation.
        op: &'static str,
        /// The axis given.
        axis: usize,
        /// Rank of the tensor.
        rank: usize,
    },
    /// Any other invalid argument, described.
    #[error("{op}: {reason}")]
    InvalidArgument {
        /// The operation.
        op: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// Data given for a tensor has the wrong length.
    #[error("'{name}': expected {expected} values for shape {shape:?}, got {got}")]
    DataLength {
        /// Tensor name.
        name: String,
        /// Declared shape.
        shape: Vec<usize>,
        /// Number of values the shape needs.
        expected: usize,
        /// Number of values given.
        got: usize,
    },
    /// Two parameters or inputs share one name.
    #[error("the name '{0}' is used twice")]
    DuplicateName(String),
    /// No parameter, input or output has this name.
    #[error("no tensor named '{0}' in this graph")]
    UnknownName(String),
    /// A tensor handle from another graph (or a stale handle) was used.
    #[error("tensor handle belongs to another graph")]
    ForeignTensor,
    /// `backward` needs a single-element loss.
    #[error("loss must have exactly one element, it has shape {0:?}")]
    NonScalarLoss(Vec<usize>),
    /// Gradients can only be taken with respect to parameter or input nodes.
    #[error("gradient requested for a tensor that is not a parameter or input")]
    NotALeaf,
    /// The graph contains an op the reverse pass does not know.
    #[error("cannot differentiate through op {0}")]
    NotDifferentiable(String),
    /// The graph contains a node the front end did not create.
    #[error("graph node {0} was not created by this front end")]
    UnknownNode(usize),
    /// An input was never given data before running the graph.
    #[error("input '{0}' has no data; call set_input first")]
    MissingInput(String),
    /// The compiled graph did not produce an expected output.
    #[error("the compiled graph produced no value for '{0}'")]
    MissingOutput(String),
    /// The requested backend is not available in this build.
    #[error("backend {0} is not available in this build")]
    BackendUnavailable(&'static str),
}
