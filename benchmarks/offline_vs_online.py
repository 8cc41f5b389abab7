"""The two-phase promise, measured: distilling from a store vs with the teacher in the loop.

The same student, data, loss and seed, trained by kdpipe's own code paths:

- (a) **online**: ``learn --teacher-online`` (the teacher's forward pass inside every step,
  top-k kept on the device: how torchdistill and TextBrewer distil);
- (b) **store**: ``learn --targets`` from a store that ``teach --topk`` wrote once;
- (c) **hard**: ``learn`` on the hard labels alone.

Per-epoch training seconds come from each run's ``metrics.jsonl`` (the epoch's steps, not
the dev evaluation); the modes alternate (a, b, c, a, b, c, ...) so that machine noise hits
all three, and the median over epochs and rounds is reported. The total cost of N students
of E epochs is ``teach + N*E*b`` offline and ``N*E*a`` online; the break-even point is
``N*E = teach / (a - b)`` epochs of student training. Teachers have random weights: the time
of a forward pass does not depend on what the weights are.

Pairs: a BLSTM teacher (3 x 256) -> DNN student (2 x 128, +-5 frames), and a 3-member
ensemble (BLSTM 3 x 256, TDNN, DNN 3 x 512) -> a small DNN student (2 x 64).

    python benchmarks/offline_vs_online.py [--utts 200] [--classes 200] [--epochs 2] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from kdpipe.learn.runs import build_run, train_run
from kdpipe.teach.ensemble_yaml import ensemble_from_dict
from kdpipe.teach.run import teach
from kdpipe.testing.corpora import make_feature_store
from kdpipe.testing.teachers import make_teacher

TEACHERS = {
    "blstm": ("blstm", {"hidden_dim": 256, "num_layers": 3, "dropout": 0.0}),
    "tdnn": ("tdnn", {"hidden_dim": 512}),
    "dnn": ("dnn", {"hidden_dim": 512, "num_layers": 3}),
}
PAIRS = {
    "blstm -> dnn": (["blstm"], {"hidden_dim": 128, "num_layers": 2}),
    "ensemble of 3 -> small dnn": (["blstm", "tdnn", "dnn"], {"hidden_dim": 64, "num_layers": 2}),
}
TOPK = 8


def epoch_seconds(out: Path) -> list[float]:
    rows = (json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines())
    return [row["seconds"] for row in rows]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--utts", type=int, default=200)
    ap.add_argument("--classes", type=int, default=200)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="1: a shared machine's honest rate")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(f"cores {os.cpu_count()}, threads {a.threads}, load {os.getloadavg()[0]:.2f}")
    train = {"epochs": a.epochs, "patience": 0, "batch_frames": 4000, "num_threads": a.threads}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        names = tuple(f"c{i}" for i in range(a.classes))
        split = {"train": a.utts, "dev": 4}
        fs = make_feature_store(root / "feats.zarr", labels=names, per_split=split,
                                frames=(200, 300))  # fmt: skip
        frames = int(fs.num_frames[fs.indices("train")].sum())
        labels = fs.labels.to_list()
        paths = {name: make_teacher(root / name, fs, arch, labels=labels, config=cfg)
                 for name, (arch, cfg) in TEACHERS.items()}  # fmt: skip
        print(f"{a.utts} utterances, {frames:,} train frames, C = {a.classes}, top-{TOPK}")
        for pair, (members, student) in PAIRS.items():
            ens = ensemble_from_dict(
                {"members": [{"checkpoint": str(paths[m])} for m in members],
                 "rule": {"name": "topk", "params": {"k": TOPK}}}, "benchmark",
            )  # fmt: skip
            teach(ens, fs.location, root / f"warm-{len(members)}.zarr", progress=False)  # warm-up
            started = time.perf_counter()
            teach(ens, fs.location, root / f"{len(members)}.zarr", progress=False)
            teach_s = time.perf_counter() - started
            common = {"corpus": fs.location, "student": "dnn", "model": student, "train": train}
            runs = {
                "online": build_run({}, **common, kd={"alpha": 0.5}, teacher_online={
                    "model": [str(paths[m]) for m in members], "topk": TOPK}),
                "store": build_run({}, **common, kd={"alpha": 0.5},
                                   targets=[(str(root / f"{len(members)}.zarr"), 1.0)]),
                "hard": build_run({}, **common),
                # the store's batches with the hard-label loss alone: what streaming costs
                # apart from the KL term (store vs this: the KL term; this vs hard: the stream)
                "stream, hard loss": build_run({}, **common, kd={"alpha": 0.0},
                                               targets=[(str(root / f"{len(members)}.zarr"), 1.0)]),
            }  # fmt: skip
            seconds: dict[str, list[float]] = {mode: [] for mode in runs}
            for mode, run in runs.items():  # warm-up, not counted: first calls pay for setup
                train_run(run, root / f"warm-{mode}", progress=False, overwrite=True)
            for r in range(a.rounds):
                for mode, run in runs.items():
                    out = root / f"{pair}-{mode}-{r}".replace(" ", "_").replace(",", "")
                    train_run(run, out, progress=False)
                    seconds[mode] += epoch_seconds(out)
            med = {mode: statistics.median(values) for mode, values in seconds.items()}
            gap = med["online"] - med["store"]
            even = teach_s / gap if gap > 0 else float("inf")
            rows.append((pair, teach_s, med, even))
            print(f"{pair}: teach {teach_s:.1f} s; epoch online {med['online']:.2f} s, "
                  f"store {med['store']:.2f} s, hard {med['hard']:.2f} s, the store's batches "
                  f"with the hard loss alone {med['stream, hard loss']:.2f} s")  # fmt: skip
    print()
    print("Time ratios: store / online (target <= 0.5 for blstm -> dnn); hard / store is the")
    print("store's speed relative to hard labels (target >= 0.97): the stream's share is")
    print("hard / (store's batches, hard loss), the KL term's (store's batches, hard loss) /")
    print("store.")
    print()
    head = ["pair", "teach once (s)", "epoch online (s)", "epoch from store (s)",
            "epoch hard (s)", "store / online", "hard / store", "of it: the stream",
            "of it: the KL term", "break-even (student epochs)",
            "10 students x 20 epochs: offline / online"]  # fmt: skip
    print("| " + " | ".join(head) + " |")
    print("|---|" + "---:|" * (len(head) - 1))
    for pair, teach_s, med, even in rows:
        total = (teach_s + 200 * med["store"]) / (200 * med["online"])
        cells = [pair, f"{teach_s:.1f}", f"{med['online']:.2f}", f"{med['store']:.2f}",
                 f"{med['hard']:.2f}", f"{med['store'] / med['online']:.3f}",
                 f"{med['hard'] / med['store']:.3f}",
                 f"{med['hard'] / med['stream, hard loss']:.3f}",
                 f"{med['stream, hard loss'] / med['store']:.3f}", f"{even:.1f}",
                 f"{total:.3f}"]  # fmt: skip
        print("| " + " | ".join(cells) + " |")
    print(f"\ncores {os.cpu_count()}, load {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
