#!/usr/bin/env bash
# CUDA without a GPU: builds the autodiff crate with `--features cuda` (linked for real, not
# `ci-check`) and runs autodiff/tests/cuda_kernels.rs, which compiles a training step and an
# evaluator with the op mix of the AWGIM graphs for `Backend::Cuda`: every kernel luminal_cuda
# generates for them goes through NVRTC and must compile to PTX. Needs no GPU and no CUDA
# toolkit: scripts/install-cuda-nvrtc.sh installs NVRTC and the CUDA headers from PyPI and a
# compile-only stand-in for the driver. Prints a SKIPPED line and exits 0 when that install
# cannot be done here (no pip or no network, no C compiler, /usr/local not writable), except
# under CI (CI=true), where PyPI is reachable and a failed install fails the run.
# About 1 minute on 2 cores the first time (luminal_cudarc, luminal_cuda), seconds after.
# On a GPU machine use scripts/gpu-check.sh instead (it runs the same test on the device).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! env=$(scripts/install-cuda-nvrtc.sh); then
    if [ "${CI:-}" = "true" ]; then
        echo "cuda-kernels: NVRTC could not be installed under CI" >&2
        exit 1
    fi
    echo "cuda-kernels: SKIPPED (NVRTC could not be installed here; see the line above)"
    exit 0
fi
eval "$env"
dump=$(mktemp -d)
trap 'rm -rf "$dump"' EXIT
AUTODIFF_PTX_DUMP=$dump cargo test --release -p autodiff --features cuda --test cuda_kernels \
    -- --nocapture
