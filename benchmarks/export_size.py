"""Exporting a store to Kaldi: bytes per frame of the store vs the Kaldi ``Posterior``
archive of the same targets (what Kaldi's own ``copy-post`` writes: kdpipe's export is byte
for byte Kaldi's ``PosteriorHolder`` format, tests/store/test_export.py) and vs dense float
matrices, with export speed; all measured on the same targets in one run.

Synthetic speech-like teacher posteriors (``kdpipe.testing.posteriors.segment_logprobs``)
over C = 2000 classes, utterances of 400 frames, top-k for k = 4, 8, 16 with ``uint8``
values. Dense export is timed on a slice (it is C x 4 bytes a frame).

    .venv/bin/python benchmarks/export_size.py [--frames 65536]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from kdpipe.essence import Rule
from kdpipe.store.interop.export import export_store
from kdpipe.store.spec import StoreMeta
from kdpipe.store.writer import StoreWriter
from kdpipe.testing.posteriors import segment_logprobs

C = 2000
UTT_FRAMES = 400


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=65536)
    args = ap.parse_args()
    logp = segment_logprobs(args.frames, C, seed=0)  # (N, C)
    labels = tuple(f"s{i}" for i in range(C))
    print(f"{args.frames:,} frames, {C} classes, {UTT_FRAMES}-frame utterances\n")
    print("| k | store B/frame | Kaldi Posterior B/frame | ratio | dense float32 B/frame "
          "| export frames/s |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for k in (4, 8, 16):
            meta = StoreMeta(labels=labels, rule=Rule("topk", {"k": k}))
            store = root / f"top{k}.zarr"
            with StoreWriter(store, meta) as writer:
                for u, start in enumerate(range(0, args.frames, UTT_FRAMES)):
                    rows = meta.rule.apply(logp[start : start + UTT_FRAMES])
                    writer.add(f"utt{u:05d}", frame=rows)
            started = time.perf_counter()
            export_store(store, "kaldi", root / f"kaldi{k}", progress=False)
            seconds = time.perf_counter() - started
            ark = (root / f"kaldi{k}" / "targets.ark").stat().st_size
            parts = _du(store / "parts")
            dense_dir = root / f"dense{k}"
            if k == 8:
                export_store(store, "kaldi", dense_dir, dense=True, progress=False)
                dense = (dense_dir / "targets.ark").stat().st_size / args.frames
                dense_text = f"{dense:,.0f}"
            else:
                dense_text = "-"
            speed = args.frames / seconds
            print(f"| {k} | {parts / args.frames:.2f} | {ark / args.frames:.2f} | "
                  f"{ark / parts:.1f}x | {dense_text} | {speed:,.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
