"""Supervised baselines on the synthetic corpora: accuracy (mean +- std over seeds) and time.

Runs ``kdpipe learn --config pipelines/baselines/X.yaml`` and ``kdpipe eval`` for each
config and seed, on held-out voices (the test split), and prints a markdown table.

    python benchmarks/baselines.py --seeds 0,1,2 [--workdir exp/baselines] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNS = [  # (config, feature store, metric)
    ("phones-blstm", "data/feats/phones-small.zarr", "frame_accuracy"),
    ("phones-dnn", "data/feats/phones-small.zarr", "frame_accuracy"),
    ("keywords-cnn", "data/feats/keywords-small.zarr", "clip_accuracy"),
    ("keywords-dnn", "data/feats/keywords-small.zarr", "clip_accuracy"),
]


def kdpipe(*args: str) -> str:
    cmd = [sys.executable, "-m", "kdpipe", *args]
    return subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT).stdout


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--workdir", default="exp/baselines")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", default="", help="comma-separated config names")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    for name, corpus, metric in RUNS:
        if args.only and name not in args.only.split(","):
            continue
        accs, pers, secs, params = [], [], [], 0
        for seed in seeds:
            out = Path(args.workdir) / f"{name}-s{seed}"
            t0 = time.perf_counter()
            if not (ROOT / out / "card.json").is_file():
                kdpipe(
                    "learn",
                    "--config",
                    f"pipelines/baselines/{name}.yaml",
                    "--corpus",
                    corpus,
                    "--out",
                    str(out),
                    "--seed",
                    str(seed),
                    "-s",
                    f"num_threads={args.threads}",
                    "--overwrite",
                )
            secs.append(time.perf_counter() - t0)
            rep = json.loads(
                kdpipe("eval", "--model", str(out), "--corpus", corpus, "--split", "test", "--json")
            )
            accs.append(100 * rep[metric])
            if "collapsed_per" in rep:
                pers.append(100 * rep["collapsed_per"])
            card = json.loads((ROOT / out / "card.json").read_text())
            params = card["training"]["parameters"]
            print(f"{name} seed {seed}: {metric} {accs[-1]:.2f}", flush=True)
        rows.append((name, params, metric, accs, pers, secs))
    print("\n| model | parameters | test accuracy % (held-out voices) | PER % | time / seed |")
    print("| --- | ---: | --- | --- | ---: |")
    for name, params, metric, accs, pers, secs in rows:
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        per = (
            f"{statistics.mean(pers):.1f} +- {statistics.stdev(pers) if len(pers) > 1 else 0:.1f}"
            if pers
            else "-"
        )
        print(
            f"| {name} | {params:,} | {metric} {statistics.mean(accs):.1f} +- {sd:.1f} | {per} | "
            f"{statistics.mean(secs):.0f} s |"
        )


if __name__ == "__main__":
    main()
