"""Bytes per frame of the target store, and the precision its value encodings lose.

Synthetic teacher posteriors over C = 2000 classes (``kdpipe.testing.posteriors``: ``segments``,
speech-like, and ``iid``, independent frames), top-k for k = 4, 8, 16, written through
``StoreWriter`` with the default codecs; compared with dense float32 and with Kaldi's binary
``Posterior`` format (10 bytes per (index, value) pair + 5 per frame). Reports on-disk
bytes of the target arrays (indices, values, tail) per frame and of the whole store, and the
max / mean absolute error of the stored log-probs.

``--store PATH`` (repeatable) measures existing stores instead, e.g. real teacher output
written by ``kdpipe teach``: on-disk bytes per frame of each frame-level array, of the
target arrays (indices + values + tail), and of the whole store; ``--reference`` names a
float16 store of the same teacher and utterances, against which the stored uint8 values'
error is measured (float16 is itself within 2^-11 relative of the teacher).

    .venv/bin/python benchmarks/store_size.py [--frames 131072]
    .venv/bin/python benchmarks/store_size.py --store exp/t-top8.zarr --reference exp/t-f16.zarr
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from kdpipe.essence import Rule, topk
from kdpipe.store import coding, spec
from kdpipe.store.reader import StoreReader
from kdpipe.store.spec import StoreMeta
from kdpipe.store.writer import StoreWriter
from kdpipe.testing.posteriors import synthetic_logprobs

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
    floor = coding.LOGP_MIN if values == "uint8" else coding.FLOAT16_FLOOR
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


def _files(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else 0


def reference_errors(path: Path, ref: Path) -> tuple[float, float, float, float]:
    """Max and mean |uint8 - float16 reference| log-prob over entries of the same class at
    the same rank (reference clipped to -16), the fraction that matched, and the fraction
    of reference values below -16 (top-k stores: the first ranks of both are compared)."""
    a, b = StoreReader(path), StoreReader(ref)
    errs, matched, total, clipped = [], 0, 0, 0
    for block in a.blocks():
        other = b.read(list(block.ids)).frame
        w = min(block.frame.width or 0, other.width or 0)  # top-k: the first w ranks agree
        same = block.frame.indices[:, :w] == other.indices[:, :w]  # (R, w)
        true = other.logprobs()[:, :w][same]
        clipped += int((true < coding.LOGP_MIN).sum())
        got = block.frame.logprobs()[:, :w][same]
        errs.append(np.abs(got - np.maximum(true, coding.LOGP_MIN)))
        matched, total = matched + int(same.sum()), total + same.size
    e = np.concatenate(errs)
    return float(e.max()), float(e.mean()), matched / max(total, 1), clipped / max(e.size, 1)


def report_stores(paths: list[Path], ref: Path | None) -> None:
    """Bytes per frame of existing stores (frame level) and, given ``ref``, value errors."""
    print(
        f"{'store':34s} {'fmt':>3s} {'k':>3s} {'values':7s} {'idx':>6s} {'val':>6s} "
        f"{'tail':>5s} {'targets':>7s} {'hard':>5s} {'store':>6s} {'kaldi':>5s}  B/frame"
    )
    for path in paths:
        r = StoreReader(path)
        n, k = r.total_frames, r.meta.rule.width(r.meta.num_classes)
        parts = [path / "parts" / p.id / "frame" for p in r.parts]
        size = {a: sum(_files(p / a) for p in parts) / n for a in ("indices", "values", "tail")}
        hard = sum(_files(p / "hard") for p in parts) / n
        targets = sum(size.values())
        print(
            f"{path!s:34s} {r.record['version']:3d} {k!s:>3s} {r.meta.values:7s} "
            f"{size['indices']:6.2f} {size['values']:6.2f} {size['tail']:5.2f} {targets:7.2f} "
            f"{hard:5.2f} {_files(path) / n:6.2f} {10 * (k or 0) + 5:5d}"
        )
        if ref is not None and r.meta.values == "uint8":
            emax, emean, match, clip = reference_errors(path, ref)
            print(
                f"  vs float16 {ref}: max |dlogp| {emax:.4f}, mean {emean:.4f} nats "
                f"({100 * match:.1f} % of entries compared, {100 * clip:.2f} % below -16)"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=131072)
    ap.add_argument("--store", type=Path, action="append", help="measure this store instead")
    ap.add_argument("--reference", type=Path, help="float16 store of the same teacher")
    args = ap.parse_args()
    if args.store:
        return report_stores(args.store, args.reference)
    n = args.frames
    blosc = {
        a: coding.codecs(a, 1, 1 << 20)["compressors"][0].to_dict()["configuration"]
        for a in ("indices", "values")
    }
    print(
        f"# target store size: {n} frames, C = {C}, top-k, format {spec.VERSION}, codecs: "
        f"indices {blosc['indices']['cname']}-{blosc['indices']['clevel']} "
        f"{blosc['indices']['shuffle']}, other arrays {blosc['values']['shuffle']}"
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
