//! The graph under construction: a luminal `Graph` plus what the front end knows about
//! every node (its buffer shape and role), reached from `Copy` tensor handles.
//!
//! Handles refer to their graph by id through a thread-local registry, so `Tensor` is a
//! small `Copy` value with no pointers and no `unsafe`. Errors found while building
//! (shape mismatches, bad axes, ...) are recorded on the graph and returned by the next
//! fallible call ([`GraphBuilder::check`], [`crate::backward`], compiling); the
//! failing op returns a placeholder so that building code stays free of `?` noise.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use luminal::graph::Graph as LuminalGraph;
use luminal::op::{self, Constant, ConstantValue, Function, Operator};
use luminal::prelude::NodeIndex;
use luminal::tensor::Tensor as LuminalTensor;

use super::error::AutodiffError;
use super::view::{View, MAX_RANK};

/// What kind of leaf a named tensor is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeafKind {
    /// Trainable; its value persists across steps and is updated by the optimizer.
    Param,
    /// Fed from the host before each run.
    Input,
    /// Fixed data set once when the graph is built (e.g. an index ramp).
    Constant,
    /// Persistent non-trainable state updated by the optimizer (AdamW moments).
    State,
}

/// A named leaf tensor (parameter, input or constant data).
#[derive(Clone, Debug)]
pub(crate) struct Leaf {
    pub name: String,
    pub node: NodeIndex,
    pub shape: Vec<usize>,
    pub kind: LeafKind,
    /// Initial value (parameters, constants); inputs have none.
    pub data: Option<Vec<f32>>,
}

/// Role of a graph node, as far as the reverse pass cares.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum NodeRole {
    /// A leaf; index into `Ctx::leaves`.
    Leaf(usize),
    /// A primitive op created by the front end.
    Op,
    /// A copy that blocks gradients (`stop_gradient`).
    StopGradient,
}

/// What the front end records per luminal node.
#[derive(Clone, Debug)]
pub(crate) struct NodeInfo {
    /// Shape of the node's output buffer (always contiguous).
    pub shape: Vec<usize>,
    pub role: NodeRole,
}

/// The state behind a [`GraphBuilder`].
pub(crate) struct Ctx {
    pub id: u64,
    /// Boxed: luminal ops keep raw pointers into the graph, so it must never move.
    pub graph: Box<LuminalGraph>,
    pub nodes: HashMap<NodeIndex, NodeInfo>,
    pub leaves: Vec<Leaf>,
    pub error: Option<AutodiffError>,
}

thread_local! {
    static REGISTRY: RefCell<HashMap<u64, Ctx>> = RefCell::new(HashMap::new());
}
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Run `f` on the graph with this id.
///
/// # Panics
/// When the graph's [`GraphBuilder`] was dropped or consumed: a tensor handle outlived
/// its graph, which is a programming error, not bad data.
pub(crate) fn with_ctx<R>(id: u64, f: impl FnOnce(&mut Ctx) -> R) -> R {
    REGISTRY.with(|r| {
        let mut reg = r.borrow_mut();
        let ctx = reg.get_mut(&id).unwrap_or_else(|| {
            panic!("tensor used after its GraphBuilder was dropped or compiled (graph {id})")
        });
        f(ctx)
    })
}

/// A tensor in a graph under construction: a node, and how that node's buffer is viewed.
///
/// Cheap to copy. Operations are its methods.
#[derive(Clone, Copy, Debug)]
pub struct Tensor {
    pub(crate) graph: u64,
    pub(crate) node: NodeIndex,
    pub(crate) view: View,
}

impl Tensor {
    /// Logical shape.
    pub fn shape(&self) -> Vec<usize> {
        self.view.shape()
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.view.rank()
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.view.numel()
    }

    /// A constant with this tensor's shape.
    pub fn full_like(&self, value: f32) -> Tensor {
        let shape = self.shape();
        with_ctx(self.graph, |c| c.splat(value, &shape))
    }

    /// The luminal node producing this tensor's buffer.
    pub fn node(&self) -> NodeIndex {
        self.node
    }

    /// How this tensor views its node's buffer.
    pub fn view(&self) -> View {
        self.view
    }
}

/// Builds a training or evaluation graph with shapes known at run time.
///
/// See the [crate documentation](crate) for an example.
pub struct GraphBuilder {
    id: u64,
}

impl Default for GraphBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl GraphBuilder {
    /// An empty graph.
    pub fn new() -> Self {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let ctx = Ctx {
            id,
            graph: Box::new(LuminalGraph::new()),
            nodes: HashMap::new(),
            leaves: Vec::new(),
            error: None,
        };
        REGISTRY.with(|r| r.borrow_mut().insert(id, ctx));
        GraphBuilder { id }
    }

    /// A trainable parameter with its initial value (row-major).
    pub fn param(&mut self, name: &str, shape: &[usize], init: Vec<f32>) -> Tensor {
        with_ctx(self.id, |c| {
            c.leaf(name, shape, LeafKind::Param, Some(init))
        })
    }

    /// An input, fed from the host before each run.
    pub fn input(&mut self, name: &str, shape: &[usize]) -> Tensor {
        with_ctx(self.id, |c| c.leaf(name, shape, LeafKind::Input, None))
    }

    /// A constant tensor with fixed data.
    pub fn constant_data(&mut self, name: &str, shape: &[usize], data: Vec<f32>) -> Tensor {
        with_ctx(self.id, |c| {
            c.leaf(name, shape, LeafKind::Constant, Some(data))
        })
    }

    /// Optimizer state with its initial value (not trainable, persists between steps).
    pub(crate) fn state(&mut self, name: &str, shape: &[usize], init: Vec<f32>) -> Tensor {
        with_ctx(self.id, |c| {
            c.leaf(name, shape, LeafKind::State, Some(init))
        })
    }

    /// A scalar constant broadcast to `shape`.
    pub fn full(&mut self, value: f32, shape: &[usize]) -> Tensor {
        with_ctx(self.id, |c| c.splat(value, shape))
    }

    /// The first error recorded while building, if any.
    pub fn check(&self) -> Result<(), AutodiffError> {
        with_ctx(self.id, |c| match &c.error {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        })
    }

    /// Names and shapes of all parameters, in declaration order.
    pub fn params(&self) -> Vec<(String, Vec<usize>)> {
        self.leaves_of(LeafKind::Param)
    }

    /// Names and shapes of all inputs, in declaration order.
    pub fn inputs(&self) -> Vec<(String, Vec<usize>)> {
        self.leaves_of(LeafKind::Input)
    }

    /// Handle of the parameter or input with this name.
    pub fn tensor(&self, name: &str) -> Result<Tensor, AutodiffError> {
        with_ctx(self.id, |c| {
            let leaf = c
                .leaves
                .iter()
                .find(|l| l.name == name)
                .ok_or_else(|| AutodiffError::UnknownName(name.to_string()))?;
            Ok(Tensor {
                graph: c.id,
                node: leaf.node,
                view: View::contiguous(&leaf.shape)?,
            })
        })
    }

    /// Number of luminal nodes so far (for diagnostics and tests).
    pub fn node_count(&self) -> usize {
        with_ctx(self.id, |c| c.graph.graph.node_count())
    }

    /// One past the largest luminal node index so far (nodes are never removed while
    /// building, so indices below it are exactly the nodes built so far).
    pub(crate) fn node_bound(&self) -> usize {
        use luminal::prelude::petgraph::visit::NodeIndexable;
        with_ctx(self.id, |c| c.graph.graph.node_bound())
    }

    fn leaves_of(&self, kind: LeafKind) -> Vec<(String, Vec<usize>)> {
        with_ctx(self.id, |c| {
            c.leaves
                .iter()
                .filter(|l| l.kind == kind)
                .map(|l| (l.name.clone(), l.shape.clone()))
                .collect()
        })
    }

    /// Take the graph out of the registry (handles stop working).
    pub(crate) fn into_ctx(self) -> Ctx {
        let id = self.id;
        std::mem::forget(self);
        REGISTRY
            .with(|r| r.borrow_mut().remove(&id))
            .unwrap_or_else(|| {
                // Unreachable: a live GraphBuilder always has its registry entry.
                panic!("graph {id} missing from the registry")
            })
    }
}

impl Drop for GraphBuilder {
    fn drop(&mut self) {
        let id = self.id;
        // `try_with`: during thread teardown the registry may already be gone.
        let _ = REGISTRY.try_with(|r| r.borrow_mut().remove(&id));
    }
}

/// luminal's loader closure for a `Function` node.
type LoadFn =
    Box<dyn Fn(Vec<(op::InputTensor, luminal::prelude::ShapeTracker)>) -> Vec<LuminalTensor>>;

/// Placeholder data for leaves without a value (never read: runs check inputs first).
fn zeros_fn(n: usize) -> LoadFn {
    Box::new(move |_| vec![LuminalTensor::new(vec![0.0f32; n])])
}

impl Ctx {
    /// Record the first error.
    pub fn fail(&mut self, err: AutodiffError) {
        if self.error.is_none() {
            self.error = Some(err);
        }
    }

    /// Stand-in result for a failed op: zeros of the expected shape.
    pub fn poison(&mut self, shape: &[usize]) -> Tensor {
        if shape.len() > MAX_RANK {
            return self.splat(0.0, &[]);
        }
        self.splat(0.0, shape)
    }

    /// Check a handle belongs to this graph.
    pub fn owns(&mut self, t: &Tensor) -> bool {
        if t.graph != self.id || !self.nodes.contains_key(&t.node) {
            self.fail(AutodiffError::ForeignTensor);
            return false;
        }
        true
    }

    pub fn tensor(&self, node: NodeIndex, view: View) -> Tensor {
        Tensor {
            graph: self.id,
            node,
            view,
        }
    }

    /// Shape of a node's output buffer.
    pub fn node_shape(&self, node: NodeIndex) -> Option<&[usize]> {
        self.nodes.get(&node).map(|n| n.shape.as_slice())
    }

    /// The node's buffer as a plain tensor.
    pub fn node_tensor(&self, node: NodeIndex) -> Result<Tensor, AutodiffError> {
        let shape = self
            .node_shape(node)
            .ok_or(AutodiffError::UnknownNode(node.index()))?;
        Ok(self.tensor(node, View::contiguous(shape)?))
    }

    pub fn leaf(
        &mut self,
        name: &str,
        shape: &[usize],
        kind: LeafKind,
        data: Option<Vec<f32>>,
    ) -> Tensor {
        let view = match View::contiguous(shape) {
            Ok(v) => v,
            Err(e) => {
                self.fail(e);
                return self.poison(&[]);
            }
        };
        if self.leaves.iter().any(|l| l.name == name) {
            self.fail(AutodiffError::DuplicateName(name.to_string()));
        }
        let numel: usize = shape.iter().product();
        if let Some(d) = &data {
            if d.len() != numel {
                self.fail(AutodiffError::DataLength {
                    name: name.to_string(),
                    shape: shape.to_vec(),
                    expected: numel,
                    got: d.len(),
                });
            }
        }
        let label = match kind {
            LeafKind::Param => format!("Param {name}"),
            LeafKind::Input => format!("Input {name}"),
            LeafKind::Constant => format!("Constant {name}"),
            LeafKind::State => format!("State {name}"),
        };
        let node = self
            .graph
            .graph
            .add_node(Box::new(Function(label, zeros_fn(numel))));
        self.leaves.push(Leaf {
            name: name.to_string(),
            node,
            shape: shape.to_vec(),
            kind,
            data,
        });
        self.nodes.insert(
            node,
            NodeInfo {
                shape: shape.to_vec(),
                role: NodeRole::Leaf(self.leaves.len() - 1),
            },
        );
        self.tensor(node, view)
    }

    /// Add a luminal op reading `inputs` (each through its view) and producing a buffer
    /// of `shape`.
    pub fn add_op<O: Operator + 'static>(
        &mut self,
        op: O,
        inputs: &[Tensor],
        shape: Vec<usize>,
        role: NodeRole,
    ) -> NodeIndex {
        let mut new = self.graph.add_op(op);
        for t in inputs {
            new = new.input(t.node, 0, t.view.to_tracker());
        }
        let node = new.finish();
        self.nodes.insert(node, NodeInfo { shape, role });
        node
    }

    /// A scalar constant (rank 0).
    pub fn scalar(&mut self, value: f32) -> Tensor {
        let dyn_map: *const _ = &self.graph.dyn_map;
        let node = self.add_op(
            Constant(ConstantValue::Float(value), dyn_map),
            &[],
            vec![],
            NodeRole::Op,
        );
        self.tensor(node, View::scalar())
    }

    /// A scalar constant broadcast to `shape`.
    pub fn splat(&mut self, value: f32, shape: &[usize]) -> Tensor {
        let mut t = self.scalar(value);
        if shape.len() > MAX_RANK {
            self.fail(AutodiffError::RankTooHigh {
                rank: shape.len(),
                max: MAX_RANK,
            });
            return t;
        }
        for (axis, &n) in shape.iter().enumerate() {
            t.view = t.view.expand(axis, n);
        }
        t
    }

    /// Copy into a fresh row-major buffer unless the view already is one.
    pub fn contiguous(&mut self, t: Tensor) -> Tensor {
        if t.view.is_plain() {
            return t;
        }
        self.force_contiguous(t, NodeRole::Op)
    }

    /// Always add a `Contiguous` node (also used for `stop_gradient`).
    pub fn force_contiguous(&mut self, t: Tensor, role: NodeRole) -> Tensor {
        let shape = t.shape();
        let node = self.add_op(op::Contiguous, &[t], shape.clone(), role);
        match View::contiguous(&shape) {
            Ok(v) => self.tensor(node, v),
            Err(e) => {
                self.fail(e);
                t
            }
        }
    }

    /// A luminal unary op: applied to the whole buffer, the view passes through.
    pub fn unary<O: Operator + 'static>(&mut self, op: O, t: Tensor) -> Tensor {
        if !self.owns(&t) {
            return t;
        }
        // The op maps the physical buffer, so padding would read f(x) instead of f(0)=0's
        // intended value: materialise padded views first.
        let t = if t.view.is_padded() {
            self.contiguous(t)
        } else {
            t
        };
        let shape = self
            .node_shape(t.node)
            .map(<[usize]>::to_vec)
            .unwrap_or_default();
        let node = self.add_op(op, &[t], shape, NodeRole::Op);
        self.tensor(node, t.view)
    }

    /// A luminal binary op on two equally shaped tensors; the result is row-major.
    pub fn binary<O: Operator + 'static>(
        &mut self,
        name: &'static str,
        op: O,
        a: Tensor,
        b: Tensor,
    ) -> Tensor {
        if !self.owns(&a) || !self.owns(&b) {
            return a;
        }
        let (sa, sb) = (a.shape(), b.shape());
        if sa != sb {
            self.fail(AutodiffError::ShapeMismatch {
                op: name,
                lhs: sa.clone(),
                rhs: sb,
            });
            return self.poison(&sa);
        }
        let node = self.add_op(op, &[a, b], sa.clone(), NodeRole::Op);
        match View::contiguous(&sa) {
            Ok(v) => self.tensor(node, v),
            Err(e) => {
                self.fail(e);
                a
            }
        }
    }

    /// Check an axis argument.
    pub fn axis_ok(&mut self, op: &'static str, t: &Tensor, axis: usize) -> bool {
        if axis >= t.rank() {
            self.fail(AutodiffError::BadAxis {
                op,
                axis,
                rank: t.rank(),
            });
            return false;
        }
        true
    }

    /// A luminal reduce op (`SumReduce` / `MaxReduce`) over one axis.
    pub fn reduce(&mut self, name: &'static str, max: bool, t: Tensor, axis: usize) -> Tensor {
        if !self.owns(&t) || !self.axis_ok(name, &t, axis) {
            return t;
        }
        // luminal's reduce kernels size their loops with `ShapeTracker::shape()`, which is
        // wrong for slices bounded on both ends (never produced) and MaxReduce skips padded
        // elements where every other op reads zeros: materialise padded inputs to max.
        let t = if max && t.view.is_padded() {
            self.contiguous(t)
        } else {
            t
        };
        let mut shape = t.shape();
        shape.remove(axis);
        let node = if max {
            self.add_op(op::MaxReduce(axis), &[t], shape.clone(), NodeRole::Op)
        } else {
            self.add_op(op::SumReduce(axis), &[t], shape.clone(), NodeRole::Op)
        };
        match View::contiguous(&shape) {
            Ok(v) => self.tensor(node, v),
            Err(e) => {
                self.fail(e);
                t
            }
        }
    }
}
