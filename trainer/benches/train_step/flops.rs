//! FLOPs of one AWGIM training step, two ways that must agree.
//!
//! **What is counted**: the matrix products of the compiled training graph, forward and
//! backward, a multiply-add counting 2 FLOPs. A product of an `m x k` by a `k x n` matrix is
//! `m n k` multiply-adds (every batch of a batched product counted).
//!
//! **Analytic** ([`StepShape`]): the forward products of `trainer::awgim` in training mode
//! (generator once per class, `GeneratorRows::PerClass`), from the configuration and the
//! batch shape, term by term below. Backward: the reverse pass differentiates a product
//! `A B` as two products of the same size, `dA = G Bᵀ` and `dB = Aᵀ G`, but only for an
//! operand that depends on a parameter: the three encoder products and the support logits
//! have data on the left (the masked features), so they get `dB` only. Hence
//! backward = 2 x forward - (those four products).
//!
//! **Compiled graph** ([`compiled_products`]): the trainer's CPU backend turns every lowered
//! product into one `BatchedMatMul` kernel (`autodiff::kernels`), whose debug form
//! names its batch axes and `m`, `n`, `k`. The benchmark compiles the forward graph (outputs:
//! the loss) and the forward + backward graph (outputs: the loss and every parameter's
//! gradient) and sums the kernels' sizes; both must equal the analytic counts, or the
//! benchmark stops. (The training step's own graph adds gradient clipping and AdamW, which
//! have no products; `TrainStep` does not list its ops, so the gradient graph stands in for
//! it.)
//!
//! **Not counted**: element-wise ops and reductions: the reparameterisation and the K-average
//! over the `(B, M, N, K, D)` samples, softmax, layer norms, ReLU, dropout masks, losses,
//! clipping and AdamW, and the query logits `l[i] = x . W[i]`, which the graph computes as an
//! element-wise product and a sum (`B M N D` multiply-adds forward, as many backward) rather
//! than a product kernel. They are memory-bound; their share of the step's time is what the
//! achieved GFLOP/s leaves out.
//!
//! Sizes (AWGIM.md's letters, [`formats::Sizes`]): `B` tasks, `N` ways, `K` shots,
//! `NK = N K`, `M = N Q` queries per task, `D` features, `d` latent, `h` heads, `G`
//! generator width.

// AWGIM.md's size letters: `D` (features) and `d` (latent) are two different sizes.
#![allow(non_snake_case)]

use formats::{EncoderKind, ModelConfig};
use trainer::awgim::BatchShape;

/// The sizes of one training step, widened to `u64`.
#[derive(Clone, Copy, Debug)]
pub struct StepShape {
    B: u64,
    N: u64,
    K: u64,
    M: u64,
    D: u64,
    d: u64,
    G: u64,
}

impl StepShape {
    /// The step of `config` (attention encoder) on batches of `shape`.
    pub fn new(config: &ModelConfig, shape: BatchShape) -> Result<Self, String> {
        if config.encoder != EncoderKind::Attention {
            return Err("the FLOP count covers the attention encoder only".into());
        }
        let sizes = config.sizes();
        let N = sizes.N as u64;
        Ok(StepShape {
            B: shape.tasks as u64,
            N,
            K: sizes.K as u64,
            M: N * shape.queries_per_class as u64,
            D: sizes.D as u64,
            d: sizes.d as u64,
            G: sizes.G as u64,
        })
    }

    /// Multiply-adds of `block(q, k, v)` with `rows` queries over `keys` keys: `Wq`, `Wo`
    /// and `F1`, `F2` per query row (`d^2`, `d^2`, `2 d^2`, `2 d^2`), `Wk` and `Wv` per key
    /// row (`d^2` each), scores and value mix (`d` per query-key pair, all heads together).
    fn block(&self, rows: u64, keys: u64) -> u64 {
        let d = self.d;
        (6 * rows + 2 * keys) * d * d + 2 * rows * keys * d
    }

    /// Multiply-adds of the forward products whose left operand is data (masked features):
    /// `enc_ap` on the support and the queries, `enc_cp` on the support (`D d` per row), and
    /// the support logits, every support example against the `M N` query-specific weights
    /// (`NK D M N` per task).
    pub fn data_side_products(&self) -> u64 {
        let StepShape {
            B, N, K, M, D, d, ..
        } = *self;
        let NK = N * K;
        B * ((2 * NK + M) * D * d + NK * D * M * N)
    }

    /// Multiply-adds of the forward products: the [`Self::data_side_products`], the blocks
    /// `sa_ap` and `sa_cp` (`NK` rows over `NK` keys) and `ca_ap` (`M` rows over `NK` keys),
    /// the generator on `M N` rows (`G1`: `2d G`; `G2mu`, `G2sigma`: `G D` each), and the two
    /// decoders on all `M N K` sampled rows (`R1`: `D 2d`, `R2`: `2d d`).
    pub fn forward_products(&self) -> u64 {
        let StepShape {
            B,
            N,
            K,
            M,
            D,
            d,
            G,
        } = *self;
        let NK = N * K;
        let blocks = 2 * self.block(NK, NK) + self.block(M, NK);
        let generator = M * N * (2 * d * G + 2 * G * D);
        let decoders = 2 * M * N * K * (D * 2 * d + 2 * d * d);
        self.data_side_products() + B * (blocks + generator + decoders)
    }

    /// Multiply-adds of the backward products: two per forward product, one for the
    /// data-side ones.
    pub fn backward_products(&self) -> u64 {
        2 * self.forward_products() - self.data_side_products()
    }

    /// FLOPs of the step's products, forward and backward.
    pub fn step_flops(&self) -> u64 {
        2 * (self.forward_products() + self.backward_products())
    }
}

/// Multiply-adds of the `BatchedMatMul` kernels among a compiled graph's op debug names
/// (`Evaluator::op_names`): for each, the product of its batch lengths and `m n k`.
pub fn compiled_products(op_names: &[String]) -> Result<u64, String> {
    let mut total = 0u64;
    for op in op_names {
        let Some(fields) = op.strip_prefix("BatchedMatMul { batch: [") else {
            continue;
        };
        let unreadable = || format!("unexpected BatchedMatMul debug form: {op}");
        let (batch, rest) = fields.split_once(']').ok_or_else(unreadable)?;
        // `batch` lists `(len, a stride, b stride)` tuples: the length opens each.
        let mut size = 1u64;
        for tuple in batch.split('(').skip(1) {
            let len = tuple.split(',').next().ok_or_else(unreadable)?;
            size *= len.trim().parse::<u64>().map_err(|_| unreadable())?;
        }
        for field in ["m", "n", "k"] {
            let value = rest
                .split(", ")
                .find_map(|f| f.strip_prefix(field)?.strip_prefix(": "))
                .ok_or_else(unreadable)?;
            size *= value.parse::<u64>().map_err(|_| unreadable())?;
        }
        total += size;
    }
    Ok(total)
}
