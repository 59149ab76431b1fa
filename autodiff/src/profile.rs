//! Per-op timing of compiled programs, off unless asked for.
//!
//! [`TrainStep::enable_profiling`](crate::TrainStep::enable_profiling) (or
//! [`Evaluator::enable_profiling`](crate::Evaluator::enable_profiling)) wraps every operator
//! of the compiled luminal graph in a [`Timed`] wrapper that forwards to the operator
//! unchanged (same inputs, same outputs: results stay bit-identical) and adds its wall time,
//! call count and the bytes it read and wrote to a table shared with the program. A program
//! that never enables it has no wrapper at all, so costs nothing. The run itself
//! (`luminal::Graph::execute`) is timed too: its time minus the sum of the op times is
//! luminal's own scheduling overhead (finding each op's inputs, moving buffers between its
//! tensor map and the ops, freeing what is no longer consumed).
//!
//! Each op is classed by what it is after compilation ([`OpClass`]) and, for a training
//! step, by the part of the step that built it ([`Phase`]): nodes created while the caller
//! built the forward graph, by [`backward`](crate::backward), or by the optimizer (clipping,
//! AdamW, the finiteness flag). Batched matmuls, which the compiler creates in place of a
//! multiply and a sum, take the latest phase among their inputs.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use luminal::graph::Graph as LuminalGraph;
use luminal::op::{Function, InputTensor, Operator};
use luminal::prelude::petgraph::algo::toposort;
use luminal::prelude::{NodeIndex, ShapeTracker};
use luminal::tensor::Tensor as LuminalTensor;

use super::kernels::{sources, BatchedMatMul, StridedBinary, StridedCopy, StridedReduce};
use super::view::View;

/// What kind of work an op does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OpClass {
    /// A batched `sgemm` (`kernels::BatchedMatMul`).
    MatMul,
    /// An element-wise binary op (`Add`, `Mul`, `Mod`, `LessThan`).
    Elementwise,
    /// luminal's unary ops and fused unary chains (`exp2`, `log2`, `sqrt`, `recip`, `sin`).
    Unary,
    /// A sum or max over one axis.
    Reduce,
    /// A strided copy into a row-major buffer (`Contiguous`).
    Copy,
    /// Loads and constants (luminal `Function`, `Constant`) and anything else.
    Other,
}

impl OpClass {
    /// Short lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            OpClass::MatMul => "sgemm",
            OpClass::Elementwise => "element-wise",
            OpClass::Unary => "unary",
            OpClass::Reduce => "reduce",
            OpClass::Copy => "copy",
            OpClass::Other => "other",
        }
    }
}

/// The part of a training step that created an op.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Phase {
    /// The model, as built by the caller (also every op of an evaluator).
    Forward,
    /// The reverse pass.
    Backward,
    /// Gradient clipping, AdamW and the finiteness flag.
    Optimizer,
}

impl Phase {
    /// Short lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Forward => "forward",
            Phase::Backward => "backward",
            Phase::Optimizer => "optimizer",
        }
    }
}

/// One op of the compiled graph and what it cost so far.
#[derive(Clone, Debug, PartialEq)]
pub struct OpRecord {
    /// luminal node index.
    pub node: usize,
    /// Part of the step.
    pub phase: Phase,
    /// Kind of work.
    pub class: OpClass,
    /// The op and its operands, e.g. `sgemm 4x[320x640]·[640x128] NN` (layouts of A and B)
    /// or `Mul [4, 80, 128]/[10240, 128, 1] [4, 80, 128]/[0, 0, 1]` (shape/strides of each
    /// operand's view).
    pub label: String,
    /// Floating-point operations per call (`2·m·n·k` per product for sgemm; one per output
    /// element for element-wise and unary ops; one per element read for reductions; 0 for
    /// copies and loads).
    pub flops: u64,
    /// Times run.
    pub calls: u64,
    /// Total wall time inside the op, in nanoseconds.
    pub nanos: u64,
    /// Total bytes read and written: per call, each input's buffer or the elements its view
    /// reaches, whichever is smaller, plus the output buffers (4 bytes an element).
    pub bytes: u64,
}

/// Everything recorded since profiling was enabled.
#[derive(Clone, Debug, PartialEq)]
pub struct Profile {
    /// One record per op of the compiled graph, in execution order.
    pub ops: Vec<OpRecord>,
    /// Runs of the graph.
    pub runs: u64,
    /// Total wall time of those runs (luminal's `execute`), in nanoseconds.
    pub run_nanos: u64,
}

impl Profile {
    /// Total time inside ops, in nanoseconds.
    pub fn op_nanos(&self) -> u64 {
        self.ops.iter().map(|o| o.nanos).sum()
    }

    /// Run time not spent inside any op (luminal's scheduling and buffer bookkeeping).
    pub fn overhead_nanos(&self) -> u64 {
        self.run_nanos.saturating_sub(self.op_nanos())
    }

    /// Totals per group chosen by `key`, largest time first.
    pub fn totals_by<K: Ord + Clone>(&self, key: impl Fn(&OpRecord) -> K) -> Vec<(K, Totals)> {
        let mut map = std::collections::BTreeMap::<K, Totals>::new();
        for o in &self.ops {
            map.entry(key(o)).or_default().add(o);
        }
        let mut v: Vec<_> = map.into_iter().collect();
        v.sort_by_key(|e| std::cmp::Reverse(e.1.nanos));
        v
    }
}

/// Sums over a group of ops.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Totals {
    /// Ops in the group.
    pub ops: u64,
    /// Calls.
    pub calls: u64,
    /// Wall time, nanoseconds.
    pub nanos: u64,
    /// Floating-point operations.
    pub flops: u64,
    /// Bytes read and written.
    pub bytes: u64,
}

impl Totals {
    fn add(&mut self, o: &OpRecord) {
        self.ops += 1;
        self.calls += o.calls;
        self.nanos += o.nanos;
        self.flops += o.flops * o.calls;
        self.bytes += o.bytes;
    }
}

/// The table the wrappers write into.
#[derive(Debug, Default)]
struct Table {
    ops: Vec<OpRecord>,
    runs: u64,
    run_nanos: u64,
}

/// Handle on a program's profiling table.
#[derive(Clone, Debug, Default)]
pub(crate) struct Profiler(Arc<Mutex<Table>>);

impl Profiler {
    fn with<R>(&self, f: impl FnOnce(&mut Table) -> R) -> R {
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Clear every count (the ops stay wrapped).
    pub fn reset(&self) {
        self.with(|t| {
            t.runs = 0;
            t.run_nanos = 0;
            for o in &mut t.ops {
                (o.calls, o.nanos, o.bytes) = (0, 0, 0);
            }
        });
    }

    /// Count one run of the graph.
    pub fn record_run(&self, nanos: u64) {
        self.with(|t| {
            t.runs += 1;
            t.run_nanos += nanos;
        });
    }

    /// A copy of the table.
    pub fn snapshot(&self) -> Profile {
        self.with(|t| Profile {
            ops: t.ops.clone(),
            runs: t.runs,
            run_nanos: t.run_nanos,
        })
    }

    /// Wrap every op of `graph` (compiled) in a [`Timed`]. `phase_of` gives the phase of a
    /// node that existed before compilation (by index); batched matmuls take the latest
    /// phase of their inputs.
    pub fn wrap(&self, graph: &mut LuminalGraph, phase_of: impl Fn(NodeIndex) -> Phase) {
        let Ok(order) = toposort(&graph.graph, None) else {
            return;
        };
        let mut phases = std::collections::HashMap::<NodeIndex, Phase>::new();
        for node in order {
            let srcs = sources(graph, node);
            let Some(op) = graph.graph.node_weight(node) else {
                continue;
            };
            if op.as_any().is::<Timed>() {
                continue;
            }
            let any = op.as_any();
            let views: Vec<Option<View>> =
                srcs.iter().map(|(_, st)| View::from_tracker(st).ok()).collect();
            // Shape, and the element strides of the view (`1` along the contiguous axis, `0`
            // along broadcast ones), e.g. `[4, 80, 128]/[10240, 128, 1]`.
            let shape = |i: usize| -> String {
                match views.get(i).and_then(|v| v.as_ref()) {
                    Some(v) => {
                        let strides: Vec<isize> = v.access().axes.iter().map(|a| a.stride).collect();
                        format!("{:?}/{strides:?}", v.shape())
                    }
                    None => "?".to_string(),
                }
            };
            let numel = |i: usize| -> u64 {
                views
                    .get(i)
                    .and_then(|v| v.as_ref())
                    .map_or(0, |v| v.shape().iter().product::<usize>() as u64)
            };
            let phase = if any.is::<BatchedMatMul>() {
                srcs.iter()
                    .map(|(s, _)| phases.get(s).copied().unwrap_or_else(|| phase_of(*s)))
                    .max()
                    .unwrap_or(Phase::Forward)
            } else {
                phase_of(node)
            };
            phases.insert(node, phase);
            let shapes = (0..srcs.len()).map(shape).collect::<Vec<_>>().join(" ");
            let (class, label, flops) = if let Some(mm) = any.downcast_ref::<BatchedMatMul>() {
                let (b, m, n, k) = mm.dims();
                (
                    OpClass::MatMul,
                    format!("sgemm {b}x[{m}x{k}]·[{k}x{n}] {}", mm.layout()),
                    2 * (b * m * n * k) as u64,
                )
            } else if let Some(e) = any.downcast_ref::<StridedBinary>() {
                (
                    OpClass::Elementwise,
                    format!("{:?} {shapes}", e.kind()),
                    numel(0),
                )
            } else if let Some(r) = any.downcast_ref::<StridedReduce>() {
                let what = if r.is_max() { "MaxReduce" } else { "SumReduce" };
                (
                    OpClass::Reduce,
                    format!("{what}({}) {shapes}", r.axis()),
                    numel(0),
                )
            } else if any.is::<StridedCopy>() {
                (OpClass::Copy, format!("Contiguous {shapes}"), 0)
            } else if any.is::<Function>() {
                (OpClass::Other, format!("{op:?}"), 0)
            } else {
                let name = format!("{op:?}");
                let name = name.split(['(', ' ', '{']).next().unwrap_or("?").to_string();
                let class = match name.as_str() {
                    "FusedUnary" | "Exp2" | "Log2" | "Sqrt" | "Recip" | "Sin" => OpClass::Unary,
                    "Constant" => OpClass::Other,
                    _ => OpClass::Other,
                };
                let flops = if class == OpClass::Unary { numel(0) } else { 0 };
                (class, format!("{name} {shapes}"), flops)
            };
            let slot = self.with(|t| {
                t.ops.push(OpRecord {
                    node: node.index(),
                    phase,
                    class,
                    label,
                    flops,
                    calls: 0,
                    nanos: 0,
                    bytes: 0,
                });
                t.ops.len() - 1
            });
            let reach: Vec<u64> = views
                .iter()
                .map(|v| v.as_ref().map_or(u64::MAX, |v| v.physical_numel() as u64))
                .collect();
            if let Some(w) = graph.graph.node_weight_mut(node) {
                let inner = std::mem::replace(w, Box::new(Placeholder));
                *w = Box::new(Timed {
                    inner,
                    slot,
                    reach,
                    table: self.clone(),
                });
            }
        }
    }
}

/// Stands in for an op while it is being moved into its wrapper (never run).
#[derive(Debug, PartialEq)]
struct Placeholder;

impl Operator for Placeholder {
    fn process(&mut self, _: Vec<(InputTensor, ShapeTracker)>) -> Vec<LuminalTensor> {
        Vec::new()
    }
}

/// An op whose every call is timed into a [`Profiler`]'s table.
pub(crate) struct Timed {
    inner: Box<dyn Operator>,
    slot: usize,
    /// Elements each input's view reaches.
    reach: Vec<u64>,
    table: Profiler,
}

impl fmt::Debug for Timed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

impl PartialEq for Timed {
    fn eq(&self, other: &Self) -> bool {
        self.slot == other.slot && Arc::ptr_eq(&self.table.0, &other.table.0)
    }
}

fn len_of(t: &LuminalTensor) -> u64 {
    t.data
        .as_any()
        .downcast_ref::<Vec<f32>>()
        .map_or(0, |v| v.len() as u64)
}

impl Operator for Timed {
    fn process(&mut self, inp: Vec<(InputTensor, ShapeTracker)>) -> Vec<LuminalTensor> {
        let read: u64 = inp
            .iter()
            .enumerate()
            .map(|(i, (t, _))| {
                let len = len_of(t.borrowed());
                self.reach.get(i).map_or(len, |&r| r.min(len))
            })
            .sum();
        let start = Instant::now();
        let out = self.inner.process(inp);
        let nanos = start.elapsed().as_nanos() as u64;
        let written: u64 = out.iter().map(len_of).sum();
        self.table.with(|t| {
            if let Some(o) = t.ops.get_mut(self.slot) {
                o.calls += 1;
                o.nanos += nanos;
                o.bytes += 4 * (read + written);
            }
        });
        out
    }

    fn custom(
        &mut self,
        key: &str,
        input: Box<dyn std::any::Any>,
    ) -> Option<Box<dyn std::any::Any>> {
        self.inner.custom(key, input)
    }
}

/// Time `f` (one run of the graph) into `profiler` when there is one.
pub(crate) fn timed_run(profiler: Option<&Profiler>, f: impl FnOnce()) {
    match profiler {
        Some(p) => {
            let start = Instant::now();
            f();
            p.record_run(start.elapsed().as_nanos() as u64);
        }
        None => f(),
    }
}

#[cfg(test)]
mod tests {
    use super::{OpClass, Phase};
    use crate::{AdamWConfig, Backend, GraphBuilder, TrainStep};

    fn mlp() -> TrainStep {
        let (batch, d_in, hidden, classes) = (4, 3, 5, 2);
        let mut g = GraphBuilder::new();
        let x = g.input("x", &[batch, d_in]);
        let y = g.input("y", &[batch, classes]);
        let init = |n: usize, s: f32| (0..n).map(|i| s * ((i * 7 % 11) as f32 - 5.0)).collect();
        let w1 = g.param("w1", &[d_in, hidden], init(d_in * hidden, 0.1));
        let w2 = g.param("w2", &[hidden, classes], init(hidden * classes, 0.2));
        let logits = x.matmul(w1).relu().matmul(w2);
        let loss = logits.cross_entropy_with_logits(y).mean_all();
        let mut t = TrainStep::new(g, loss, &[], AdamWConfig::default(), Backend::Cpu).unwrap();
        t.set_input("x", &[1.0, 0.0, 2.0, 0.5, 1.0, 0.0, 0.0, 1.0, 1.0, 2.0, 2.0, 2.0])
            .unwrap();
        t.set_input("y", &[1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0]).unwrap();
        t
    }

    /// Profiling changes no result, counts every op of every step, and classes the products
    /// by phase.
    #[test]
    fn profiled_steps_are_bit_identical_and_counted() {
        let (mut plain, mut timed) = (mlp(), mlp());
        assert!(timed.profile().is_none());
        timed.enable_profiling();
        for step in 0..3 {
            let (a, b) = (plain.step(step).unwrap(), timed.step(step).unwrap());
            assert_eq!(a.loss.to_bits(), b.loss.to_bits());
        }
        let bits = |t: &TrainStep| -> Vec<u32> {
            t.params()
                .unwrap()
                .iter()
                .flat_map(|(_, v)| v.iter().map(|x| x.to_bits()))
                .collect()
        };
        assert_eq!(bits(&plain), bits(&timed));
        assert!(plain.profile().is_none());

        let p = timed.profile().unwrap();
        assert_eq!(p.runs, 3);
        assert!(p.op_nanos() <= p.run_nanos && p.run_nanos > 0);
        assert!(p.ops.len() + 10 >= timed.node_count());
        for o in &p.ops {
            // Leaves (loads) already hold their data and are not run.
            let expected = if o.class == OpClass::Other { [0, 3] } else { [3, 3] };
            assert!(expected.contains(&o.calls), "{o:?}");
        }
        let flops = |phase| -> u64 {
            p.ops
                .iter()
                .filter(|o| o.class == OpClass::MatMul && o.phase == phase)
                .map(|o| o.flops)
                .sum()
        };
        // Forward: x·w1 (4x3x5) and h·w2 (4x5x2); backward: dW1 = xᵀ·G (3x4x5), dH = G·w2ᵀ
        // (4x2x5) and dW2 = hᵀ·G (5x4x2).
        assert_eq!(flops(Phase::Forward), 2 * (60 + 40));
        assert_eq!(flops(Phase::Backward), 2 * (60 + 40 + 40));
        assert_eq!(flops(Phase::Optimizer), 0);
        assert!(p
            .ops
            .iter()
            .any(|o| o.phase == Phase::Optimizer && o.class == OpClass::Elementwise));

        // Enabling again clears the counts.
        timed.enable_profiling();
        let p = timed.profile().unwrap();
        assert_eq!((p.runs, p.run_nanos, p.op_nanos()), (0, 0, 0));
    }
}
