#!/usr/bin/env bash
# Runs the criterion benchmarks of the engine (`engine/benches/inference`) and the trainer
# (`trainer/benches/train_step`) in release mode with the host flags of .cargo/config.toml
# (-C target-cpu=native; the portable build's setting is honoured, see below), then prints, on stdout, the machine and ONE markdown table read
# from criterion's own JSON output (target/criterion/**/new/{benchmark,estimates}.json):
# benchmark, configuration, median time with criterion's 95% confidence interval, the FLOPs
# each benchmark records as its throughput, the achieved GFLOP/s (FLOPs / median) and that
# rate as a fraction of the machine's f32 FMA peak, which it measures first with
# scripts/fma-peak.rs (independent FMA chains with the widest vectors, on one core for the
# single-threaded engine, on the training step's sgemm threads for the training rows)
# (scripts/bench-table.py). Cargo's and criterion's progress goes to stderr.
#
#   scripts/bench.sh              # everything (about 4 minutes on 2 cores)
#   scripts/bench.sh engine       # the engine's benchmarks only
#   scripts/bench.sh trainer      # the training step only
#
# Only results written by this run are tabled. Other processes on the machine slow the
# benchmarks down: the load average before and after is printed with the table.
set -euo pipefail
cd "$(dirname "$0")/.."

which=${1:-all}
case "$which" in
all | engine | trainer) ;;
*)
    echo "usage: $0 [all|engine|trainer]" >&2
    exit 2
    ;;
esac

# RUSTFLAGS in the environment would replace the config's flags (target-cpu=native). The
# portable build's one setting is kept, to measure that build (docs/benchmarks.md):
#   CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-cpu=x86-64-v3" scripts/bench.sh
# (with CARGO_TARGET_DIR=target/x86-64-v3, so that the native build is not rebuilt after).
unset RUSTFLAGS CARGO_ENCODED_RUSTFLAGS
# rustc takes the last target-cpu; cargo appends that variable to the config's flags.
build_cpu=$(echo "-C target-cpu=native ${CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS:-}" |
    grep -oE 'target-cpu=[^ ]+' | tail -n1)
target_dir=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
export CRITERION_HOME="$target_dir/criterion"
benches=()
[[ $which != trainer ]] && benches+=(inference)
[[ $which != engine ]] && benches+=(train_step)
# Every cargo call selects both crates, so both benchmarks build once, with the same features.
cargo=(cargo bench -p engine -p trainer)
build=()
for bench in "${benches[@]}"; do build+=(--bench "$bench"); done
"${cargo[@]}" --no-run "${build[@]}" 1>&2

# The FMA peak, built with the benchmarks' CPU flags; on AVX-512 machines also with 512-bit
# vectors preferred (LLVM prefers 256-bit ones; see scripts/fma-peak.rs). bench-table.py
# keeps the faster. Measured before the benchmarks, on the training step's sgemm threads.
mkdir -p "$target_dir/fma-peak"
peaks="$target_dir/fma-peak/peaks.jsonl"
: >"$peaks"
widths=(256)
grep -qw avx512f /proc/cpuinfo && widths+=(512)
for width in "${widths[@]}"; do
    flags=(-C opt-level=3 -C target-cpu=native)
    [[ $width == 512 ]] && flags+=(-C target-feature=-prefer-256-bit) # warns: LLVM-only flag
    rustc --edition 2021 "${flags[@]}" -o "$target_dir/fma-peak/fma-peak-$width" scripts/fma-peak.rs 1>&2
    "$target_dir/fma-peak/fma-peak-$width" ${MATMUL_NUM_THREADS:-} |
        sed "s/^{/{\"vector_bits\": $width, /" >>"$peaks"
done

load1() { cut -d' ' -f1 /proc/loadavg; }
stamp=$(date +%s)
loads=""
for bench in "${benches[@]}"; do
    before=$(load1)
    if awk -v load="$before" 'BEGIN { exit !(load >= 1) }'; then
        echo "warning: 1-minute load average $before before $bench: other work competes for the cores" >&2
    fi
    "${cargo[@]}" --bench "$bench" 1>&2
    loads+="${loads:+; }$bench $before -> $(load1)"
done

field() { grep -m1 "^$1" /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'; }
vector=$(field flags | tr ' ' '\n' | grep -xE 'avx2|fma|avx512f' | tr '\n' ' ' | sed 's/ $//')
echo "Machine: $(field 'model name') (family $(field 'cpu family'), model $(field 'model\s'); ${vector:-no AVX}), $(nproc) cores available of $(grep -c '^processor' /proc/cpuinfo); $(rustc --version); $(date -u '+%Y-%m-%d %H:%M UTC')."
echo "1-minute load average before -> after each benchmark binary: ${loads}."
echo "Benchmarks built with -C $build_cpu."
echo "Engine: single thread. Training step: sgemm threaded over MATMUL_NUM_THREADS=${MATMUL_NUM_THREADS:-all cores}, the rest on one thread."
echo
python3 scripts/bench-table.py "$CRITERION_HOME" "$stamp" "$peaks"
