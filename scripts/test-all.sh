#!/usr/bin/env bash
# Runs every test of the project, installing what the tests need first.
# This is the README's test command and what CI (.ci/run) runs on a clean clone.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== installing test prerequisites"
rustup target add thumbv7em-none-eabihf >/dev/null
# The device tests (tests/tests/device_qemu.rs) run the firmware on QEMU's Cortex-M boards.
if ! command -v qemu-system-arm >/dev/null; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends qemu-system-arm
fi

echo "== host tests (all workspace crates)"
# Parity and device tests run next, with their measurements printed.
cargo test --workspace --release -- --skip parity_ --skip _on_qemu

echo "== trainer <-> engine parity, and the engine on QEMU's Cortex-M4F/M7 (measurements)"
cargo test --release -p tests --test parity --test device_qemu -- --nocapture --test-threads 1

echo "== the benchmarks run each configuration once (criterion's test mode: a broken benchmark fails here)"
# `cargo test` on a bench target runs it in criterion's test mode with the release artifacts
# above (`cargo bench` would rebuild everything in the bench profile: 4 more minutes);
# `--workspace`, as above, keeps the same feature set, so no dependency is rebuilt.
cargo test --workspace --release --bench inference --bench train_step

echo "== engine for Cortex-M4F/M7 (no_std, no alloc)"
cargo build -p engine --target thumbv7em-none-eabihf --release

echo "== the engine's Arm assembly loops (ops/dsp.rs) on QEMU's Cortex-M4F, bit for bit against the portable code"
# Exits 1 unless the int8 SXTB16/SMLAD and f32 VLDM loops equal the portable sums bit for bit
# (paper and odd shapes); prints instructions per product (docs/arm-kernels.md).
(cd engine/examples/device-kernels && cargo run --release)

echo "== the CUDA path compiles (no linking: luminal_cudarc ci-check)"
# `--release`: the build scripts and proc macros of the release build above are reused (a dev
# check rebuilt them all: 5 min against 1 on the 2-core CI machine).
cargo check --release -p trainer --features cuda,ci-check

echo "== CUDA kernels compile to PTX with NVRTC, no GPU (skipped if NVRTC cannot be installed)"
scripts/cuda-kernels.sh

echo "== all tests passed"
