//! Every CUDA kernel luminal_cuda generates for a training step and an evaluation graph
//! compiles to PTX with NVRTC, so a kernel that does not compile is caught without a GPU.
//!
//! luminal_cuda writes its kernels' CUDA C and compiles them with NVRTC while it compiles a
//! graph (in each op's constructor, after `CudaDevice::new(0)`), so building a [`TrainStep`]
//! and an [`Evaluator`] for [`Backend::Cuda`] compiles every kernel they need. On a machine
//! without a GPU, `scripts/cuda-kernels.sh` runs this test against NVRTC from PyPI and a
//! compile-only stand-in for the driver (`tests/nvrtc/fake_driver.c`), which writes each
//! PTX module to `$AUTODIFF_PTX_DUMP`; the test then checks those files. With a real GPU
//! (`scripts/gpu-check.sh`) the kernels are also loaded by the driver.
//!
//! The graphs have the op mix of the trainer's AWGIM graphs: an encoder, 4-head attention of
//! queries over a support set, concatenation, per-row and task-wide layer norms, relu
//! feed-forward, L2-normalised (cosine) logits with `maximum`, an exponential, a
//! reconstruction term through `stop_gradient`, cross-entropy, and the whole backward pass
//! and clipped AdamW update; the evaluator has another batch size and a softmax output.
#![cfg(feature = "cuda")]

use std::{collections::BTreeSet, fs, path::Path};

use autodiff::{AdamWConfig, Backend, Evaluator, GraphBuilder, Tensor, TrainStep};

const D_IN: usize = 24;
const D: usize = 16;
const HEADS: usize = 4;
const WAYS: usize = 5;
const SUPPORT: usize = 5;
const QUERIES: usize = 3;

/// The parameters, by name and shape, with small deterministic values.
fn params(g: &mut GraphBuilder) -> Vec<Tensor> {
    [
        ("enc", [D_IN, D]),
        ("wq", [D, D]),
        ("wk", [D, D]),
        ("wv", [D, D]),
        ("f1", [2 * D, 2 * D]),
        ("f2", [2 * D, D]),
        ("dec", [D, D_IN]),
    ]
    .iter()
    .map(|(name, shape)| {
        let n = shape[0] * shape[1];
        let init = (0..n).map(|i| ((i % 7) as f32 - 3.0) * 0.05).collect();
        g.param(name, shape, init)
    })
    .collect()
}

/// Logits [tasks, QUERIES, WAYS] and an auxiliary loss.
fn forward(g: &mut GraphBuilder, tasks: usize) -> (Tensor, Tensor) {
    let support = g.input("support", &[tasks, WAYS * SUPPORT, D_IN]);
    let query = g.input("query", &[tasks, QUERIES, D_IN]);
    let p = params(g);
    let (enc, wq, wk, wv, f1, f2, dec) = (p[0], p[1], p[2], p[3], p[4], p[5], p[6]);
    let s = support.matmul(enc).layer_norm(&[1, 2], 1e-5);
    let q = query.matmul(enc).layer_norm(&[2], 1e-5);
    let dh = D / HEADS;
    let heads =
        |t: Tensor, rows: usize| t.reshape(&[tasks, rows, HEADS, dh]).permute(&[0, 2, 1, 3]);
    let scores = heads(q.matmul(wq), QUERIES).matmul(heads(s.matmul(wk), WAYS * SUPPORT).t())
        * (1.0 / (dh as f32).sqrt());
    let context = scores
        .softmax(3)
        .matmul(heads(s.matmul(wv), WAYS * SUPPORT))
        .permute(&[0, 2, 1, 3])
        .reshape(&[tasks, QUERIES, D]);
    let h = q.concat(&[context], 2);
    let h = (h + h.matmul(f1).relu()).layer_norm(&[2], 1e-5).matmul(f2);
    // Class prototypes: the mean of each class's support rows.
    let prototypes = s.reshape(&[tasks, WAYS, SUPPORT, D]).mean(&[2]);
    let unit = |t: Tensor| {
        let norm = (t * t).sum(&[2]).sqrt().expand(2, D);
        t / norm.maximum(norm.full_like(1e-6))
    };
    let logits = unit(h).matmul(unit(prototypes).t()) * 10.0;
    let recon = s
        .matmul(dec)
        .squared_error(support.stop_gradient())
        .mean_all();
    let spread = s.max_axis(1).exp().mean_all();
    (logits, recon * 0.01 + spread * 0.001)
}

/// Names (from `.entry`) of the kernels in the PTX files under `dir`, after checking that
/// each file is PTX for the target luminal_cuda asks for.
fn kernels_in(dir: &Path) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for file in fs::read_dir(dir).expect("PTX dump directory") {
        let path = file.expect("directory entry").path();
        let ptx = fs::read_to_string(&path).expect("PTX file");
        assert!(
            ptx.contains(".target sm_75"),
            "{}: not PTX for sm_75",
            path.display()
        );
        let entries: Vec<&str> = ptx
            .lines()
            .filter_map(|l| l.split(".entry ").nth(1))
            .map(|l| l.trim_end_matches(['(', ' ']))
            .collect();
        assert!(!entries.is_empty(), "{}: no kernel", path.display());
        names.extend(entries.into_iter().map(str::to_string));
    }
    names
}

#[test]
fn every_kernel_of_a_training_step_and_an_evaluator_compiles() {
    let dump = std::env::var_os("AUTODIFF_PTX_DUMP");

    let mut g = GraphBuilder::new();
    let (logits, aux) = forward(&mut g, 4);
    let labels = g.input("labels", &[4, QUERIES, WAYS]);
    let loss = logits.cross_entropy_with_logits(labels).mean_all() + aux;
    let train = TrainStep::new(g, loss, &[], AdamWConfig::default(), Backend::Cuda)
        .expect("training step compiles for CUDA");

    let mut e = GraphBuilder::new();
    let (logits, _) = forward(&mut e, 1);
    let eval = Evaluator::new(e, &[logits.softmax(2)], Backend::Cuda)
        .expect("evaluator compiles for CUDA");
    println!(
        "compiled for CUDA: training step {} nodes, evaluator {} ops",
        train.node_count(),
        eval.op_names().len()
    );

    match dump {
        Some(dir) => {
            let names = kernels_in(Path::new(&dir));
            println!(
                "{} distinct kernels compiled to PTX (sm_75) by NVRTC, loaded by the stand-in driver",
                names.len()
            );
            assert!(
                names.len() >= 10,
                "expected the kernels of a whole training step, found {names:?}"
            );
        }
        None => println!(
            "AUTODIFF_PTX_DUMP not set: kernels compiled and loaded by the driver, PTX not inspected"
        ),
    }
}
