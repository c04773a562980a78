"""Medians and ranges of the runs scripts/bench-paths wrote: for each kernel path, every rate of
suder and of PyTorch, the per-run ratios (a run's median over its alternated pairs, where it has
them), and training GFLOP/s as a fraction of the FMA peak measured in the same run.
Usage: python3 tools/bench_paths_summary.py OUT_DIR"""
import glob
import json
import statistics
import sys

# key, label, the workload whose paired ratios it has (None: a plain quotient)
RATES = [
    ("train_tokens_per_s", "train tokens/s", "train"),
    ("train_gflops", "train GFLOP/s", "train"),
    ("score_tokens_per_s", "score tokens/s", "score"),
    ("sample_tokens_per_s", "sample new tokens/s", "sample"),
    ("preference_pairs_per_s", "preference pairs/s", "preference"),
    ("peak_rss_mb", "peak RSS MB", None),
]


def run_ratio(run, key, workload):
    paired = (run.get("ratios") or {}).get(workload)
    return paired["median"] if paired else run["suder"][key] / run["torch"][key]


def spread(values, scale=1.0, digits=1, unit=""):
    values = [v * scale for v in values]
    return f"{statistics.median(values):.{digits}f}{unit} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def main(out):
    for path in ("avx512", "avx2"):
        runs = [json.load(open(f)) for f in sorted(glob.glob(f"{out}/{path}-*.json"))]
        if not runs:
            continue
        compared = [r for r in runs if r.get("torch")]
        print(f"{path}: {len(runs)} runs, {len(compared)} with PyTorch "
              f"(capability {sorted({r['torch'].get('cpu_capability') for r in compared})}); medians (ranges)")
        print(f"  {'metric':22} {'suder':>24} {'torch':>24} {'ratio':>20}")
        for key, label, workload in RATES:
            ours = [r["suder"][key] for r in runs]
            theirs = [r["torch"][key] for r in compared]
            ratios = [run_ratio(r, key, workload) for r in compared]
            row = f"  {label:22} {spread(ours):>24}"
            if compared:
                row += f" {spread(theirs):>24} {spread(ratios, digits=2, unit='x'):>20}"
            print(row)
        peaks = [r["suder"]["fma_peak_gflops"] for r in runs]
        print(f"  FMA peak GFLOP/s {spread(peaks)}; training at {spread([r['suder']['train_gflops'] / r['suder']['fma_peak_gflops'] for r in runs], 100, 0, '%')} of it"
              + (f", PyTorch at {spread([r['torch']['train_gflops'] / r['suder']['fma_peak_gflops'] for r in compared], 100, 0, '%')}" if compared else ""))


if __name__ == "__main__":
    main(sys.argv[1])
