#!/usr/bin/env python3
"""The scaling model of docs/SCALING.md: time per pretraining step and per SUDER round as
compute + allreduce + imbalance, from numbers measured by `suder bench model`, `suder bench
allreduce` and a real run's metrics. Standard library only.

  tools/scaling_model.py --run RUN_DIR --ranks R0 \
      --bench-run BENCH.json --bench-target BENCH.json \
      --allreduce-node AR.json --link-gb-per-s 3.0 --link-latency-us 20 \
      --target-config configs/cluster.yaml --target-parameters N [--ranks-per-node 32]

RUN_DIR is a finished run on R0 ranks (its pretrain and suder metrics give the measured step and
round times and their parts); BENCH.json are `suder bench model --json` at the run's model size
and at the target's, on the same CPU; AR.json is `suder bench allreduce --json` on one node.
Every input is printed beside the tables it gives.
"""

import argparse
import json
import math
import statistics
from pathlib import Path


def read_config(path):
    """The two-level `section:\\n  key: value` YAML that suder writes and configs/ use."""
    values, section = {}, None
    for raw in Path(path).read_text().splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        if not line.startswith(" ") and line.endswith(":"):
            section = line[:-1]
        elif section and ":" in line:
            key, value = line.strip().split(":", 1)
            values[f"{section}.{key.strip()}"] = value.strip().strip('"')
    return values


def read_metrics(path, keys):
    """Medians over the lines of a metrics.jsonl that have every key."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    rows = [r for r in rows if all(k in r for k in keys)]
    if not rows:
        raise SystemExit(f"{path}: no line has {', '.join(keys)}")
    return {k: statistics.median(r[k] for r in rows) for k in keys}, len(rows)


def ring_allreduce_seconds(ranks, nbytes, gb_per_s, latency_s):
    """A ring allreduce: 2 (p - 1) steps, each moving nbytes / p over the slowest link."""
    if ranks <= 1:
        return 0.0
    return 2 * (ranks - 1) / ranks * nbytes / (gb_per_s * 1e9) + 2 * (ranks - 1) * latency_s


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="finished run directory (pretrain and suder metrics)")
    p.add_argument("--ranks", type=int, required=True, help="ranks the run used")
    p.add_argument("--bench-run", required=True, help="bench model --json at the run's model size")
    p.add_argument("--bench-target", required=True, help="bench model --json at the target's model size")
    p.add_argument("--allreduce-node", required=True, help="bench allreduce --json within one node")
    p.add_argument("--link-gb-per-s", type=float, required=True, help="bandwidth between nodes, GB/s")
    p.add_argument("--link-latency-us", type=float, required=True, help="latency between nodes, microseconds")
    p.add_argument("--target-config", required=True, help="the target's config (batch, round sizes)")
    p.add_argument("--target-parameters", type=int, required=True, help="the target's parameter count")
    p.add_argument("--ranks-per-node", type=int, default=32)
    p.add_argument("--nodes", default="1,2,4,8,16,32,64")
    p.add_argument("--ranks-list", help="rank counts to predict instead of --nodes (e.g. 1,2: the run's own machine)")
    p.add_argument("--compare-run", help="a run of the target config whose measured step and round times to print")
    a = p.parse_args()

    run_config = read_config(Path(a.run) / "config.yaml")
    target = read_config(a.target_config)
    bench_run = json.loads(Path(a.bench_run).read_text())["suder"]
    bench_target = json.loads(Path(a.bench_target).read_text())["suder"]
    node = json.loads(Path(a.allreduce_node).read_text())

    # Measured on the run: a pretraining step and a SUDER round, split into their parts.
    pre, pre_lines = read_metrics(Path(a.run) / "pretrain/metrics.jsonl", ["step_time_s", "tokens_per_s", "communication_s"])
    log_every = int(run_config.get("pretrain.log_every", "50"))
    batch0 = int(run_config["pretrain.batch_size"])
    tokens_per_sequence = pre["tokens_per_s"] * pre["step_time_s"] / batch0
    step_comm0 = pre["communication_s"] / log_every
    parts = ["time/sampling_s", "time/scoring_s", "time/update_s", "time/communication_s"]
    rnd, round_lines = read_metrics(Path(a.run) / "suder/metrics.jsonl", parts)
    items0 = int(run_config["suder.prompts_per_round"])

    # Model cost at the target's size against the run's, per workload, from the two benches.
    cost = {
        "train": bench_run["train_tokens_per_s"] / bench_target["train_tokens_per_s"],
        "sample": bench_run["sample_tokens_per_s"] / bench_target["sample_tokens_per_s"],
        "score": bench_run["score_tokens_per_s"] / bench_target["score_tokens_per_s"],
        "preference": bench_run["preference_pairs_per_s"] / bench_target["preference_pairs_per_s"],
    }
    node_gb = node["bus_gb_per_s"]
    node_latency = node["latency_s"] / 2  # a 2-rank ring allreduce is 2 steps
    nbytes = 4 * a.target_parameters
    link_latency = a.link_latency_us * 1e-6

    def allreduce(ranks):
        nodes = math.ceil(ranks / a.ranks_per_node)
        if nodes == 1:
            return ring_allreduce_seconds(ranks, nbytes, node_gb, node_latency)
        # Ranks ordered by node: one ring link per node crosses the network and sets the pace.
        return ring_allreduce_seconds(ranks, nbytes, min(node_gb, a.link_gb_per_s), max(node_latency, link_latency))

    # Per-rank compute of one sequence (pretraining) and one round item (SUDER), at the target size.
    seq_seconds = pre["step_time_s"] - step_comm0
    seq_seconds = seq_seconds / math.ceil(batch0 / a.ranks) * cost["train"]
    item_seconds = sum(
        rnd[k] / math.ceil(items0 / a.ranks) * cost[w]
        for k, w in [("time/sampling_s", "sample"), ("time/scoring_s", "score"), ("time/update_s", "preference")]
    )

    batch = int(target["pretrain.batch_size"])
    items = int(target["suder.prompts_per_round"])
    if int(target["suder.images_per_round"]) != items or int(run_config["suder.images_per_round"]) != items0:
        raise SystemExit("the model assumes as many images as prompts per round, in the run and the target")
    per_rank_weak = max(1, batch // a.ranks_per_node)
    if a.ranks_list:
        rank_counts = [int(x) for x in a.ranks_list.split(",")]
    else:
        rank_counts = [int(n) * a.ranks_per_node for n in a.nodes.split(",")]

    print("# Inputs")
    print(f"- run {a.run} on {a.ranks} ranks: pretraining step {pre['step_time_s']:.3f} s (median of {pre_lines} log lines), "
          f"of which allreduce + imbalance {step_comm0 * 1e3:.1f} ms; {tokens_per_sequence:.1f} tokens per sequence; "
          f"SUDER round parts (median of {round_lines} rounds): "
          + ", ".join(f"{k.split('/')[1][:-2]} {rnd[k]:.2f} s" for k in parts))
    print(f"- model cost, target size / run size (bench model, 1 thread): "
          + ", ".join(f"{k} {v:.2f}x" for k, v in cost.items()))
    print(f"- allreduce within a node: {node_gb:.2f} GB/s bus bandwidth, {node['latency_s'] * 1e6:.1f} us per 8-byte allreduce "
          f"({node['ranks']} ranks); between nodes: {a.link_gb_per_s:.2f} GB/s, {a.link_latency_us:.0f} us (given)")
    print(f"- target: {a.target_parameters} parameters ({nbytes / 1e6:.0f} MB of gradients), batch {batch}, "
          f"{items} prompts and {items} images per round, {a.ranks_per_node} ranks per node, 1 thread per rank")
    print()

    def table(title, rows, work="sequences", unit="step"):
        print(f"## {title}")
        print()
        print(f"| nodes | ranks | {work} per rank (max) | idle ranks | compute s | allreduce s | {unit} s | efficiency |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for r in rows:
            print("| " + " | ".join(r) + " |")
        print()

    def rows_for(work_items, seconds_per_item, allreduces, per_rank=None):
        one = seconds_per_item * work_items(1)
        out = []
        for ranks in rank_counts:
            n = math.ceil(ranks / a.ranks_per_node)
            total = work_items(ranks) if per_rank is None else per_rank * ranks
            share = math.ceil(total / ranks)
            idle = max(0, ranks - total)
            compute = seconds_per_item * share
            comm = allreduces * allreduce(ranks)
            step = compute + comm
            # Strong scaling: the same work on 1 rank; weak: the same work per rank.
            base = one if per_rank is None else seconds_per_item * per_rank
            eff = base / (ranks * step) if per_rank is None else base / step
            out.append([str(n), str(ranks), str(share), str(idle), f"{compute:.3f}", f"{comm:.3f}", f"{step:.3f}", f"{eff:.0%}"])
        return out

    if a.compare_run:
        measured, lines = read_metrics(Path(a.compare_run) / "pretrain/metrics.jsonl", ["step_time_s"])
        parts_measured, rounds = read_metrics(Path(a.compare_run) / "suder/metrics.jsonl", parts)
        print(f"Measured in {a.compare_run}: pretraining step {measured['step_time_s']:.3f} s (median of {lines} log lines), "
              f"SUDER round {sum(parts_measured.values()):.3f} s (sum of the median parts over {rounds} rounds: "
              + ", ".join(f"{k.split('/')[1][:-2]} {parts_measured[k]:.2f} s" for k in parts) + ")")
        print()
    table(f"Pretraining step, strong scaling (batch {batch})", rows_for(lambda r: batch, seq_seconds, 1))
    table(f"Pretraining step, weak scaling ({per_rank_weak} sequences per rank)",
          rows_for(lambda r: batch, seq_seconds, 1, per_rank=per_rank_weak))
    # A joint round allreduces each direction's gradient once.
    table(f"SUDER round, strong scaling ({items} prompts and {items} images)", rows_for(lambda r: items, item_seconds, 2),
          work="prompts (and images)", unit="round")


if __name__ == "__main__":
    main()
