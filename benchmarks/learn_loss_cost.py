"""Cost of the sparse KD loss per step vs plain cross-entropy and vs a dense KD loss.

One process, the same student logits (N frames x C = 2000 classes), forward + backward of
the loss alone (the model is the same in all three, so only the loss differs), one thread,
median of ``--repeats`` after a warm-up:

- ``ce``: ``F.cross_entropy`` to hard labels;
- ``sparse``: ``kdpipe.losses.sparse_kd`` on top-k targets (k = 8, renorm and uniform tail);
- ``dense``: ``kdpipe.losses.dense_kd`` on the full (N, C) teacher distribution.

    python benchmarks/learn_loss_cost.py [--frames 8192] [--classes 2000] [--k 8]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from kdpipe.essence import topk
from kdpipe.learn.targets import pad_rows
from kdpipe.losses import dense_kd, sparse_kd
from kdpipe.testing.posteriors import segment_logprobs


def timed(fn, logits: torch.Tensor, repeats: int) -> float:
    times = []
    for i in range(repeats + 1):
        z = logits.detach().clone().requires_grad_(True)
        t0 = time.perf_counter()
        fn(z).mean().backward()
        if i:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=8192)
    ap.add_argument("--classes", type=int, default=2000)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    lp = segment_logprobs(a.frames, a.classes, seed=0)  # (N, C) teacher log-probs
    rows = topk(lp, a.k)
    idx, logp, tail = (torch.from_numpy(x) for x in pad_rows(rows))
    probs = torch.from_numpy(np.exp(lp))  # (N, C)
    y = torch.from_numpy(lp.argmax(1)).long()
    logits = torch.randn(a.frames, a.classes)
    res = {
        "ce": timed(lambda z: F.cross_entropy(z, y, reduction="none"), logits, a.repeats),
        "sparse (renorm)": timed(lambda z: sparse_kd(z, idx, logp, tail, 2.0), logits, a.repeats),
        "sparse (uniform)": timed(
            lambda z: sparse_kd(z, idx, logp, tail, 2.0, "uniform"), logits, a.repeats
        ),
        "dense": timed(lambda z: dense_kd(z, probs, 2.0), logits, a.repeats),
    }
    print(f"N = {a.frames} frames, C = {a.classes}, k = {a.k}, {a.threads} thread(s)")
    print(f"{'loss':18s} {'ms/step':>8s} {'/ ce':>6s} {'/ dense':>8s}")
    for name, t in res.items():
        print(f"{name:18s} {t * 1e3:8.2f} {t / res['ce']:6.2f} {t / res['dense']:8.2f}")


if __name__ == "__main__":
    main()
