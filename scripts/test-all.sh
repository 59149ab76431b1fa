#!/usr/bin/env bash
# Runs every test of the project, installing what the tests need first.
# This is the README's test command and what CI (.ci/run) runs on a clean clone.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== installing test prerequisites"
rustup target add thumbv7em-none-eabihf >/dev/null

echo "== host tests (all workspace crates)"
cargo test --workspace --release

echo "== engine for Cortex-M4F/M7 (no_std, no alloc)"
cargo build -p engine --target thumbv7em-none-eabihf --release

echo "== the CUDA path compiles (no linking: luminal_cudarc ci-check)"
cargo check -p trainer --features cuda,ci-check

echo "== all tests passed"
