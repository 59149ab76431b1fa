//! Training and evaluation programs: AdamW (TF1 `AdamWOptimizer`) with gradient clipping
//! and a NaN guard, compiled once; an evaluation program sharing parameter values.

use super::error::AutodiffError;
use super::graph::{GraphBuilder, LeafKind, Tensor};
use super::profile::{Phase, Profile};
use super::program::{Backend, Program};

/// AdamW hyper-parameters and the learning-rate schedule.
#[derive(Clone, Debug, PartialEq)]
pub struct AdamWConfig {
    /// Base learning rate.
    pub lr: f32,
    /// First-moment decay.
    pub beta1: f32,
    /// Second-moment decay.
    pub beta2: f32,
    /// Added to `sqrt(v)` (TF1: 1e-8).
    pub epsilon: f32,
    /// Decoupled weight decay, NOT scaled by the learning rate: `p -= weight_decay * p`.
    pub weight_decay: f32,
    /// Staircase decay: the rate is multiplied by `decay_rate` every `decay_steps` steps.
    pub decay_rate: f32,
    /// Steps per decay stage (0 disables decay).
    pub decay_steps: u64,
    /// Element-wise gradient clipping to `[-c, c]`, applied first.
    pub clip_value: Option<f32>,
    /// Per-tensor L2-norm clipping (TF `clip_by_norm`), applied second.
    pub clip_norm: Option<f32>,
}

impl Default for AdamWConfig {
    /// AWGIM's 1-shot settings: lr 2e-4, betas 0.9/0.999, eps 1e-8, decay 1e-6, x0.2 every
    /// 15000 steps, clipping 0.1 / 0.1.
    fn default() -> Self {
        AdamWConfig {
            lr: 2e-4,
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-8,
            weight_decay: 1e-6,
            decay_rate: 0.2,
            decay_steps: 15_000,
            clip_value: Some(0.1),
            clip_norm: Some(0.1),
        }
    }
}

impl AdamWConfig {
    /// Learning rate at global step `step` (staircase decay).
    pub fn learning_rate(&self, step: u64) -> f32 {
        if self.decay_steps == 0 {
            return self.lr;
        }
        let stage = (step / self.decay_steps) as i32;
        (self.lr as f64 * (self.decay_rate as f64).powi(stage)) as f32
    }

    /// Step size of the `t`-th applied update (1-based), bias correction folded in:
    /// `lr * sqrt(1 - beta2^t) / (1 - beta1^t)`.
    pub fn step_size(&self, step: u64, t: u64) -> f32 {
        let t = t.min(i32::MAX as u64) as i32;
        let lr = self.learning_rate(step) as f64;
        let b1 = (self.beta1 as f64).powi(t);
        let b2 = (self.beta2 as f64).powi(t);
        (lr * (1.0 - b2).sqrt() / (1.0 - b1)) as f32
    }
}

/// What one training step did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepOutcome {
    /// The loss, computed before the update.
    pub loss: f32,
    /// True when the loss or a gradient was NaN/inf and nothing was updated.
    pub skipped: bool,
}

/// Optimizer state for checkpoints.
#[derive(Clone, Debug, PartialEq)]
pub struct OptimizerState {
    /// Number of updates applied so far (Adam's `t`).
    pub t: u64,
    /// Per parameter: (name, first moment, second moment).
    pub moments: Vec<(String, Vec<f32>, Vec<f32>)>,
}

/// Output and state slot indices of one parameter.
#[derive(Clone, Debug)]
struct ParamSlots {
    name: String,
    value: usize,
    m: usize,
    v: usize,
    new_value: usize,
    new_m: usize,
    new_v: usize,
}

/// One compiled training step: forward, backward, clipping, AdamW, all in one luminal
/// graph built once. Parameters and moments persist inside the graph between steps.
pub struct TrainStep {
    program: Program,
    params: Vec<ParamSlots>,
    lr_slot: usize,
    loss_out: usize,
    finite_out: usize,
    extra_outs: Vec<usize>,
    config: AdamWConfig,
    t: u64,
    skipped: u64,
    /// Node indices below `.0` were built by the caller (forward), below `.1` by the
    /// reverse pass; the rest by the optimizer (for [`TrainStep::enable_profiling`]).
    phase_bounds: (usize, usize),
}

impl TrainStep {
    /// Differentiate `loss` with respect to every parameter of `graph`, add the clipped
    /// AdamW update, and compile for `backend`. `extra_outputs` (e.g. accuracy) are
    /// computed each step and read with [`TrainStep::output`].
    pub fn new(
        mut graph: GraphBuilder,
        loss: Tensor,
        extra_outputs: &[Tensor],
        config: AdamWConfig,
        backend: Backend,
    ) -> Result<Self, AutodiffError> {
        graph.check()?;
        let params: Vec<(String, Vec<usize>)> = graph.params();
        let handles = params
            .iter()
            .map(|(n, _)| graph.tensor(n))
            .collect::<Result<Vec<_>, _>>()?;
        let forward_end = graph.node_bound();
        let grads = super::backward(loss, &handles)?;
        let backward_end = graph.node_bound();

        // Finiteness: x * 0 is 0 for finite x and NaN otherwise; sums of zeros cannot
        // overflow, so the flag is exactly 0 iff the loss and all gradients are finite.
        let mut flag = loss.mul_scalar(0.0);
        if flag.rank() > 0 {
            flag = sum_all(flag);
        }
        for g in &grads {
            flag = flag + sum_all(g.mul_scalar(0.0));
        }

        let lr = graph.input("__adamw_step_size", &[]);
        let mut updates = Vec::new();
        for ((name, shape), (p, g)) in params.iter().zip(handles.iter().zip(&grads)) {
            let numel: usize = shape.iter().product();
            let m = state(&mut graph, &format!("__adamw_m/{name}"), shape, numel);
            let v = state(&mut graph, &format!("__adamw_v/{name}"), shape, numel);
            let g = clip(*g, &config);
            // TF1 ApplyAdam: m += (g - m)(1 - b1); v += (g^2 - v)(1 - b2);
            // p -= lr_t m / (sqrt(v) + eps); AdamW decays p first: p -= wd p.
            let new_m = m + (g - m).mul_scalar(1.0 - config.beta1);
            let new_v = v + (g * g - v).mul_scalar(1.0 - config.beta2);
            let decayed = *p - p.mul_scalar(config.weight_decay);
            let step_size = lr.broadcast_to(shape);
            let denom = new_v.sqrt().add_scalar(config.epsilon);
            let new_p = decayed - (new_m * step_size) / denom;
            updates.push((name.clone(), new_p, new_m, new_v));
        }
        graph.check()?;

        let mut outputs = vec![loss, flag];
        outputs.extend_from_slice(extra_outputs);
        let extra_outs: Vec<usize> = (2..outputs.len()).collect();
        let first_update = outputs.len();
        for (_, p, m, v) in &updates {
            outputs.extend_from_slice(&[*p, *m, *v]);
        }
        let program = Program::new(graph.into_ctx(), &outputs, backend)?;
        let mut slots = Vec::with_capacity(updates.len());
        for (i, (name, ..)) in updates.iter().enumerate() {
            let base = first_update + 3 * i;
            slots.push(ParamSlots {
                name: name.clone(),
                value: program.slot_index(name)?,
                m: program.slot_index(&format!("__adamw_m/{name}"))?,
                v: program.slot_index(&format!("__adamw_v/{name}"))?,
                new_value: base,
                new_m: base + 1,
                new_v: base + 2,
            });
        }
        let lr_slot = program.slot_index("__adamw_step_size")?;
        Ok(TrainStep {
            program,
            params: slots,
            lr_slot,
            loss_out: 0,
            finite_out: 1,
            extra_outs,
            config,
            t: 0,
            skipped: 0,
            phase_bounds: (forward_end, backward_end),
        })
    }

    /// Feed an input by name (kept until replaced).
    pub fn set_input(&mut self, name: &str, data: &[f32]) -> Result<(), AutodiffError> {
        self.set_input_vec(name, data.to_vec())
    }

    /// [`TrainStep::set_input`] from an owned buffer, which becomes the input's tensor
    /// without a copy (the trainer's noise and dropout masks: 250 MB a 1-shot step at the
    /// paper's sizes, copied on the step's thread before).
    pub fn set_input_vec(&mut self, name: &str, data: Vec<f32>) -> Result<(), AutodiffError> {
        let slot = self.input_slot(name)?;
        self.program.fill(slot, data)
    }

    fn input_slot(&self, name: &str) -> Result<usize, AutodiffError> {
        let slot = self.program.slot_index(name)?;
        if self.program.slots[slot].kind != LeafKind::Input || name.starts_with("__adamw") {
            return Err(AutodiffError::UnknownName(name.to_string()));
        }
        Ok(slot)
    }

    /// One step at global step `step` (which sets the decayed learning rate). Applies the
    /// update unless the loss or a gradient is not finite; then nothing changes and the
    /// step is counted in [`TrainStep::skipped_steps`].
    pub fn step(&mut self, step: u64) -> Result<StepOutcome, AutodiffError> {
        let step_size = self.config.step_size(step, self.t + 1);
        self.program.fill(self.lr_slot, vec![step_size])?;
        self.program.run()?;
        let loss = first(self.program.take_output(self.loss_out)?);
        let flag = first(self.program.take_output(self.finite_out)?);
        let finite = flag == 0.0 && loss.is_finite();
        for p in &self.params {
            if finite {
                self.program.move_output_to_leaf(p.new_value, p.value)?;
                self.program.move_output_to_leaf(p.new_m, p.m)?;
                self.program.move_output_to_leaf(p.new_v, p.v)?;
            } else {
                for o in [p.new_value, p.new_m, p.new_v] {
                    self.program.drop_output(o);
                }
            }
        }
        if finite {
            self.t += 1;
        } else {
            self.skipped += 1;
        }
        Ok(StepOutcome {
            loss,
            skipped: !finite,
        })
    }

    /// Extra output `i` (in the order given to [`TrainStep::new`]) of the last step.
    pub fn output(&mut self, i: usize) -> Result<Vec<f32>, AutodiffError> {
        let o = *self
            .extra_outs
            .get(i)
            .ok_or_else(|| AutodiffError::UnknownName(format!("extra output {i}")))?;
        self.program.take_output(o)
    }

    /// Current parameter values, in declaration order.
    pub fn params(&self) -> Result<Vec<(String, Vec<f32>)>, AutodiffError> {
        self.params
            .iter()
            .map(|p| Ok((p.name.clone(), self.program.leaf_data(p.value)?.to_vec())))
            .collect()
    }

    /// Replace parameter values (any subset, by name).
    pub fn load_params(&mut self, values: &[(String, Vec<f32>)]) -> Result<(), AutodiffError> {
        for (name, data) in values {
            let p = self.param(name)?;
            self.program.fill(p.value, data.clone())?;
        }
        Ok(())
    }

    fn param(&self, name: &str) -> Result<ParamSlots, AutodiffError> {
        self.params
            .iter()
            .find(|p| p.name == *name)
            .cloned()
            .ok_or_else(|| AutodiffError::UnknownName(name.to_string()))
    }

    /// Adam moments and update count, for checkpoints.
    pub fn optimizer_state(&self) -> Result<OptimizerState, AutodiffError> {
        let moments = self
            .params
            .iter()
            .map(|p| {
                Ok((
                    p.name.clone(),
                    self.program.leaf_data(p.m)?.to_vec(),
                    self.program.leaf_data(p.v)?.to_vec(),
                ))
            })
            .collect::<Result<Vec<_>, AutodiffError>>()?;
        Ok(OptimizerState { t: self.t, moments })
    }

    /// Restore state saved by [`TrainStep::optimizer_state`].
    pub fn load_optimizer_state(&mut self, state: &OptimizerState) -> Result<(), AutodiffError> {
        for (name, m, v) in &state.moments {
            let p = self.param(name)?;
            self.program.fill(p.m, m.clone())?;
            self.program.fill(p.v, v.clone())?;
        }
        self.t = state.t;
        Ok(())
    }

    /// Updates applied so far.
    pub fn updates(&self) -> u64 {
        self.t
    }

    /// Steps skipped because of a non-finite loss or gradient.
    pub fn skipped_steps(&self) -> u64 {
        self.skipped
    }

    /// The optimizer settings.
    pub fn config(&self) -> &AdamWConfig {
        &self.config
    }

    /// Nodes in the compiled graph.
    pub fn node_count(&self) -> usize {
        self.program.node_count()
    }

    /// Time every op of every following step ([`TrainStep::profile`]); calling it again
    /// clears the counts. Results are unchanged (the ops run as before, inside timers);
    /// a step that never enables it runs no timer at all.
    pub fn enable_profiling(&mut self) {
        let (forward_end, backward_end) = self.phase_bounds;
        self.program.enable_profiling(|node| {
            if node.index() < forward_end {
                Phase::Forward
            } else if node.index() < backward_end {
                Phase::Backward
            } else {
                Phase::Optimizer
            }
        });
    }

    /// Per-op times, calls, FLOPs and bytes of the steps since
    /// [`TrainStep::enable_profiling`]; `None` when it was not called.
    pub fn profile(&self) -> Option<Profile> {
        self.program.profile()
    }
}

fn first(v: Vec<f32>) -> f32 {
    v.first().copied().unwrap_or(f32::NAN)
}

fn sum_all(t: Tensor) -> Tensor {
    if t.rank() == 0 {
        return t;
    }
    t.sum(&(0..t.rank()).collect::<Vec<_>>())
}

fn state(graph: &mut GraphBuilder, name: &str, shape: &[usize], numel: usize) -> Tensor {
    graph.state(name, shape, vec![0.0; numel])
}

/// TF `clip_by_value` then `clip_by_norm`.
fn clip(g: Tensor, config: &AdamWConfig) -> Tensor {
    let shape = g.shape();
    let mut g = g;
    if let Some(c) = config.clip_value {
        // minimum(g, c) = -maximum(-g, -c); then maximum(., -c).
        let hi = (-g).maximum(g.full_like(-c));
        g = (-hi).maximum(g.full_like(-c));
    }
    if let Some(c) = config.clip_norm {
        let norm = sum_all(g * g).sqrt();
        let scale = norm.maximum(norm.full_like(c)).recip().mul_scalar(c);
        g = g * scale.broadcast_to(&shape);
    }
    g
}

/// An evaluation program: a separate graph whose parameters are copied in by name (e.g.
/// from a [`TrainStep`]), inputs fed per run, outputs read back.
pub struct Evaluator {
    program: Program,
    outputs: usize,
}

impl Evaluator {
    /// Compile `graph` for `backend`, computing `outputs` on each run.
    pub fn new(
        graph: GraphBuilder,
        outputs: &[Tensor],
        backend: Backend,
    ) -> Result<Self, AutodiffError> {
        graph.check()?;
        let program = Program::new(graph.into_ctx(), outputs, backend)?;
        Ok(Evaluator {
            program,
            outputs: outputs.len(),
        })
    }

    /// Copy parameter values in by name (e.g. `train.params()?`). Every parameter of this
    /// graph must be among `values`; names it does not have (training-only parameters)
    /// are ignored.
    pub fn load_params(&mut self, values: &[(String, Vec<f32>)]) -> Result<(), AutodiffError> {
        let wanted: Vec<usize> = (0..self.program.slots.len())
            .filter(|&i| self.program.slots[i].kind == LeafKind::Param)
            .collect();
        for i in wanted {
            let name = self.program.slots[i].name.clone();
            let data = values
                .iter()
                .find(|(n, _)| *n == name)
                .ok_or(AutodiffError::MissingInput(name))?;
            self.program.fill(i, data.1.clone())?;
        }
        Ok(())
    }

    /// Feed an input by name.
    pub fn set_input(&mut self, name: &str, data: &[f32]) -> Result<(), AutodiffError> {
        let slot = self.program.slot_index(name)?;
        if self.program.slots[slot].kind != LeafKind::Input {
            return Err(AutodiffError::UnknownName(name.to_string()));
        }
        self.program.fill(slot, data.to_vec())
    }

    /// Debug names of the compiled graph's ops (diagnostics).
    pub fn op_names(&self) -> Vec<String> {
        self.program.op_names()
    }

    /// Time every op of every following run ([`Evaluator::profile`]; every op counts as
    /// [`Phase::Forward`]); calling it again clears the counts.
    pub fn enable_profiling(&mut self) {
        self.program.enable_profiling(|_| Phase::Forward);
    }

    /// Per-op times of the runs since [`Evaluator::enable_profiling`]; `None` when it was
    /// not called.
    pub fn profile(&self) -> Option<Profile> {
        self.program.profile()
    }

    /// Run once; one vector per output, row-major.
    pub fn run(&mut self) -> Result<Vec<Vec<f32>>, AutodiffError> {
        self.program.run()?;
        (0..self.outputs)
            .map(|i| self.program.take_output(i))
            .collect()
    }
}
