#!/usr/bin/env python3
"""Prints scripts/bench.sh's markdown table from criterion's JSON output.

    bench-table.py CRITERION_HOME SINCE PEAKS

Reads CRITERION_HOME/**/new/{benchmark,estimates}.json written at or after SINCE (seconds
since the epoch; older results belong to earlier runs) and prints one row per benchmark:
configuration, median time with criterion's 95% confidence interval, the FLOPs the
benchmark records as its throughput, the achieved GFLOP/s (FLOPs / median), and that rate
as a percentage of the machine's f32 FMA peak: of one core's peak for the engine, which runs
on one thread, and of the peak of all the threads the training step's sgemm uses for
everything else. PEAKS has one JSON line per build of scripts/fma-peak.rs (its output with
the vector width it was built for, "vector_bits"); the fastest counts, and a line above the
table states it.
"""
import json
import os
import sys


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


def best_peak(path):
    with open(path) as f:
        runs = [json.loads(line) for line in f if line.strip()]
    if not runs:
        sys.exit(f"no FMA peak measured in {path}")
    peak = dict(max(runs, key=lambda r: r["core_gflops"]))
    peak["machine_gflops"] = max(r["machine_gflops"] for r in runs)
    return peak


def main(root, since, peak):
    note = "" if peak["fma"] else " (this build target has no FMA instructions: not a peak)"
    print(
        f"f32 FMA peak (scripts/fma-peak.rs, {peak['vector_bits']}-bit vectors{note}): "
        f"{peak['core_gflops']:.1f} GFLOP/s on one core, {peak['machine_gflops']:.1f} GFLOP/s "
        f"on {peak['threads']} threads at once. \"of peak\": the engine rows against the first, "
        "the training rows against the second."
    )
    print()
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
        gflops = flops / (median["point_estimate"] / 1e9) / 1e9 if flops else None
        single = bench["group_id"].startswith("engine")
        limit = peak["core_gflops"] if single else peak["machine_gflops"]
        rows.append((
            written,
            bench["group_id"],
            config,
            time_cell(median),
            count_cell(flops) if flops else "—",
            f"{gflops:.2f}" if gflops else "—",
            f"{100 * gflops / limit:.0f}%" if gflops else "—",
        ))
    if not rows:
        sys.exit(f"no criterion results newer than this run under {root}")
    print("| Benchmark | Configuration | Median [95% CI] | FLOPs | GFLOP/s | of peak |")
    print("|---|---|---|---:|---:|---:|")
    for _, *cells in sorted(rows):
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(sys.argv[1], float(sys.argv[2]), best_peak(sys.argv[3]))
