"""Training throughput of a student fed from the target store vs from in-memory tensors.

Both modes train the same student on the same batches in the same order (one epoch of a
``TargetStream``), with the KD loss, in one process, alternating A/B/A/B so machine noise
hits both: ``stream`` reads the store and the features while the model trains (in a
read-ahead thread, learn's default ``kd.workers: 0``; ``--workers N``: N DataLoader worker
processes); ``memory`` first materialises every batch of the epoch as tensors, then
times only the training loop; ``cached`` is the stream after an epoch has filled its
example cache (``kd.cache_mb``: what ``learn`` streams from its second epoch on). The ratio
stream / memory is the cost of streaming (target: at least 0.95).

    python benchmarks/learn_throughput.py [--utts 300] [--student lstm] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from learn_common import build

from kdpipe.learn.kd import kd_loss
from kdpipe.learn.stream import TargetStream
from kdpipe.models import build_model
from kdpipe.precision import autocast

CONFIGS = {
    "lstm": {"hidden_dim": 128, "num_layers": 2},
    "dnn": {"hidden_dim": 256, "num_layers": 3},
    "tdnn": {},
    "dnn_pool": {"hidden_dim": 256, "num_layers": 3},  # the fastest student (utterance level)
}
LEVELS = {"dnn_pool": "utt"}  # the rest are frame level


def run_epoch(
    model, opt, batches, device: torch.device | None = None, precision: str = "fp32"
) -> tuple[int, float]:
    """One epoch of KD steps (``batches`` moved to ``device`` when given, under the
    ``precision`` autocast); frames and seconds, synchronised at the end on CUDA."""
    frames, t0 = 0, time.perf_counter()
    for batch in batches:
        if device is not None:
            batch = batch.to(device)
        with autocast(device or torch.device("cpu"), precision):
            logits, out_lengths = model(batch.x, batch.lengths)
            loss, _, _ = kd_loss(logits, out_lengths, batch, alpha=0.9, temperature=2.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        frames += int(batch.lengths.sum())
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize()
    return frames, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--utts", type=int, default=300)
    ap.add_argument("--classes", type=int, default=2000)
    ap.add_argument("--student", default="lstm", choices=sorted(CONFIGS))
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--workers", type=int, default=0,
                    help="DataLoader worker processes: 0 is learn's default (kd.workers): "
                    "the stream reads ahead in a thread of the training process")  # fmt: skip
    a = ap.parse_args()
    torch.set_num_threads(1)
    print(f"cores {os.cpu_count()}, 1 thread, load {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        level = LEVELS.get(a.student, "frame")
        feats, store = build(Path(tmp), a.utts, a.classes, level=level)
        print(f"built {a.utts} utterances, C = {a.classes}, in {time.perf_counter() - t0:.0f} s")
        stream = TargetStream([store], feats, batch_frames=4000, seed=0, num_workers=a.workers,
                              level=level)  # fmt: skip
        torch.manual_seed(0)
        model = build_model(a.student, 40, a.classes, CONFIGS[a.student])
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        in_memory = list(stream.loader())  # the same epoch, as tensors
        # what learn streams from its second epoch on: the examples kept (kd.cache_mb)
        cached = TargetStream([store], feats, batch_frames=4000, seed=0, level=level,
                              cache_bytes=1 << 30)  # fmt: skip
        list(cached)  # the first epoch fills the cache
        sources = {"stream": stream.loader, "cached": cached.loader, "memory": lambda: in_memory}
        best = {mode: 0.0 for mode in sources}
        for r in range(a.rounds):
            for mode, source in sources.items():
                frames, secs = run_epoch(model, opt, source())
                best[mode] = max(best[mode], frames / secs)
                print(f"round {r + 1} {mode:6s} {frames / secs:10,.0f} frames/s ({secs:.1f} s)")
        ratio = best["stream"] / best["memory"]
        cached_ratio = best["cached"] / best["memory"]
        print(f"{a.student}: stream {best['stream']:,.0f} fr/s, cached {best['cached']:,.0f} "
              f"fr/s, memory {best['memory']:,.0f} fr/s; ratio {ratio:.3f} (first epoch), "
              f"{cached_ratio:.3f} (later epochs, from the cache); load "
              f"{os.getloadavg()[0]:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
