//! A built graph compiled once for a backend: named leaves to feed, outputs to read.

use std::collections::HashMap;

use luminal::compiler_utils::{move_outgoing_edge, move_references, Compiler, ToIdsMut};
use luminal::graph::Graph as LuminalGraph;
use luminal::op::Function;
use luminal::prelude::petgraph::{algo::toposort, visit::EdgeRef, Direction};
use luminal::prelude::NodeIndex;
use luminal::tensor::Tensor as LuminalTensor;

use super::error::AutodiffError;
use super::graph::{Ctx, LeafKind, NodeRole, Tensor};
use super::kernels;
use super::profile::{timed_run, Phase, Profile, Profiler};

/// Where and how a graph runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// CPU: luminal's ops plus this crate's strided kernels and batched matmul (default).
    Cpu,
    /// CPU with luminal's own `CPUCompiler` only (for comparisons).
    CpuLuminal,
    /// CPU, luminal's primitive ops uncompiled (the reference semantics; slow).
    CpuPrimitive,
    /// NVIDIA GPU through luminal_cuda (inputs copied to the device, outputs back).
    #[cfg(feature = "cuda")]
    Cuda,
}

/// Node ids we hold on to while compilers rewrite the graph.
struct Ids<'a>(&'a mut [NodeIndex]);

impl ToIdsMut for Ids<'_> {
    fn to_ids_mut(&mut self) -> Vec<&mut NodeIndex> {
        self.0.iter_mut().collect()
    }
}

/// A leaf as the compiled program knows it.
#[derive(Clone, Debug)]
pub(crate) struct Slot {
    pub name: String,
    pub kind: LeafKind,
    pub node: NodeIndex,
    pub shape: Vec<usize>,
    pub numel: usize,
    pub filled: bool,
}

/// A compiled graph with its leaves and outputs.
pub(crate) struct Program {
    graph: Box<LuminalGraph>,
    pub slots: Vec<Slot>,
    by_name: HashMap<String, usize>,
    outputs: Vec<NodeIndex>,
    output_shapes: Vec<Vec<usize>>,
    /// Per-op timing, once enabled ([`Program::enable_profiling`]).
    profiler: Option<Profiler>,
}

impl Program {
    /// Compile `ctx` for `backend`, reading `outputs` after each run.
    pub fn new(mut ctx: Ctx, outputs: &[Tensor], backend: Backend) -> Result<Self, AutodiffError> {
        if let Some(e) = &ctx.error {
            return Err(e.clone());
        }
        // Outputs are read as plain buffers of nodes that have inputs (luminal_cuda's
        // copy-back needs one), so copy anything else.
        let mut out_nodes = Vec::with_capacity(outputs.len());
        let mut output_shapes = Vec::with_capacity(outputs.len());
        for t in outputs {
            if !ctx.owns(t) {
                return Err(AutodiffError::ForeignTensor);
            }
            let is_op = matches!(ctx.nodes.get(&t.node).map(|n| n.role), Some(NodeRole::Op))
                && ctx
                    .graph
                    .graph
                    .edges_directed(t.node, Direction::Incoming)
                    .next()
                    .is_some();
            let t = if t.view.is_plain() && is_op && ctx.node_shape(t.node) == Some(&t.shape()[..])
            {
                *t
            } else {
                ctx.force_contiguous(*t, NodeRole::Op)
            };
            out_nodes.push(t.node);
            output_shapes.push(t.shape());
        }
        if let Some(e) = &ctx.error {
            return Err(e.clone());
        }
        let mut slots = Vec::with_capacity(ctx.leaves.len());
        for leaf in &ctx.leaves {
            let numel = leaf.shape.iter().product();
            if let Some(d) = &leaf.data {
                ctx.graph
                    .set_tensor(leaf.node, 0, LuminalTensor::new(d.clone()));
            }
            ctx.graph.no_delete.insert(leaf.node);
            slots.push(Slot {
                name: leaf.name.clone(),
                kind: leaf.kind,
                node: leaf.node,
                shape: leaf.shape.clone(),
                numel,
                filled: leaf.data.is_some(),
            });
        }
        for &n in &out_nodes {
            ctx.graph.keep_tensors(n);
            ctx.graph.to_retrieve.insert(n);
        }
        let mut graph = ctx.graph;
        let mut ids = out_nodes.clone();
        compile(&mut graph, backend, &mut ids)?;
        let by_name = slots
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.clone(), i))
            .collect();
        Ok(Program {
            graph,
            slots,
            by_name,
            outputs: ids,
            output_shapes,
            profiler: None,
        })
    }

    pub fn slot_index(&self, name: &str) -> Result<usize, AutodiffError> {
        self.by_name
            .get(name)
            .copied()
            .ok_or_else(|| AutodiffError::UnknownName(name.to_string()))
    }

    /// Give a leaf new data.
    pub fn fill(&mut self, slot: usize, data: Vec<f32>) -> Result<(), AutodiffError> {
        let s = &mut self.slots[slot];
        if data.len() != s.numel {
            return Err(AutodiffError::DataLength {
                name: s.name.clone(),
                shape: s.shape.clone(),
                expected: s.numel,
                got: data.len(),
            });
        }
        s.filled = true;
        self.graph.set_tensor(s.node, 0, LuminalTensor::new(data));
        Ok(())
    }

    /// Current data of a leaf.
    pub fn leaf_data(&self, slot: usize) -> Result<&[f32], AutodiffError> {
        let s = &self.slots[slot];
        self.graph
            .get_tensor_ref(s.node, 0)
            .and_then(|t| t.data.as_any().downcast_ref::<Vec<f32>>())
            .map(Vec::as_slice)
            .ok_or_else(|| AutodiffError::MissingInput(s.name.clone()))
    }

    /// Run the graph once; outputs are then available to [`Program::take_output`].
    pub fn run(&mut self) -> Result<(), AutodiffError> {
        if let Some(s) = self.slots.iter().find(|s| !s.filled) {
            return Err(AutodiffError::MissingInput(s.name.clone()));
        }
        for &n in &self.outputs {
            self.graph.tensors.remove(&(n, 0));
        }
        let graph = &mut self.graph;
        timed_run(self.profiler.as_ref(), || graph.execute());
        Ok(())
    }

    /// Take output `i` of the last run.
    pub fn take_output(&mut self, i: usize) -> Result<Vec<f32>, AutodiffError> {
        let node = self.outputs[i];
        let t = self
            .graph
            .tensors
            .remove(&(node, 0))
            .ok_or_else(|| AutodiffError::MissingOutput(format!("output {i}")))?;
        let data = t
            .data
            .as_any()
            .downcast_ref::<Vec<f32>>()
            .cloned()
            .ok_or_else(|| AutodiffError::MissingOutput(format!("output {i} (not host data)")))?;
        let expected: usize = self.output_shapes[i].iter().product();
        if data.len() != expected {
            return Err(AutodiffError::MissingOutput(format!(
                "output {i} has {} values, expected {expected}",
                data.len()
            )));
        }
        Ok(data)
    }

    /// Move output `i` of the last run into a leaf (no copy).
    pub fn move_output_to_leaf(&mut self, i: usize, slot: usize) -> Result<(), AutodiffError> {
        let data = self.take_output(i)?;
        self.fill(slot, data)
    }

    /// Discard output `i` of the last run.
    pub fn drop_output(&mut self, i: usize) {
        self.graph.tensors.remove(&(self.outputs[i], 0));
    }

    /// Debug names of the compiled graph's ops (diagnostics).
    pub fn op_names(&self) -> Vec<String> {
        self.graph
            .graph
            .node_weights()
            .map(|o| format!("{o:?}"))
            .collect()
    }

    /// Wrap every op in a timer (once; later calls clear the counts). `phase_of` gives
    /// the phase of a node index of the graph as built.
    pub fn enable_profiling(&mut self, phase_of: impl Fn(NodeIndex) -> Phase) {
        match &self.profiler {
            Some(p) => p.reset(),
            None => {
                let p = Profiler::default();
                p.wrap(&mut self.graph, phase_of);
                self.profiler = Some(p);
            }
        }
    }

    /// What the timers recorded since profiling was enabled or last reset.
    pub fn profile(&self) -> Option<Profile> {
        self.profiler.as_ref().map(Profiler::snapshot)
    }

    /// Number of nodes after compilation.
    pub fn node_count(&self) -> usize {
        self.graph.graph.node_count()
    }
}

/// Run the backend's compiler passes.
fn compile(
    graph: &mut LuminalGraph,
    backend: Backend,
    ids: &mut [NodeIndex],
) -> Result<(), AutodiffError> {
    let remap = Ids(ids);
    match backend {
        Backend::CpuPrimitive => graph.compile((DeadNodes, Cse), remap),
        Backend::CpuLuminal => graph.compile(
            (DeadNodes, Cse, luminal::prelude::CPUCompiler::default()),
            remap,
        ),
        Backend::Cpu => graph.compile(
            (
                DeadNodes,
                Cse,
                kernels::MatMulCompiler,
                kernels::StridedKernelCompiler,
                luminal::prelude::UnaryFusionCompiler,
                kernels::UnaryKernelCompiler,
            ),
            remap,
        ),
        #[cfg(feature = "cuda")]
        Backend::Cuda => graph.compile(
            (DeadNodes, Cse, luminal_cuda::CudaCompiler::<f32>::default()),
            remap,
        ),
    }
    Ok(())
}

/// Remove nodes whose results nobody reads.
#[derive(Debug, Default)]
pub(crate) struct DeadNodes;

impl Compiler for DeadNodes {
    fn compile<T: ToIdsMut>(&self, graph: &mut LuminalGraph, _: T) {
        let Ok(order) = toposort(&graph.graph, None) else {
            return;
        };
        for node in order.into_iter().rev() {
            let used = graph
                .graph
                .edges_directed(node, Direction::Outgoing)
                .next()
                .is_some();
            if !used && !graph.no_delete.contains(&node) {
                graph.graph.remove_node(node);
            }
        }
    }
}

/// Common-subexpression elimination in one topological pass: two nodes with equal ops
/// reading the same sources through the same views become one.
#[derive(Debug, Default)]
pub(crate) struct Cse;

impl Compiler for Cse {
    fn compile<T: ToIdsMut>(&self, graph: &mut LuminalGraph, mut remap: T) {
        let Ok(order) = toposort(&graph.graph, None) else {
            return;
        };
        let mut seen: HashMap<String, Vec<NodeIndex>> = HashMap::new();
        for node in order {
            let Some(op) = graph.graph.node_weight(node) else {
                continue;
            };
            if op.as_any().is::<Function>() || graph.no_delete.contains(&node) {
                continue;
            }
            let mut srcs: Vec<_> = graph
                .graph
                .edges_directed(node, Direction::Incoming)
                .filter_map(|e| {
                    e.weight()
                        .as_data()
                        .map(|d| (d.0, e.source().index(), d.1, d.2))
                })
                .collect();
            srcs.sort_by_key(|s| s.0);
            let key = format!("{op:?}|{srcs:?}");
            let twin = seen.get(&key).and_then(|cands| {
                cands.iter().copied().find(|&c| {
                    graph
                        .graph
                        .node_weight(c)
                        .is_some_and(|other| op.is_equal(other.as_ref()))
                })
            });
            match twin {
                Some(twin) => {
                    move_outgoing_edge(node, twin, &mut graph.graph);
                    move_references(
                        &mut remap,
                        &mut graph.no_delete,
                        &mut graph.to_retrieve,
                        node,
                        twin,
                    );
                    graph.graph.remove_node(node);
                }
                None => seen.entry(key).or_default().push(node),
            }
        }
    }
}
