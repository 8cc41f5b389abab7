"""Sequential streaming read speed of the target store, side by side with plain zarr and .npy.

One store of synthetic top-8 targets (uint16 indices, uint8 log-prob codes, uint8 tail;
C = 2000, speech-like ``segments`` posteriors, utterances of 100-700 frames) in parts of
``--part-frames`` frames, the default format and codecs. Six readers, warm page cache,
``--repeats`` rounds of all of them in turn (interleaved, so that a change in the machine's
load hits all alike); the median round is reported:

- ``kdpipe``: ``StoreReader(path).blocks()`` (opening the store and reading its index,
  whole utterances, ~1M frames per block, index and range checks and the decoding of
  row-delta values included; chunks decoded by ``store/chunkio.py``'s threads);
- ``kdpipe-open``: the same through a reader opened once before the rounds, as ``learn``
  streams a store epoch after epoch;
- ``zarr``: the same arrays read directly with zarr in chunk-aligned 1M-row slices (the
  values as stored: row deltas, not decoded);
- ``zarr-v1``: the same numbers as format 1 stored them (value codes, every array
  bit-shuffled, blosc's own block size, 65536-row chunks) read with zarr: what the smaller
  format 2 costs in decoding speed;
- ``npy``: the indices, value codes and tail as raw ``.npy`` files read with ``np.load``;
- ``bound``: the store's chunk files read and blosc-decoded by kdpipe's number of threads
  and nothing else: what this machine allows the codecs (it swings with the machine's load,
  so the ratio kdpipe / bound says more than kdpipe's own rate).

    .venv/bin/python benchmarks/store_read.py [--frames 4194304]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from kdpipe.essence import Rule, topk
from kdpipe.sparse import SparseRows
from kdpipe.store.coding import encode_logp, log_codebook
from kdpipe.store.reader import StoreReader
from kdpipe.store.spec import StoreMeta
from kdpipe.store.writer import StoreWriter
from kdpipe.testing.posteriors import synthetic_logprobs

C, K = 2000, 8
BASE = 1 << 18  # distinct synthetic frames (2 chunks); longer stores repeat them


def make_rows(n: int) -> SparseRows:
    """(n rows) stored-encoding top-8 rows: BASE realistic frames tiled to n."""
    parts = [
        topk(synthetic_logprobs(16384, C, "segments", seed=s), K) for s in range(0, BASE, 16384)
    ]
    base = SparseRows.concat(parts)
    reps = -(-n // BASE)
    return SparseRows(
        values=np.tile(encode_logp(base.values, "uint8"), (reps, 1))[:n],
        tail=np.tile(encode_logp(base.tail, "uint8", tail=True), reps)[:n],
        num_classes=C,
        indices=np.tile(base.indices.astype(np.uint16), (reps, 1))[:n],
        codebook=log_codebook(),
    )


def build(root: Path, n: int, part_frames: int) -> tuple[Path, SparseRows]:
    rows = make_rows(n)
    meta = StoreMeta(labels=tuple(f"s{i}" for i in range(C)), rule=Rule("topk", {"k": K}))
    rng = np.random.default_rng(0)
    with StoreWriter(root / "t.zarr", meta, part_frames=part_frames) as w:
        s, i = 0, 0
        while s < n:
            t = min(n - s, int(rng.integers(100, 700)))
            w.add(f"utt{i:07d}", frame=rows.slice_rows(s, s + t))
            s, i = s + t, i + 1
    import zarr
    from zarr.codecs import BloscCodec, Crc32cCodec

    v1 = zarr.open_group(root / "v1.zarr", mode="w")
    for name in ("indices", "values", "tail"):
        data = getattr(rows, name)
        np.save(root / f"{name}.npy", data)
        v1.create_array(
            name,
            data=data,
            chunks=(1 << 16, *data.shape[1:]),
            compressors=[BloscCodec(cname="zstd", clevel=5, shuffle="bitshuffle"), Crc32cCodec()],
        )
    return root / "t.zarr", rows


def read_kdpipe(path: Path | StoreReader) -> int:
    """Stream the store (opening it first unless given an open reader)."""
    reader = path if isinstance(path, StoreReader) else StoreReader(path)
    n = 0
    for block in reader.blocks(1 << 20):
        n += block.frame.indices.shape[0]
    return n


def read_zarr(path: Path) -> int:
    import zarr

    root = zarr.open_group(path, mode="r")
    n = 0
    for _, part in sorted(root["parts"].groups()):
        arrays = [part[f"frame/{a}"] for a in ("indices", "values", "tail")]
        rows = arrays[0].shape[0]
        step = (1 << 20) // arrays[0].chunks[0] * arrays[0].chunks[0]
        for a in range(0, rows, step):
            got = [arr[a : a + step] for arr in arrays]
            n += len(got[0])
    return n


def read_bound(path: Path) -> int:
    """The machine's bound for this reader: the same chunk files read and blosc-decoded by
    as many threads as kdpipe uses, nothing else (no checksums, no result array)."""
    from concurrent.futures import ThreadPoolExecutor

    from numcodecs import Blosc

    from kdpipe.store.chunkio import THREADS

    arrays = ("indices", "values", "tail")
    files = [f for a in arrays for f in path.glob(f"parts/*/frame/{a}/c/**/*")]
    blosc = Blosc()

    def one(f: Path) -> int:
        return len(blosc.decode(f.read_bytes()[:-4])) if f.is_file() else 0

    with ThreadPoolExecutor(THREADS) as ex:
        nbytes = sum(ex.map(one, files))
    return nbytes // (K * 2 + K + 1)  # frames: uint16 ids, uint8 codes and tail per frame


def read_zarr_v1(path: Path) -> int:
    import zarr

    g = zarr.open_group(path, mode="r")
    arrays = [g[a] for a in ("indices", "values", "tail")]
    n, step = 0, 1 << 20
    for a in range(0, arrays[0].shape[0], step):
        got = [arr[a : a + step] for arr in arrays]
        n += len(got[0])
    return n


def read_npy(root: Path) -> int:
    got = [np.load(root / f"{a}.npy") for a in ("indices", "values", "tail")]
    return len(got[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=1 << 22)
    ap.add_argument("--part-frames", type=int, default=1 << 20)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        path, _ = build(root, args.frames, args.part_frames)
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        v1 = sum(f.stat().st_size for f in (root / "v1.zarr").rglob("*") if f.is_file())
        npy = sum((root / f"{a}.npy").stat().st_size for a in ("indices", "values", "tail"))
        print(
            f"# {args.frames} frames top-{K} of C={C} in {len(StoreReader(path).parts)} parts,"
            f" built in {time.perf_counter() - t:.0f} s"
        )
        print(
            f"store {size / args.frames:.2f} B/frame on disk; format 1 codecs "
            f"{v1 / args.frames:.2f}; npy {npy / args.frames:.2f}"
        )
        opened = StoreReader(path)  # as ``learn`` reads it: opened once, streamed each epoch
        fns = {
            "kdpipe": lambda: read_kdpipe(path),
            "kdpipe-open": lambda: read_kdpipe(opened),
            "zarr": lambda: read_zarr(path),
            "zarr-v1": lambda: read_zarr_v1(root / "v1.zarr"),
            "npy": lambda: read_npy(root),
            "bound": lambda: read_bound(path),
        }
        times: dict[str, list[float]] = {k: [] for k in fns}
        for _ in range(args.repeats):
            for name, fn in fns.items():
                t = time.perf_counter()
                n = fn()
                assert n == args.frames or (name == "bound" and n >= args.frames), (name, n)
                times[name].append(time.perf_counter() - t)
        opens = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            StoreReader(path)
            opens.append(time.perf_counter() - t)
        rounds = np.array([times[k] for k in fns])  # (6, repeats) seconds
        ratio = rounds[2] / rounds[0]  # kdpipe / zarr speed, per round
        fps = {k: args.frames / float(np.median(v)) for k, v in times.items()}
        for k, v in fps.items():
            each = " ".join(f"{args.frames / t / 1e6:.1f}" for t in times[k])
            print(f"{k:11s} {v / 1e6:7.1f} M frames/s (median; rounds: {each})")
        print(
            f"kdpipe / zarr = {np.median(ratio):.2f} (median of rounds; "
            f"{ratio.min():.2f}-{ratio.max():.2f}); "
            f"kdpipe / npy = {np.median(rounds[4] / rounds[0]):.3f}; "
            f"zarr / zarr-v1 = {np.median(rounds[3] / rounds[2]):.2f}; "
            f"kdpipe / bound = {np.median(rounds[5] / rounds[0]):.2f}; "
            f"kdpipe-open / zarr = {np.median(rounds[2] / rounds[1]):.2f}"
        )
        print(
            f"kdpipe opens the store (index of {len(StoreReader(path))} utterances) in "
            f"{1e3 * np.median(opens):.0f} ms (median), included above"
        )


if __name__ == "__main__":
    main()
