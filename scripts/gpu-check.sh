#!/usr/bin/env bash
# GPU check: builds the autodiff crate and the trainer with `--features cuda`, compiles and
# loads every kernel of a training step and an evaluator (autodiff/tests/cuda_kernels.rs, the
# test scripts/cuda-kernels.sh runs without a GPU), trains a small attention network 300
# steps on the CPU and on the GPU from the same seed, prints both loss curves and the largest
# relative difference, and fails if it exceeds 1e-2 (autodiff/tests/cuda.rs).
# Needs an NVIDIA GPU, the CUDA toolkit (nvcc on PATH) and the crates (network or a
# filled cargo cache). Budget: 10 minutes including the build.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v nvcc >/dev/null || { echo "gpu-check: nvcc not on PATH (install the CUDA toolkit)"; exit 2; }
command -v nvidia-smi >/dev/null && nvidia-smi -L || { echo "gpu-check: no NVIDIA GPU visible"; exit 2; }

# luminal_cudarc's build script looks for include/cuda.h under CUDA_ROOT.
export CUDA_ROOT="${CUDA_ROOT:-$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")}"
export LD_LIBRARY_PATH="$CUDA_ROOT/lib64:$CUDA_ROOT/lib:${LD_LIBRARY_PATH:-}"
# luminal_cuda compiles its kernels at run time with NVRTC and a fixed include path.
if [ ! -f /usr/local/cuda/include/cuda_fp16.h ]; then
    echo "gpu-check: luminal_cuda needs /usr/local/cuda/include/cuda_fp16.h;"
    echo "           link /usr/local/cuda to $CUDA_ROOT first"
    exit 2
fi
echo "gpu-check: CUDA at $CUDA_ROOT; $(nvcc --version | tail -n1)"

JOBS="$(nproc)"
# Both crates in one build, so the trainer's `--gpu` path links too and nothing builds twice.
selection=(-p autodiff -p trainer --features autodiff/cuda,trainer/cuda)
timeout 420 cargo build --release -j "$JOBS" "${selection[@]}" --tests
timeout 170 cargo test --release -j "$JOBS" "${selection[@]}" --test cuda_kernels --test cuda -- --nocapture
