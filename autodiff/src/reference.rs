//! An f64 reference evaluator for the primitive graph, and gradient checking with it.
//!
//! It runs the same luminal graph [`crate::TrainStep`] compiles, op by op, with the same
//! view semantics (padding reads 0; reductions skip padding; unary ops map the producer's
//! whole buffer), but in f64. Central finite differences in f64 are then accurate to
//! ~1e-9, so [`check_gradients`] can hold the reverse pass to a tight tolerance.

use std::collections::{HashMap, HashSet};

use luminal::op;
use luminal::prelude::petgraph::{algo::toposort, visit::EdgeRef, Direction};
use luminal::prelude::NodeIndex;

use super::error::AutodiffError;
use super::graph::{with_ctx, Ctx, NodeRole, Tensor};
use super::view::View;

/// Values for leaves (inputs, or overrides of parameters), as f64.
pub type Feeds<'a> = &'a [(Tensor, Vec<f64>)];

/// Evaluate `outputs` in f64. Parameters and constants use their declared values unless
/// fed; every input they depend on must be fed.
pub fn evaluate_f64(outputs: &[Tensor], feeds: Feeds) -> Result<Vec<Vec<f64>>, AutodiffError> {
    let Some(first) = outputs.first() else {
        return Ok(Vec::new());
    };
    with_ctx(first.graph, |c| c.evaluate_f64(outputs, feeds))
}

/// Result of [`check_gradients`].
#[derive(Clone, Debug, PartialEq)]
pub struct GradCheck {
    /// Number of gradient elements compared.
    pub checked: usize,
    /// Largest `|analytic - numeric| / max(1, |numeric|)`.
    pub max_error: f64,
    /// Which element had it: (index into `wrt`, element index, analytic, numeric).
    pub worst: (usize, usize, f64, f64),
}

/// Compare `grads` (from [`super::backward`]) with central differences of `loss`, all in
/// f64, perturbing every element of every `wrt` tensor by `±step`.
pub fn check_gradients(
    loss: Tensor,
    wrt: &[Tensor],
    grads: &[Tensor],
    feeds: Feeds,
    step: f64,
) -> Result<GradCheck, AutodiffError> {
    with_ctx(loss.graph, |c| {
        let analytic = c.evaluate_f64(grads, feeds)?;
        let mut base: Vec<(Tensor, Vec<f64>)> = feeds.to_vec();
        let mut report = GradCheck {
            checked: 0,
            max_error: 0.0,
            worst: (0, 0, 0.0, 0.0),
        };
        for (w, t) in wrt.iter().enumerate() {
            let slot = match base.iter().position(|(f, _)| f.node == t.node) {
                Some(i) => i,
                None => {
                    let value = c.leaf_value(t.node)?;
                    base.push((*t, value));
                    base.len() - 1
                }
            };
            for (i, &a) in analytic[w].iter().enumerate() {
                let orig = base[slot].1[i];
                base[slot].1[i] = orig + step;
                let up = c.evaluate_f64(&[loss], &base)?[0][0];
                base[slot].1[i] = orig - step;
                let down = c.evaluate_f64(&[loss], &base)?[0][0];
                base[slot].1[i] = orig;
                let numeric = (up - down) / (2.0 * step);
                let err = (a - numeric).abs() / numeric.abs().max(1.0);
                if err > report.max_error || err.is_nan() {
                    report.max_error = err;
                    report.worst = (w, i, a, numeric);
                }
                report.checked += 1;
            }
        }
        Ok(report)
    })
}

impl Ctx {
    fn leaf_value(&self, node: NodeIndex) -> Result<Vec<f64>, AutodiffError> {
        match self.nodes.get(&node).map(|n| n.role) {
            Some(NodeRole::Leaf(i)) => {
                let leaf = &self.leaves[i];
                leaf.data
                    .as_ref()
                    .map(|d| d.iter().map(|&x| x as f64).collect())
                    .ok_or_else(|| AutodiffError::MissingInput(leaf.name.clone()))
            }
            _ => Err(AutodiffError::NotALeaf),
        }
    }

    fn evaluate_f64(
        &self,
        outputs: &[Tensor],
        feeds: Feeds,
    ) -> Result<Vec<Vec<f64>>, AutodiffError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        // Only the ancestors of the outputs.
        let mut needed = HashSet::new();
        let mut stack: Vec<NodeIndex> = outputs.iter().map(|t| t.node).collect();
        while let Some(n) = stack.pop() {
            if needed.insert(n) {
                stack.extend(
                    self.graph
                        .graph
                        .edges_directed(n, Direction::Incoming)
                        .filter(|e| !e.weight().is_schedule())
                        .map(|e| e.source()),
                );
            }
        }
        let order =
            toposort(&self.graph.graph, None).map_err(|_| AutodiffError::InvalidArgument {
                op: "evaluate_f64",
                reason: "the graph has a cycle".into(),
            })?;
        let fed: HashMap<NodeIndex, &Vec<f64>> = feeds.iter().map(|(t, v)| (t.node, v)).collect();
        let mut values: HashMap<NodeIndex, Vec<f64>> = HashMap::new();
        for node in order.into_iter().filter(|n| needed.contains(n)) {
            let value = self.eval_node(node, &values, &fed)?;
            values.insert(node, value);
        }
        outputs
            .iter()
            .map(|t| {
                let buf = values
                    .get(&t.node)
                    .ok_or(AutodiffError::UnknownNode(t.node.index()))?;
                Ok(gather(buf, &t.view).into_iter().map(|(v, _)| v).collect())
            })
            .collect()
    }

    fn eval_node(
        &self,
        node: NodeIndex,
        values: &HashMap<NodeIndex, Vec<f64>>,
        fed: &HashMap<NodeIndex, &Vec<f64>>,
    ) -> Result<Vec<f64>, AutodiffError> {
        let info = self
            .nodes
            .get(&node)
            .ok_or(AutodiffError::UnknownNode(node.index()))?;
        if let NodeRole::Leaf(i) = info.role {
            let leaf = &self.leaves[i];
            let numel: usize = leaf.shape.iter().product();
            let v = match fed.get(&node) {
                Some(v) => (*v).clone(),
                None => self.leaf_value(node)?,
            };
            if v.len() != numel {
                return Err(AutodiffError::DataLength {
                    name: leaf.name.clone(),
                    shape: leaf.shape.clone(),
                    expected: numel,
                    got: v.len(),
                });
            }
            return Ok(v);
        }
        let mut inputs: Vec<(u8, NodeIndex, View)> = Vec::new();
        for e in self.graph.graph.edges_directed(node, Direction::Incoming) {
            if let Some((i, _, st)) = e.weight().as_data() {
                inputs.push((i, e.source(), View::from_tracker(&st)?));
            }
        }
        inputs.sort_by_key(|(i, _, _)| *i);
        let input = |k: usize| -> Result<(&Vec<f64>, View), AutodiffError> {
            let (_, src, view) = inputs
                .get(k)
                .ok_or(AutodiffError::UnknownNode(node.index()))?;
            let buf = values
                .get(src)
                .ok_or(AutodiffError::UnknownNode(src.index()))?;
            Ok((buf, *view))
        };
        let op_box = self
            .graph
            .graph
            .node_weight(node)
            .ok_or(AutodiffError::UnknownNode(node.index()))?;
        let any = op_box.as_any();
        let binary = |f: fn(f64, f64) -> f64| -> Result<Vec<f64>, AutodiffError> {
            let (a, va) = input(0)?;
            let (b, vb) = input(1)?;
            Ok(gather(a, &va)
                .into_iter()
                .zip(gather(b, &vb))
                .map(|((x, _), (y, _))| f(x, y))
                .collect())
        };
        let unary = |f: fn(f64) -> f64| -> Result<Vec<f64>, AutodiffError> {
            Ok(input(0)?.0.iter().map(|&x| f(x)).collect())
        };
        if let Some(c) = any.downcast_ref::<op::Constant>() {
            match c.0 {
                op::ConstantValue::Float(v) => Ok(vec![v as f64]),
                op::ConstantValue::Expression(_) => Err(AutodiffError::SymbolicShape),
            }
        } else if any.is::<op::Add>() {
            binary(|a, b| a + b)
        } else if any.is::<op::Mul>() {
            binary(|a, b| a * b)
        } else if any.is::<op::Mod>() {
            binary(|a, b| a % b)
        } else if any.is::<op::LessThan>() {
            binary(|a, b| if a < b { 1.0 } else { 0.0 })
        } else if any.is::<op::Contiguous>() {
            let (a, va) = input(0)?;
            Ok(gather(a, &va).into_iter().map(|(v, _)| v).collect())
        } else if let Some(op::SumReduce(d)) = any.downcast_ref::<op::SumReduce>() {
            let (a, va) = input(0)?;
            Ok(reduce(a, &va, *d, 0.0, |acc, x| acc + x))
        } else if let Some(op::MaxReduce(d)) = any.downcast_ref::<op::MaxReduce>() {
            let (a, va) = input(0)?;
            Ok(reduce(a, &va, *d, f64::NEG_INFINITY, f64::max))
        } else if any.is::<op::Log2>() {
            unary(f64::log2)
        } else if any.is::<op::Exp2>() {
            unary(f64::exp2)
        } else if any.is::<op::Sin>() {
            unary(f64::sin)
        } else if any.is::<op::Sqrt>() {
            unary(f64::sqrt)
        } else if any.is::<op::Recip>() {
            unary(f64::recip)
        } else {
            Err(AutodiffError::NotDifferentiable(format!("{op_box:?}")))
        }
    }
}

/// Read a buffer through a view: (value, valid) per logical element, 0 where padded.
fn gather(buf: &[f64], view: &View) -> Vec<(f64, bool)> {
    let access = view.access();
    let mut out = vec![(0.0, false); access.numel()];
    access.for_each(|i, off| {
        if let Some(o) = off {
            out[i] = (buf.get(o).copied().unwrap_or(f64::NAN), true);
        }
    });
    out
}

/// Reduce axis `d` of the viewed buffer, skipping padded elements (as luminal does).
fn reduce(buf: &[f64], view: &View, d: usize, init: f64, f: fn(f64, f64) -> f64) -> Vec<f64> {
    let shape = view.shape();
    let front: usize = shape[..d].iter().product();
    let len = shape[d];
    let back: usize = shape[d + 1..].iter().product();
    let vals = gather(buf, view);
    let mut out = vec![init; front * back];
    for i in 0..front {
        for j in 0..back {
            for k in 0..len {
                let (v, valid) = vals[(i * len + k) * back + j];
                if valid {
                    out[i * back + j] = f(out[i * back + j], v);
                }
            }
        }
    }
    out
}
