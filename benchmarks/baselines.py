"""Supervised baselines on the synthetic corpora: accuracy (mean +- std over seeds) and time.

Runs ``kdpipe learn --config pipelines/baselines/X.yaml`` and ``kdpipe eval`` for each
config and seed, on held-out voices (the test split), and prints a markdown table; frame
models are also decoded (``kdpipe eval --decode``: the decoded PER, and the WER where the
corpus has a lexicon).

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
        accs, pers, decoded, wers, secs, params = [], [], [], [], [], 0
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
            frames = metric == "frame_accuracy"  # frame models are decoded too
            ask = ["eval", "--model", str(out), "--corpus", corpus, "--split", "test", "--json"]
            rep = json.loads(kdpipe(*ask, *(["--decode"] if frames else [])))
            accs.append(100 * rep[metric])
            for key, values in (("collapsed_per", pers), ("decoded_per", decoded),
                                ("decoded_wer", wers)):  # fmt: skip
                if key in rep:
                    values.append(100 * rep[key])
            card = json.loads((ROOT / out / "card.json").read_text())
            params = card["training"]["parameters"]
            print(f"{name} seed {seed}: {metric} {accs[-1]:.2f}", flush=True)
        rows.append((name, params, metric, accs, wers, decoded, pers, secs))
    print("\n| model | parameters | test accuracy % (held-out voices) | WER % | decoded PER % "
          "| collapsed PER % | time / seed |")  # fmt: skip
    print("| --- | ---: | --- | --- | --- | --- | ---: |")
    for name, params, metric, accs, wers, decoded, pers, secs in rows:
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        rates = " | ".join(_pm(values) for values in (wers, decoded, pers))
        print(
            f"| {name} | {params:,} | {metric} {statistics.mean(accs):.1f} +- {sd:.1f} | "
            f"{rates} | {statistics.mean(secs):.0f} s |"
        )


def _pm(values: list[float]) -> str:
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.1f} +- {sd:.1f}"


if __name__ == "__main__":
    main()
