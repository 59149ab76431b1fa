#!/usr/bin/env bash
# Runs the criterion benchmarks of the engine (`engine/benches/inference`) and the trainer
# (`trainer/benches/train_step`) in release mode with the host flags of .cargo/config.toml
# (-C target-cpu=native), then prints, on stdout, the machine and ONE markdown table read
# from criterion's own JSON output (target/criterion/**/new/{benchmark,estimates}.json):
# benchmark, configuration, median time with criterion's 95% confidence interval, the FLOPs
# each benchmark records as its throughput, and the achieved GFLOP/s (FLOPs / median).
# Cargo's and criterion's progress goes to stderr.
#
#   scripts/bench.sh              # everything (about 10 minutes on 2 cores)
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

# RUSTFLAGS in the environment would replace the config's target-cpu=native.
unset RUSTFLAGS CARGO_ENCODED_RUSTFLAGS
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
echo "Engine: single thread. Training step: sgemm threaded over MATMUL_NUM_THREADS=${MATMUL_NUM_THREADS:-all cores}, the rest on one thread."
echo
python3 - "$CRITERION_HOME" "$stamp" <<'PY'
import json
import os
import sys

root, since = sys.argv[1], float(sys.argv[2])


def duration(ns):
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= scale:
            return ns / scale, unit
    return ns, "ns"


def time_cell(median):
    value, unit = duration(median["point_estimate"])
    scale = median["point_estimate"] / value
    ci = median["confidence_interval"]
    low, high = ci["lower_bound"] / scale, ci["upper_bound"] / scale
    return f"{value:.4g} {unit} [{low:.4g}, {high:.4g}]"


def count_cell(flops):
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if flops >= scale:
            return f"{flops / scale:.4g} {unit}"
    return f"{flops:.0f}"


rows = []
for directory, _, files in os.walk(root):
    if os.path.basename(directory) != "new" or "estimates.json" not in files:
        continue
    estimates = os.path.join(directory, "estimates.json")
    written = os.path.getmtime(estimates)
    if written < since:
        continue
    with open(os.path.join(directory, "benchmark.json")) as f:
        bench = json.load(f)
    with open(estimates) as f:
        median = json.load(f)["median"]
    throughput = bench.get("throughput") or {}
    flops = throughput.get("Elements")
    config = bench["function_id"] or ""
    if bench.get("value_str"):
        config += f" ({bench['value_str']})"
    seconds = median["point_estimate"] / 1e9
    rows.append((
        written,
        bench["group_id"],
        config,
        time_cell(median),
        count_cell(flops) if flops else "—",
        f"{flops / seconds / 1e9:.2f}" if flops else "—",
    ))

if not rows:
    sys.exit(f"no criterion results newer than this run under {root}")
print("| Benchmark | Configuration | Median [95% CI] | FLOPs | GFLOP/s |")
print("|---|---|---|---:|---:|")
for _, *cells in sorted(rows):
    print("| " + " | ".join(cells) + " |")
PY
