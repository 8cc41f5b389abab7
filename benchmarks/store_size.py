"""Bytes per frame of the target store, and the precision its value encodings lose.

Synthetic teacher posteriors over C = 2000 classes (``kdpipe.store.synth``: ``segments``,
speech-like, and ``iid``, independent frames), top-k for k = 4, 8, 16, written through
``StoreWriter`` with the default codecs; compared with dense float32 and with Kaldi's binary
``Posterior`` format (10 bytes per (index, value) pair + 5 per frame). Reports on-disk
bytes of the target arrays (indices, values, tail) per frame and of the whole store, and the
max / mean absolute error of the stored log-probs.

    .venv/bin/python benchmarks/store_size.py [--frames 131072]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from kdpipe.essence import Rule, topk
from kdpipe.store import spec
from kdpipe.store.reader import StoreReader
from kdpipe.store.spec import StoreMeta
from kdpipe.store.synth import synthetic_logprobs
from kdpipe.store.writer import StoreWriter

C = 2000
UTT_FRAMES = 400  # frames per synthetic utterance (4 s at 10 ms)


def _du(path: Path, sub: str = "") -> int:
    return sum(f.stat().st_size for f in (path / sub).rglob("*") if f.is_file())


def _frame_bytes(path: Path) -> int:
    """Bytes of frame/{indices,values,tail} chunk objects over all parts."""
    return sum(_du(p, "frame") for p in (path / "parts").iterdir() if p.is_dir())


def generate(kind: str, n: int) -> np.ndarray:
    """(n, C) float32 log-probs, made in batches (the segment model is sequential)."""
    out = np.empty((n, C), dtype=np.float32)
    for s in range(0, n, 16384):
        out[s : s + 16384] = synthetic_logprobs(min(16384, n - s), C, kind, seed=s)
    return out


def write(path: Path, lp: np.ndarray, k: int, values: str) -> float:
    meta = StoreMeta(
        labels=tuple(f"s{i}" for i in range(C)), rule=Rule("topk", {"k": k}), values=values
    )
    t = time.perf_counter()
    with StoreWriter(path, meta, part_frames=1 << 30) as w:
        for i, s in enumerate(range(0, len(lp), UTT_FRAMES)):
            w.add(f"u{i:06d}", frame=topk(lp[s : s + UTT_FRAMES], k))
    return time.perf_counter() - t


def errors(path: Path, lp: np.ndarray, values: str) -> tuple[float, float, float, float]:
    """Over kept entries: max and mean |stored - true| log-prob (true clipped to the
    encoding's floor), the fraction clipped; and max |kept mass + tail - 1| per row."""
    r = StoreReader(path)
    floor = spec.LOGP_MIN if values == "uint8" else spec.FLOAT16_FLOOR
    errs, sums, clipped, start = [], [], 0, 0
    for block in r.blocks():
        true = np.take_along_axis(
            lp[start : start + block.num_frames], block.frame.indices.astype(np.int64), 1
        )
        start += block.num_frames
        clipped += int((true < floor).sum())
        errs.append(np.abs(block.frame.logprobs() - np.maximum(true, floor)))
        sums.append(np.exp(block.frame.logprobs()).sum(1) + block.frame.tail_mass())
    e, s = np.concatenate(errs), np.concatenate(sums)
    return float(e.max()), float(e.mean()), clipped / e.size, float(np.abs(s - 1).max())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=131072)
    args = ap.parse_args()
    n = args.frames
    print(
        f"# target store size: {n} frames, C = {C}, top-k, default codecs "
        f"({spec.codecs()['compressors'][0].to_dict()['configuration']})"
    )
    print(f"dense float32: {4 * C} B/frame; dense float16: {2 * C} B/frame")
    print(
        f"{'data':9s} {'k':>3s} {'values':8s} {'frame B/f':>9s} {'store B/f':>9s} "
        f"{'kaldi B/f':>9s} {'x float32':>9s} {'max|dlogp|':>10s} {'mean|dlogp|':>11s} "
        f"{'clip %':>7s} {'max|mass-1|':>11s} {'write s':>7s}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("segments", "iid"):
            lp = generate(kind, n)
            p = np.exp(lp)
            top1 = float(p.max(1).mean())
            for k in (4, 8, 16):
                for values in ("uint8", "float16"):
                    path = Path(tmp) / f"{kind}-{k}-{values}.zarr"
                    dt = write(path, lp, k, values)
                    fb, sb = _frame_bytes(path) / n, _du(path) / n
                    emax, emean, clip, mass = errors(path, lp, values)
                    kaldi = 10 * k + 5
                    print(
                        f"{kind:9s} {k:3d} {values:8s} {fb:9.2f} {sb:9.2f} {kaldi:9d} "
                        f"{4 * C / sb:9.0f} {emax:10.4f} {emean:11.4f} {100 * clip:7.3f} "
                        f"{mass:11.4f} {dt:7.1f}"
                    )
            kept = np.sort(p, 1)[:, ::-1][:, :8].sum(1).mean()
            print(f"  ({kind}: mean top-1 prob {top1:.3f}, mean top-8 mass {kept:.3f})")
            del lp, p


if __name__ == "__main__":
    main()
