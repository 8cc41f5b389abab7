"""What each channel option of ``corpus synth`` does to a baseline: the phone task's DNN
(``pipelines/baselines/phones-dnn.yaml``) trained and tested on the same corpus spoken
plain, through each effect alone (at probability 1) and through the ``--realism`` mix.

Each variant is the same 800 sentences and voices (same seed): only the channel differs.
Test = held-out voices through the same channel; frame accuracy against eSpeak's labels
(rescaled for speed and tempo) and the decoded PER (phone loop, acoustic scale tuned on
dev). The training is shortened (``--epochs``, default 8 instead of the baseline's 20) to
fit the machine; the table says so.

    python benchmarks/channel_baselines.py [--epochs 8] [--seed 0] [--workdir exp/channel]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VARIANTS: dict[str, list[str]] = {  # name -> kdpipe corpus synth phones options
    "plain": [],
    "reverb": ["--reverb-prob", "1"],
    "telephone": ["--telephone-prob", "1"],
    "speed": ["--speed-prob", "1"],
    "tempo": ["--tempo-prob", "1"],
    "mic": ["--mic-prob", "1"],
    "realism": ["--realism"],
}


def kdpipe(*args: str) -> str:
    cmd = [sys.executable, "-m", "kdpipe", *args]
    return subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT).stdout


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", default="exp/channel")
    ap.add_argument("--only", default="", help="comma-separated variant names")
    args = ap.parse_args()
    work = ROOT / args.workdir
    print(f"cores {os.cpu_count()}, load {os.getloadavg()[0]:.2f}", flush=True)
    rows = []
    for name, options in VARIANTS.items():
        if args.only and name not in args.only.split(","):
            continue
        corpus, feats, model = work / f"{name}-corpus", work / f"{name}.zarr", work / f"{name}-dnn"
        started = time.perf_counter()
        if not (corpus / "synth.json").is_file():
            kdpipe("corpus", "synth", "phones", str(corpus), "--size", "small", "-j", "1",
                   "--overwrite", *options)  # fmt: skip
        synth_s = time.perf_counter() - started
        if not (feats / "zarr.json").is_file():
            kdpipe("corpus", "prepare", str(corpus), "--out", str(feats), "--overwrite")
        started = time.perf_counter()
        if not (model / "card.json").is_file():
            kdpipe("learn", "--config", "pipelines/baselines/phones-dnn.yaml", "--corpus",
                   str(feats), "--out", str(model), "--seed", str(args.seed), "--epochs",
                   str(args.epochs), "-s", "num_threads=1", "--overwrite")  # fmt: skip
        train_s = time.perf_counter() - started
        ask = ["eval", "--model", str(model), "--corpus", str(feats), "--split", "test"]
        report = json.loads(kdpipe(*ask, "--json", "--decode", "--no-words"))
        rows.append((name, 100 * report["frame_accuracy"], 100 * report["decoded_per"],
                     synth_s, train_s))  # fmt: skip
        print(f"{name}: frame accuracy {rows[-1][1]:.1f}%, decoded PER {rows[-1][2]:.1f}%",
              flush=True)  # fmt: skip
    plain = {row[0]: row for row in rows}.get("plain")
    print(f"\nDNN 3 x 256 (+-5 frames), {args.epochs} epochs, seed {args.seed}; test = held-out "
          "voices through the same channel\n")  # fmt: skip
    print("| corpus | frame accuracy % | vs plain | decoded PER % | vs plain | synth s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, accuracy, per, synth_s, _ in rows:
        d_acc = "" if plain is None else f"{accuracy - plain[1]:+.1f}"
        d_per = "" if plain is None else f"{per - plain[2]:+.1f}"
        print(f"| {name} | {accuracy:.1f} | {d_acc} | {per:.1f} | {d_per} | {synth_s:.0f} |")
    print(f"\nload {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
