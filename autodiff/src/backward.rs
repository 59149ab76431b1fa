//! Reverse-mode differentiation over luminal's primitive graph.
//!
//! Every node produces a row-major buffer; every edge views that buffer through a
//! [`View`]. The gradient of a node is a tensor shaped like its buffer. For each node, in
//! reverse topological order, the op's rule gives the gradient with respect to what the op
//! *saw* (the viewed input), and [`Ctx::pullback`] carries it back through the view to the
//! producer's buffer: permutes are inverted, broadcast axes summed, slices zero-padded,
//! pads sliced off, reshapes undone.
//!
//! Unary ops act on the producer's whole buffer (as luminal runs them), so their rule never
//! touches the view; a broadcast multiply followed by a sum over the last axis (a matmul as
//! luminal lowers it) is differentiated as a matmul, so gradients are matmuls too, never the
//! broadcast product. Ties, kinks and comparisons follow the crate's
//! [conventions](crate#conventions).

use std::collections::{HashMap, HashSet};

use luminal::op::{self, Operator};
use luminal::prelude::petgraph::{algo::toposort, visit::EdgeRef, Direction};
use luminal::prelude::NodeIndex;

use super::error::AutodiffError;
use super::graph::{with_ctx, Ctx, LeafKind, NodeRole, Tensor};
use super::view::View;

const LN_2: f32 = std::f32::consts::LN_2;

/// Gradients of the scalar `loss` with respect to each tensor of `wrt` (parameters or
/// inputs, as returned by [`super::GraphBuilder::param`] / [`super::GraphBuilder::input`]),
/// added to the same graph. A tensor the loss does not depend on gets zeros.
pub fn backward(loss: Tensor, wrt: &[Tensor]) -> Result<Vec<Tensor>, AutodiffError> {
    with_ctx(loss.graph, |c| c.backward(loss, wrt))
}

/// One input edge of a node: the producer and how the op views it.
#[derive(Clone, Copy)]
struct Edge {
    src: NodeIndex,
    view: View,
}

impl Edge {
    fn tensor(&self, c: &Ctx) -> Tensor {
        c.tensor(self.src, self.view)
    }
}

impl Ctx {
    fn inputs_of(&self, node: NodeIndex) -> Result<Vec<Edge>, AutodiffError> {
        let mut edges: Vec<(u8, Edge)> = Vec::new();
        for e in self.graph.graph.edges_directed(node, Direction::Incoming) {
            if let Some((input, _, tracker)) = e.weight().as_data() {
                edges.push((
                    input,
                    Edge {
                        src: e.source(),
                        view: View::from_tracker(&tracker)?,
                    },
                ));
            }
        }
        edges.sort_by_key(|(i, _)| *i);
        Ok(edges.into_iter().map(|(_, e)| e).collect())
    }

    fn consumers(&self, node: NodeIndex) -> usize {
        self.graph
            .graph
            .edges_directed(node, Direction::Outgoing)
            .filter(|e| !e.weight().is_schedule())
            .count()
    }

    /// Carry a gradient through an edge view, back to the producer's buffer shape.
    pub(crate) fn pullback(
        &mut self,
        grad: Tensor,
        view: &View,
        src: NodeIndex,
    ) -> Result<Tensor, AutodiffError> {
        let dims = view.physical_dims();
        let order = view.order();
        // Put the axes in physical order.
        let mut to_physical = vec![0; order.len()];
        for (axis, &p) in order.iter().enumerate() {
            to_physical[p] = axis;
        }
        let mut g = self.permute(grad, &to_physical);
        // Broadcast axes were read many times: sum them.
        for p in (0..dims.len()).rev() {
            if dims[p].fake {
                g = self.sum(g, &[p]);
            }
        }
        // Slices become zero padding, padding is cut off.
        for (axis, d) in dims.iter().filter(|d| !d.fake).enumerate() {
            if d.pad_before > 0 || d.pad_after > 0 {
                g = self.slice(g, axis, d.pad_before, d.pad_before + d.size);
            } else {
                let end = d.slice_end.unwrap_or(d.size).min(d.size);
                if d.slice_start > 0 || end < d.size {
                    g = self.pad(g, axis, d.slice_start, d.size - end);
                }
            }
        }
        let shape = self
            .node_shape(src)
            .ok_or(AutodiffError::UnknownNode(src.index()))?
            .to_vec();
        if g.numel() != shape.iter().product::<usize>() {
            return Err(AutodiffError::InvalidArgument {
                op: "backward",
                reason: format!(
                    "view {:?} does not cover the {shape:?} buffer of node {}",
                    view.shape(),
                    src.index()
                ),
            });
        }
        Ok(self.reshape(g, &shape))
    }

    fn backward(&mut self, loss: Tensor, wrt: &[Tensor]) -> Result<Vec<Tensor>, AutodiffError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        if loss.graph != self.id || !self.nodes.contains_key(&loss.node) {
            return Err(AutodiffError::ForeignTensor);
        }
        if loss.numel() != 1 {
            return Err(AutodiffError::NonScalarLoss(loss.shape()));
        }
        for t in wrt {
            if t.graph != self.id {
                return Err(AutodiffError::ForeignTensor);
            }
            let is_leaf = match self.nodes.get(&t.node).map(|n| n.role) {
                Some(NodeRole::Leaf(i)) => {
                    matches!(self.leaves[i].kind, LeafKind::Param | LeafKind::Input)
                }
                _ => false,
            };
            if !is_leaf || !t.view.is_plain() {
                return Err(AutodiffError::NotALeaf);
            }
        }

        let relevant = self.relevant_nodes(loss.node, wrt);
        let order =
            toposort(&self.graph.graph, None).map_err(|_| AutodiffError::InvalidArgument {
                op: "backward",
                reason: "the graph has a cycle".into(),
            })?;

        let mut pending: HashMap<NodeIndex, Vec<Tensor>> = HashMap::new();
        let seed = self.splat(1.0, &loss.shape());
        let seed = self.pullback(seed, &loss.view, loss.node)?;
        pending.entry(loss.node).or_default().push(seed);

        let mut finished: HashMap<NodeIndex, Tensor> = HashMap::new();
        let mut skip: HashSet<NodeIndex> = HashSet::new();
        for node in order.into_iter().rev() {
            if !relevant.contains(&node) || skip.contains(&node) {
                continue;
            }
            let Some(parts) = pending.remove(&node) else {
                continue;
            };
            let grad = self.sum_parts(parts);
            let role = self
                .nodes
                .get(&node)
                .map(|n| n.role)
                .ok_or(AutodiffError::UnknownNode(node.index()))?;
            match role {
                NodeRole::Leaf(_) => {
                    finished.insert(node, grad);
                }
                NodeRole::StopGradient => {}
                NodeRole::Op => {
                    let contributions = self.op_gradients(node, grad, &relevant, &mut skip)?;
                    for (src, g) in contributions {
                        pending.entry(src).or_default().push(g);
                    }
                }
            }
        }

        let mut grads = Vec::with_capacity(wrt.len());
        for t in wrt {
            let g = match finished.get(&t.node) {
                Some(g) => *g,
                None => self.splat(0.0, &t.shape()),
            };
            grads.push(g);
        }
        match &self.error {
            Some(e) => Err(e.clone()),
            None => Ok(grads),
        }
    }

    /// Nodes that both depend on some `wrt` tensor and feed the loss.
    fn relevant_nodes(&self, loss: NodeIndex, wrt: &[Tensor]) -> HashSet<NodeIndex> {
        let walk = |start: Vec<NodeIndex>, dir: Direction, stop_at_barriers: bool| {
            let mut seen = HashSet::new();
            let mut stack = start;
            while let Some(n) = stack.pop() {
                if !seen.insert(n) {
                    continue;
                }
                let barrier = matches!(
                    self.nodes.get(&n).map(|i| i.role),
                    Some(NodeRole::StopGradient)
                );
                if stop_at_barriers && barrier {
                    continue;
                }
                for e in self.graph.graph.edges_directed(n, dir) {
                    if e.weight().is_schedule() {
                        continue;
                    }
                    stack.push(if dir == Direction::Outgoing {
                        e.target()
                    } else {
                        e.source()
                    });
                }
            }
            seen
        };
        let forward = walk(
            wrt.iter().map(|t| t.node).collect(),
            Direction::Outgoing,
            true,
        );
        let backward = walk(vec![loss], Direction::Incoming, false);
        forward.intersection(&backward).copied().collect()
    }

    fn sum_parts(&mut self, parts: Vec<Tensor>) -> Tensor {
        let mut it = parts.into_iter();
        let first = it.next().unwrap_or_else(|| self.scalar(0.0));
        it.fold(first, |acc, g| self.add(acc, g))
    }

    /// Gradient contributions to the producers of `node`'s inputs.
    fn op_gradients(
        &mut self,
        node: NodeIndex,
        grad: Tensor,
        relevant: &HashSet<NodeIndex>,
        skip: &mut HashSet<NodeIndex>,
    ) -> Result<Vec<(NodeIndex, Tensor)>, AutodiffError> {
        let inputs = self.inputs_of(node)?;
        let wants = |i: usize| inputs.get(i).is_some_and(|e| relevant.contains(&e.src));
        let op_ref: &dyn Operator = self
            .graph
            .graph
            .node_weight(node)
            .map(|b| b.as_ref())
            .ok_or(AutodiffError::UnknownNode(node.index()))?;
        let any = op_ref.as_any();
        let kind = if any.is::<op::Add>() {
            Kind::Add
        } else if any.is::<op::Mul>() {
            Kind::Mul
        } else if any.is::<op::Mod>() {
            Kind::Mod
        } else if any.is::<op::LessThan>() {
            Kind::NoGradient
        } else if any.is::<op::Contiguous>() {
            Kind::Identity
        } else if let Some(op::SumReduce(d)) = any.downcast_ref::<op::SumReduce>() {
            Kind::Sum(*d)
        } else if let Some(op::MaxReduce(d)) = any.downcast_ref::<op::MaxReduce>() {
            Kind::Max(*d)
        } else if any.is::<op::Log2>() {
            Kind::Unary(Unary::Log2)
        } else if any.is::<op::Exp2>() {
            Kind::Unary(Unary::Exp2)
        } else if any.is::<op::Sin>() {
            Kind::Unary(Unary::Sin)
        } else if any.is::<op::Sqrt>() {
            Kind::Unary(Unary::Sqrt)
        } else if any.is::<op::Recip>() {
            Kind::Unary(Unary::Recip)
        } else if any.is::<op::Constant>() || any.is::<op::Function>() {
            Kind::NoGradient
        } else {
            return Err(AutodiffError::NotDifferentiable(format!("{op_ref:?}")));
        };

        let mut out = Vec::new();
        match kind {
            Kind::NoGradient => {}
            Kind::Add | Kind::Identity => {
                for (i, e) in inputs.iter().enumerate() {
                    if wants(i) {
                        out.push((e.src, self.pullback(grad, &e.view, e.src)?));
                    }
                }
            }
            Kind::Mul => {
                for (i, e) in inputs.iter().enumerate() {
                    if wants(i) {
                        let other = inputs[1 - i].tensor(self);
                        let g = self.mul(grad, other);
                        out.push((e.src, self.pullback(g, &e.view, e.src)?));
                    }
                }
            }
            Kind::Mod => {
                // r = a - b * trunc(a / b): dr/da = 1, dr/db = -trunc(a / b) = (r - a) / b.
                if wants(0) {
                    out.push((
                        inputs[0].src,
                        self.pullback(grad, &inputs[0].view, inputs[0].src)?,
                    ));
                }
                if wants(1) {
                    let (a, b) = (inputs[0].tensor(self), inputs[1].tensor(self));
                    let r = self.node_tensor(node)?;
                    let diff = self.sub(r, a);
                    let local = self.div(diff, b);
                    let g = self.mul(grad, local);
                    out.push((
                        inputs[1].src,
                        self.pullback(g, &inputs[1].view, inputs[1].src)?,
                    ));
                }
            }
            Kind::Sum(d) => {
                if let Some(contribs) = self.matmul_gradients(d, grad, &inputs, relevant, skip)? {
                    return Ok(contribs);
                }
                let e = inputs[0];
                let g = self.expand(grad, d, e.view.axis_len(d));
                out.push((e.src, self.pullback(g, &e.view, e.src)?));
            }
            Kind::Max(d) => {
                let e = inputs[0];
                let n = e.view.axis_len(d);
                let x = e.tensor(self);
                let m = self.node_tensor(node)?;
                let m = self.expand(m, d, n);
                let below = self.less_than(x, m);
                let at_max = self.mul_scalar(below, -1.0);
                let at_max = self.add_scalar(at_max, 1.0);
                let ties = self.sum(at_max, &[d]);
                let share = self.div(grad, ties);
                let share = self.expand(share, d, n);
                let g = self.mul(share, at_max);
                out.push((e.src, self.pullback(g, &e.view, e.src)?));
            }
            Kind::Unary(u) => {
                let src = inputs[0].src;
                let x = self.node_tensor(src)?;
                let y = self.node_tensor(node)?;
                let local = match u {
                    Unary::Log2 => {
                        let r = self.unary(op::Recip, x);
                        self.mul_scalar(r, 1.0 / LN_2)
                    }
                    Unary::Exp2 => self.mul_scalar(y, LN_2),
                    Unary::Sin => {
                        let shifted = self.add_scalar(x, std::f32::consts::FRAC_PI_2);
                        self.unary(op::Sin, shifted)
                    }
                    Unary::Sqrt => {
                        let r = self.unary(op::Recip, y);
                        self.mul_scalar(r, 0.5)
                    }
                    Unary::Recip => {
                        let sq = self.mul(y, y);
                        self.neg(sq)
                    }
                };
                let g = self.mul(grad, local);
                out.push((src, g));
            }
        }
        Ok(out)
    }

    /// If a sum over axis `d` closes a matmul as luminal lowers it, the gradients
    /// of both operands as matmuls.
    fn matmul_gradients(
        &mut self,
        d: usize,
        grad: Tensor,
        inputs: &[Edge],
        relevant: &HashSet<NodeIndex>,
        skip: &mut HashSet<NodeIndex>,
    ) -> Result<Option<Vec<(NodeIndex, Tensor)>>, AutodiffError> {
        let e = inputs[0];
        let prod = e.src;
        let rank = e.view.rank();
        let is_mul = self
            .graph
            .graph
            .node_weight(prod)
            .is_some_and(|o| o.as_any().is::<op::Mul>());
        let plain_product = self
            .node_shape(prod)
            .is_some_and(|s| s == e.view.shape().as_slice())
            && e.view.is_plain();
        if !is_mul
            || !plain_product
            || rank < 3
            || d != rank - 1
            || self.consumers(prod) != 1
            || self.nodes.get(&prod).map(|n| n.role) != Some(NodeRole::Op)
        {
            return Ok(None);
        }
        let mul_inputs = self.inputs_of(prod)?;
        let (a, b) = (mul_inputs[0], mul_inputs[1]);
        if !a.view.is_fake(rank - 2) || !b.view.is_fake(rank - 3) {
            return Ok(None);
        }
        skip.insert(prod);
        let mut out = Vec::new();
        // a' = [.., M, K] and b' = [.., N, K] as the product saw them, minus broadcasts.
        let a_view = a.view.remove_axis(rank - 2);
        let b_view = b.view.remove_axis(rank - 3);
        let a_mat = self.tensor(a.src, a_view);
        let b_mat = self.tensor(b.src, b_view);
        if relevant.contains(&a.src) {
            // dA [.., M, K] = G [.., M, N] x B' [.., N, K]
            let g = self.matmul(grad, b_mat);
            out.push((a.src, self.pullback(g, &a_view, a.src)?));
        }
        if relevant.contains(&b.src) {
            let batch = rank - 3;
            let shared = batch > 0 && (0..batch).all(|ax| b_view.is_fake(ax));
            if shared {
                // A weight shared across the batch: fold the batch into the rows.
                let g_shape = grad.shape();
                let rows: usize = g_shape[..batch + 1].iter().product();
                let k = a_view.axis_len(rank - 2);
                let g2 = self.reshape(grad, &[rows, g_shape[batch + 1]]);
                let a2 = self.reshape(a_mat, &[rows, k]);
                let gt = self.permute(g2, &[1, 0]);
                let g = self.matmul(gt, a2);
                let mut w_view = b_view;
                for ax in (0..batch).rev() {
                    w_view = w_view.remove_axis(ax);
                }
                out.push((b.src, self.pullback(g, &w_view, b.src)?));
            } else {
                // dB' [.., N, K] = G^T [.., N, M] x A' [.., M, K]
                let mut axes: Vec<usize> = (0..rank - 1).collect();
                axes.swap(rank - 3, rank - 2);
                let gt = self.permute(grad, &axes);
                let g = self.matmul(gt, a_mat);
                out.push((b.src, self.pullback(g, &b_view, b.src)?));
            }
        }
        Ok(Some(out))
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Add,
    Mul,
    Mod,
    Identity,
    NoGradient,
    Sum(usize),
    Max(usize),
    Unary(Unary),
}

#[derive(Clone, Copy)]
enum Unary {
    Log2,
    Exp2,
    Sin,
    Sqrt,
    Recip,
}
