"""Which tail rule to default to: the same student, the same top-k store, both rules.

A DNN teacher is trained on a synthetic frame corpus (``--labels`` classes, overlapping
class means so the teacher is uncertain); its top-k posteriors go into a store; students
(a smaller DNN) are distilled from it with ``tail: renorm`` and ``tail: uniform`` for a few
seeds, soft targets only (alpha = 1) and at T = 1 and 2, and scored on dev.

    python benchmarks/learn_tail_rule.py [--labels 24] [--k 2 4] [--seeds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from kdpipe.essence import Rule, as_logprobs
from kdpipe.learn.kd import KdRun, train_kd
from kdpipe.learn.kd_config import KdConfig
from kdpipe.learn.supervised import SupervisedRun, train_supervised
from kdpipe.learn.train_config import TrainConfig
from kdpipe.models import load_checkpoint
from kdpipe.store import StoreMeta, StoreWriter
from kdpipe.testing.corpora import make_feature_store


def teacher_store(root: Path, fs, model, k: int) -> str:
    meta = StoreMeta(
        labels=fs.labels.to_list(),
        rule=Rule("topk", {"k": k}),
        features={"fingerprint": fs.config.fingerprint, "config": fs.config.to_dict()},
        corpus_fingerprint=fs.fingerprint,
    )
    loc = root / f"top{k}.zarr"
    with StoreWriter(loc, meta) as w:
        for i, u in enumerate(fs.ids):
            if fs.splits[i] == "train":
                x = torch.from_numpy(fs.features(i))[None]
                with torch.no_grad():
                    z, _ = model(x, torch.tensor([x.shape[1]]))
                w.add(u, frame=meta.rule.apply(as_logprobs(z[0].numpy(), "logits")))
    return str(loc)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--labels", type=int, default=24)
    ap.add_argument("--k", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=6)
    a = ap.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        fs = make_feature_store(root / "f.zarr", labels=tuple(f"l{i}" for i in range(a.labels)),
                                per_split={"train": 60, "dev": 20}, num_mel_bins=16,
                                frames=(40, 80), separation=0.6)  # fmt: skip
        cfg = TrainConfig(epochs=8, batch_frames=1000, lr=5e-3, patience=0)
        big = {"hidden_dim": 128, "num_layers": 2, "left_context": 3, "right_context": 3}
        t = train_supervised(SupervisedRun(fs.location, "dnn", big, cfg), root / "t",
                             progress=False)  # fmt: skip
        print(f"teacher dev accuracy {t.best_dev_acc:.3f}", file=sys.stderr)
        model, _ = load_checkpoint(root / "t")
        model.eval()
        small = {"hidden_dim": 32, "num_layers": 1, "left_context": 2, "right_context": 2}
        print(f"{'k':>3s} {'T':>4s} {'renorm':>8s} {'uniform':>8s}")
        for k in a.k:
            store = teacher_store(root, fs, model, k)
            for temp in (1.0, 2.0):
                acc = {}
                for rule in ("renorm", "uniform"):
                    runs = []
                    for s in range(a.seeds):
                        tc = TrainConfig(
                            epochs=a.epochs, batch_frames=1000, lr=5e-3, patience=0, seed=s
                        )
                        kd = KdConfig(tail=rule, temperature=temp, verify=False)
                        run = KdRun(fs.location, "dnn", small, tc, targets=((store, 1.0),), kd=kd)
                        out = root / f"s-{k}-{temp}-{rule}-{s}"
                        runs.append(train_kd(run, out, progress=False).best_dev_acc)
                    acc[rule] = (statistics.mean(runs), float(np.std(runs)))
                print(f"{k:3d} {temp:4.1f} {acc['renorm'][0]:8.3f} {acc['uniform'][0]:8.3f}"
                      f"   (sd {acc['renorm'][1]:.3f} / {acc['uniform'][1]:.3f})")  # fmt: skip


if __name__ == "__main__":
    main()
