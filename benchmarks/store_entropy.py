"""How far the top-k target store is from the information in its streams, and what other
encodings of the same numbers cost in bytes and in decoding time.

Reads the top-k rows of a store (``--store PATH``: fixed layout, uint8 values, e.g. what
``kdpipe teach --topk 8`` wrote) in stored order, or makes synthetic ``segments`` rows as
``store_size.py`` does (``kdpipe.testing.posteriors``, C = 2000, written and read back
through ``StoreWriter`` / ``StoreReader``), and prints:

1. **Entropy estimates** of the index, value and tail streams under simple models that
   condition on the previous frame, in bytes per frame. Each model gives two numbers:
   ``static``, the empirical (conditional) entropy with the statistics known in advance
   (a lower bound for any code using that model, but optimistic for many contexts), and
   ``adaptive``, the length of a one-pass adaptive code (Krichevsky-Trofimov counts, one
   set per context, alphabet = the symbols the stream uses): achievable, learning cost
   included.
2. **Candidate encodings**, each stream chunked in ``131072`` rows and compressed by
   blosc (zstd unless named, whole-chunk blocks up to 2 MiB, as format 2): bytes per
   frame, encode speed (transform + compression) and single-thread decode speed
   (decompression + whatever numpy work a reader needs to get back the stored-order
   arrays), every one checked to round-trip before it is reported. Families: format 2
   and other codecs of the same arrays; k-major (transposed) chunks; ids sorted by class
   within rows plus the permutation back to rank order (ranks, or one Lehmer index of
   k! per row); **slots** (``slot_layout``): an id keeps its slot while it stays in the
   top-k, a new id takes a freed slot, so each slot column is constant over runs of
   frames (stored as is k-major, or as start bits + the new ids), plus the permutation
   from slot to rank order; and joint encodings whose values are not in rank order
   (checked "up to ties": equal codes may come back in another order, or "as sets":
   rows left in slot order). Ragged streams (new ids, changed rows) are chunked in
   ``131072`` of their own entries, not per frame chunk.
3. The candidates as a markdown table, and combinations of one index, one value and one
   tail encoding: format 2, the size / decode-speed front, the smallest that decode at
   least as fast as format 2, and the fastest within the target (issue 18: 12 B/frame).

Single thread throughout (``numcodecs.blosc.set_nthreads(1)``; run with
``OMP_NUM_THREADS=1``); speeds are the best of ``--repeats`` rounds.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/store_entropy.py [--frames 131072]
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/store_entropy.py --store exp/cd-blstm-top8.zarr
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numcodecs.blosc as nblosc
import numpy as np

from kdpipe.essence import Rule, topk
from kdpipe.sparse import SparseRows
from kdpipe.store import coding
from kdpipe.store.reader import StoreReader
from kdpipe.store.spec import StoreMeta
from kdpipe.store.writer import StoreWriter
from kdpipe.testing.posteriors import synthetic_logprobs

C = 2000  # synthetic classes, as store_size.py
UTT_FRAMES = 400  # frames per synthetic utterance, as store_size.py
CHUNK_ROWS = 131072  # format 2's chunk rows
_LGAMMA = np.frompyfunc(math.lgamma, 1, 1)  # log Gamma elementwise (object results)
STEP = 1.05  # the combination table's steps in decode speed (timings move ~5 % by run)
TARGET = 12.0  # issue 18: top-8 targets (indices + values + tail) in B/frame
SHUFFLES = {"no": nblosc.NOSHUFFLE, "byte": nblosc.SHUFFLE, "bit": nblosc.BITSHUFFLE}


# ---------------------------------------------------------------------------- the rows


@dataclass(frozen=True)
class Rows:
    """The stored top-k rows of one store, in stored order."""

    name: str
    indices: np.ndarray  # (R, k) uint16 class ids, descending value order
    codes: np.ndarray  # (R, k) uint8 value codes, non-increasing along each row
    tail: np.ndarray  # (R,) uint8 tail codes
    on_disk: dict[str, float]  # B/frame of each frame array's chunk files (indices, ...)

    @property
    def num_rows(self) -> int:
        return len(self.tail)


def _files(path: Path) -> int:
    """Bytes of the files under ``path`` (store_size.py's measure of an array on disk)."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else 0


def read_rows(path: Path, name: str | None = None) -> Rows:
    """The frame-level top-k rows of the store at ``path`` and its arrays' bytes on disk."""
    r = StoreReader(path)
    if r.meta.values != "uint8" or r.meta.rule.name != "topk":
        raise SystemExit(f"{path}: needs a top-k store with uint8 values")
    idx, codes, tail = [], [], []
    for block in r.blocks():
        rows = block.frame
        assert rows is not None and rows.indices is not None
        idx.append(rows.indices.astype(np.uint16))
        codes.append(rows.values)
        tail.append(rows.tail)
    parts = [path / "parts" / p.id / "frame" for p in r.parts]
    n = r.total_frames
    on_disk = {a: sum(_files(p / a) for p in parts) / n for a in ("indices", "values", "tail")}
    return Rows(
        name or str(path), np.concatenate(idx), np.concatenate(codes), np.concatenate(tail), on_disk
    )


def synthetic_rows(kind: str, n: int, k: int) -> Rows:
    """``store_size.py``'s synthetic rows (the same batches and seeds as its ``generate``),
    top-k taken batch by batch (no (n, C) array), written with the default codecs and
    read back."""
    tops = []
    for s in range(0, n, 16384):
        lp = synthetic_logprobs(min(16384, n - s), C, kind, seed=s)  # (B, C)
        tops.append(topk(lp, k))
    top = SparseRows.concat(tops)
    meta = StoreMeta(labels=tuple(f"s{i}" for i in range(C)), rule=Rule("topk", {"k": k}))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.zarr"
        with StoreWriter(path, meta, part_frames=1 << 30) as w:
            for i, a in enumerate(range(0, n, UTT_FRAMES)):
                w.add(f"u{i:06d}", frame=top.slice_rows(a, min(a + UTT_FRAMES, n)))
        return read_rows(path, f"synthetic {kind}, {n} frames, top-{k} of {C}")


# ----------------------------------------------------------------------- entropy models


def code_bits(sym: np.ndarray, ctx: np.ndarray | None = None) -> tuple[float, float]:
    """(static, adaptive) total bits of coding the symbols ``sym`` given ``ctx`` (the same
    shape, or None: order 0). Static: sum over contexts of n_c H(sym | c), the empirical
    conditional entropy. Adaptive: Krichevsky-Trofimov (counts + 1/2) sequential code per
    context over the alphabet the whole stream uses: its length depends on the counts
    only, sum_c [lnG(n_c + A/2) - lnG(A/2)] - sum_{c,s} [lnG(n_cs + 1/2) - lnG(1/2)]."""
    s = np.asarray(sym).reshape(-1).astype(np.int64)
    if not s.size:
        return 0.0, 0.0
    c = np.zeros_like(s) if ctx is None else np.asarray(ctx).reshape(-1).astype(np.int64)
    _, s_inv = np.unique(s, return_inverse=True)
    _, c_inv = np.unique(c, return_inverse=True)
    a = int(s_inv.max()) + 1
    _, n_cs = np.unique(c_inv * a + s_inv, return_counts=True)
    n_c = np.bincount(c_inv)
    n_c = n_c[n_c > 0].astype(np.float64)
    n_cs = n_cs.astype(np.float64)
    static = float((n_c * np.log2(n_c)).sum() - (n_cs * np.log2(n_cs)).sum())
    nats = (gammaln(n_c + a / 2) - math.lgamma(a / 2)).sum() - (
        gammaln(n_cs + 0.5) - math.lgamma(0.5)
    ).sum()
    return static, float(nats / math.log(2))


def gammaln(x: np.ndarray) -> np.ndarray:
    """log Gamma of each element (float64)."""
    return _LGAMMA(x).astype(np.float64)


def prev_positions(idx: np.ndarray, lag: int = 1) -> np.ndarray:
    """(R, k) int64 position of each id in row r - ``lag``, -1 where absent (or no row)."""
    r, k = idx.shape
    out = np.full((r, k), -1, dtype=np.int64)
    if r > lag:
        eq = idx[lag:, :, None] == idx[:-lag, None, :]  # (R - lag, k, k)
        out[lag:] = np.where(eq.any(2), eq.argmax(2), -1)
    return out


def lehmer_table(k: int) -> np.ndarray:
    """(k!, k) uint8: row L is the permutation with Lehmer index L (lexicographic order)."""
    return np.array(list(itertools.permutations(range(k))), dtype=np.uint8)


def lehmer_index(ranks: np.ndarray) -> np.ndarray:
    """(R,) int64 Lehmer index of each row of ``ranks`` (R, k), a permutation of 0..k-1."""
    r, k = ranks.shape
    out = np.zeros(r, dtype=np.int64)
    for j in range(k - 1):
        smaller = (ranks[:, j + 1 :] < ranks[:, j : j + 1]).sum(1)
        out += smaller * math.factorial(k - 1 - j)
    return out


def sort_rows(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ids sorted within each row (R, k) and ranks (R, k) uint8 such that
    ``take_along_axis(sorted, ranks, 1) == idx``."""
    order = np.argsort(idx, axis=1, kind="stable")  # (R, k)
    ranks = np.argsort(order, axis=1).astype(np.uint8)
    return np.take_along_axis(idx, order, 1), ranks


@dataclass(frozen=True)
class Estimate:
    stream: str
    model: str
    static: float  # B/frame
    adaptive: float  # B/frame
    whole: bool  # codes the whole stream (else a component, or the order alone)


def _sum(*bits: tuple[float, float]) -> tuple[float, float]:
    return sum(b[0] for b in bits), sum(b[1] for b in bits)


def estimates(rows: Rows) -> list[Estimate]:
    """Entropy estimates of the index, value and tail streams (see the module docstring)."""
    idx, q, tail = rows.indices.astype(np.int64), rows.codes.astype(np.int64), rows.tail
    n, k = idx.shape
    j = np.broadcast_to(np.arange(k), (n, k))  # (R, k) rank of each entry
    out: list[Estimate] = []

    def add(stream: str, model: str, bits: tuple[float, float], whole: bool = True) -> None:
        out.append(Estimate(stream, model, bits[0] / 8 / n, bits[1] / 8 / n, whole))

    add("indices", "order 0: each id alone", code_bits(idx))
    add("indices", "id given its rank j", code_bits(idx, j))
    pos = prev_positions(idx)  # (R, k)
    inp = pos >= 0
    flag = code_bits(inp, j)
    where = code_bits(pos[inp], j[inp])
    new_ids = code_bits(idx[~inp])
    add("indices", "prev-frame model: in prev row? | j", flag, False)
    add("indices", "  + position in prev row | j (entries in it)", where, False)
    add("indices", "  + new id, order 0 (entries not in it)", new_ids, False)
    ordered = _sum(flag, where, new_ids)
    add("indices", "= ordered row given the previous row", ordered)
    pos2 = prev_positions(idx, 2)
    tok = np.where(inp, pos, np.where(pos2 >= 0, k + pos2, 2 * k))  # (R, k) source token
    tok_prev = np.concatenate([np.full((n, 1), 2 * k + 1), tok[:, :-1]], 1)  # rank j-1's
    fresh = tok == 2 * k
    two = _sum(code_bits(tok, j * (2 * k + 2) + tok_prev), code_bits(idx[fresh]))
    add("indices", "two rows back: source | (j, source of j-1) + new ids", two)
    # set + order: which previous entries stay (a k-bit mask), the new ids as a set
    # (order 0, minus log2 m! for their order), then the order given the set
    mask = (np.where(inp, 1 << np.maximum(pos, 0), 0)).sum(1)  # (R,)
    m = (~inp).sum(1)  # (R,) new entries per row
    fact = float(sum(math.log2(math.factorial(int(x))) for x in m))
    mask_bits = code_bits(mask)
    set_bits = (mask_bits[0] + new_ids[0] - fact, mask_bits[1] + new_ids[1] - fact)
    add("indices", "set given prev set: kept mask + new ids as a set", set_bits, False)
    smaller_new = ((idx[:, :, None] > idx[:, None, :]) & ~inp[:, None, :]).sum(2)
    token = np.where(inp, pos, k + smaller_new)  # prev position, or k + rank among new
    pattern = (token << (4 * np.arange(k))).sum(1)  # (R,) the row's order, one symbol
    order_prev = code_bits(pattern, mask)
    add("indices", "order given set, prev order: row pattern | mask", order_prev, False)
    add("indices", "= set + order given the previous row", _sum(set_bits, order_prev))
    _, ranks = sort_rows(idx)
    lehmer = lehmer_index(ranks)
    same = np.concatenate([[False], lehmer[1:] == lehmer[:-1]])
    add("indices", "class order -> rank order: Lehmer index, order 0", code_bits(lehmer), False)
    perm_flag = _sum(code_bits(same), code_bits(lehmer[~same]))
    add("indices", "  the same: same as prev row? + Lehmer when not", perm_flag, False)
    slotted, slot, start = slot_layout(rows.indices)
    smask = (start * (1 << np.arange(k))).sum(1)  # (R,) which slots take a new id
    smask_bits = code_bits(smask)
    add("indices", "slots: which slots take a new id (k-bit mask), order 0", smask_bits, False)
    slot_l = code_bits(lehmer_index(slot))
    add("indices", "slot order -> rank order: Lehmer index, order 0", slot_l, False)
    slot_prev = np.concatenate([np.full((1, k), k), slot[:-1]]).astype(np.int64)
    slot_j = code_bits(slot, j * (k + 1) + slot_prev)
    add("indices", "  per entry: slot of rank j | (j, slot of rank j in prev row)", slot_j, False)
    add("indices", "= slots: mask + new ids + Lehmer", _sum(smask_bits, new_ids, slot_l))
    del slotted

    add("values", "code given rank j", code_bits(q, j))
    d = coding.delta_encode(rows.codes).astype(np.int64)  # (R, k)
    add("values", "row delta d_j given j", code_bits(d, j))
    q_up = np.concatenate([np.full((n, 1), 255), q[:, :-1]], 1)  # code of rank j-1
    add("values", "d_j given (j, q_(j-1) // 16)", code_bits(d, j * 16 + q_up // 16))
    qprev = np.full((n, k), 256, dtype=np.int64)  # same class's code in the previous row
    qprev[1:] = np.where(inp[1:], np.take_along_axis(q[:-1], np.maximum(pos[1:], 0), 1), 256)
    add("values", "code given (j, same class's code in prev row)", code_bits(q, j * 257 + qprev))
    mixed = _sum(code_bits(q[inp] - qprev[inp], j[inp]), code_bits(d[~inp], j[~inp]))
    add("values", "q - q_prev | j if in prev row, else d_j | j", mixed)
    guess = np.where(inp, np.clip(q_up - qprev, -8, 54) + 8, 63)
    add("values", "d_j given (j, q_(j-1) - q_prev clipped)", code_bits(d, j * 64 + guess))
    unordered = _sum(code_bits(q[inp], qprev[inp]), code_bits(q[~inp]))
    add("values", "no rank: q | same class's q in prev row; new ones order 0", unordered, False)

    t = tail.astype(np.int64)
    t_prev = np.concatenate([[256], t[:-1]])
    add("tail", "order 0", code_bits(t))
    add("tail", "given the previous tail", code_bits(t, t_prev))
    add("tail", "difference to the previous tail, order 0", code_bits((t - t_prev) % 256))
    return out


def print_estimates(rows: Rows, est: list[Estimate]) -> float:
    """Prints section 1; returns the bound (adaptive, B/frame)."""
    n, k = rows.indices.shape
    today = sum(rows.on_disk.values())
    print(f"\n## 1. Entropy estimates ({rows.name}: {n} rows, k = {k})")
    print(f"{'stream':8s} {'model':56s} {'static':>7s} {'adaptive':>8s}  B/frame")
    for e in est:
        print(f"{e.stream:8s} {e.model:56s} {e.static:7.2f} {e.adaptive:8.2f}")
    best: dict[str, tuple[float, float]] = {}
    for s in ("indices", "values", "tail"):
        whole = [e for e in est if e.stream == s and e.whole]
        best[s] = (min(e.static for e in whole), min(e.adaptive for e in whole))
    st, ad = sum(b[0] for b in best.values()), sum(b[1] for b in best.values())
    disk = ", ".join(f"{a} {b:.2f}" for a, b in rows.on_disk.items())
    print(
        f"bound (best model per stream): static {st:.2f}, adaptive {ad:.2f} B/frame "
        f"(indices {best['indices'][1]:.2f}, values {best['values'][1]:.2f}, tail "
        f"{best['tail'][1]:.2f} adaptive); on disk today {today:.2f} ({disk}): "
        f"gap {today - ad:.2f} B/frame to the adaptive bound"
    )
    no_order = [e for e in est if e.model.startswith(("set given", "no rank"))]
    if len(no_order) == 2:
        st2 = sum(e.static for e in no_order) + best["tail"][0]
        ad2 = sum(e.adaptive for e in no_order) + best["tail"][1]
        print(
            f"without the order within rows (a set per row, the values by class): static "
            f"{st2:.2f}, adaptive {ad2:.2f} B/frame"
        )
    return ad


# --------------------------------------------------------------------------- candidates


@dataclass(frozen=True)
class Codec:
    """Blosc zstd over chunks of ``CHUNK_ROWS`` rows of a stream."""

    shuffle: str = "bit"  # "no" | "byte" | "bit"
    clevel: int = 5  # blosc clevel (5 = zstd 9: format 2)
    cname: str = "zstd"  # blosc's compressor: zstd, lz4, lz4hc
    kmajor: bool = False  # transpose each (rows, w) chunk to (w, rows) before compressing
    raw: bool = False  # k-major: the decoder takes the chunks k-major (no transpose back)


@dataclass(frozen=True)
class Packed:
    chunks: list[bytes]
    shape: tuple[int, ...]
    dtype: np.dtype
    codec: Codec


def _blosc(codec: Codec, nbytes: int) -> nblosc.Blosc:
    block = min(max(nbytes, 1), coding.MAX_BLOCK_BYTES)
    return nblosc.Blosc(codec.cname, codec.clevel, SHUFFLES[codec.shuffle], block)


def pack(a: np.ndarray, codec: Codec) -> Packed:
    chunks = []
    for s in range(0, max(len(a), 1), CHUNK_ROWS):
        c = a[s : s + CHUNK_ROWS]
        if codec.kmajor:
            c = c.T
        c = np.ascontiguousarray(c)
        chunks.append(bytes(_blosc(codec, c.nbytes).encode(c)))
    return Packed(chunks, a.shape, a.dtype, codec)


def unpack(p: Packed) -> np.ndarray:
    out = np.empty(p.shape, dtype=p.dtype)
    dec = nblosc.Blosc()
    for i, buf in enumerate(p.chunks):
        part = out[i * CHUNK_ROWS : (i + 1) * CHUNK_ROWS]
        if p.codec.raw:  # chunk i's rows, k-major, where its rows are in ``out``
            dec.decode(buf, out=part)
        elif p.codec.kmajor:
            t = np.empty(part.shape[::-1], dtype=p.dtype)
            dec.decode(buf, out=t)
            part[...] = t.T
        else:
            dec.decode(buf, out=part)
    return out


Streams = dict[str, tuple[np.ndarray, Codec]]
Arrays = dict[str, np.ndarray]


@dataclass(frozen=True)
class Candidate:
    """One encoding of some of the arrays: ``what`` is ``indices``, ``values``, ``tail``
    or ``indices+values`` (both arrays from one encoding)."""

    what: str
    name: str
    encode: Callable[[Rows], Streams]
    decode: Callable[[Arrays], tuple[np.ndarray, ...]]  # the arrays of ``what``
    check: str = "exact"  # or "ties": equal codes may come back in another order; "set":
    # each row's (class, code) pairs, in any order


@dataclass(frozen=True)
class Result:
    cand: Candidate
    sizes: dict[str, float]  # B/frame per stream
    encode_mfs: float  # M frames/s
    decode_mfs: float
    check: str  # how it round-trips

    @property
    def bpf(self) -> float:
        return sum(self.sizes.values())


Encode = Callable[[Rows], Streams]
Decode = Callable[[Arrays], tuple[np.ndarray, ...]]


def _ids(codec: Codec) -> Encode:
    return lambda r: {"x": (r.indices, codec)}


def _deltas(codec: Codec) -> Encode:
    return lambda r: {"x": (coding.delta_encode(r.codes), codec)}


def _codes(codec: Codec) -> Encode:
    return lambda r: {"x": (r.codes, codec)}


def _tail(codec: Codec) -> Encode:
    return lambda r: {"x": (r.tail, codec)}


def _as_is(a: Arrays) -> tuple[np.ndarray, ...]:
    return (a["x"],)


def _undelta(a: Arrays) -> tuple[np.ndarray, ...]:
    return (coding.delta_decode(a["x"]),)


def _same(a: np.ndarray) -> np.ndarray:
    """(R,) bool: row r equals row r - 1 (row 0: False)."""
    out = np.zeros(len(a), dtype=bool)
    out[1:] = (a[1:] == a[:-1]).all(1)
    return out


GATHER_ROWS = 8192  # rows per step of the gathers: their index arrays stay in cache


def _gather(src: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """(R, k) ``src[r, ranks[r, j]]``: stored-order ids from rows in another order (class
    or slot order) and, for each rank j, where its entry is. Blocks of ``GATHER_ROWS``
    rows, whose intp indices stay in cache (~25 % faster than one fancy index)."""
    n, k = src.shape
    out = np.empty_like(src)
    base = np.arange(0, GATHER_ROWS * k, k, dtype=np.intp)[:, None]
    flat = np.empty((GATHER_ROWS, k), dtype=np.intp)
    for a in range(0, n, GATHER_ROWS):
        b = min(a + GATHER_ROWS, n)
        fl = flat[: b - a]
        np.add(ranks[a:b], base[: b - a], out=fl)
        np.take(src[a:b].reshape(-1), fl, out=out[a:b], mode="clip")
    return out


def _gather_kmajor(src: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """The same from ``src`` holding each chunk of ``CHUNK_ROWS`` rows k-major (as
    ``Codec(kmajor=True, raw=True)`` decodes it): entry (r, s) of a chunk of n_c rows
    starting at row c is at ``c * k + s * n_c + (r - c)``."""
    n, k = ranks.shape
    out = np.empty((n, k), dtype=src.dtype)
    flat = np.empty((GATHER_ROWS, k), dtype=np.intp)
    flat_src = src.reshape(-1)
    for c in range(0, n, CHUNK_ROWS):
        n_c = min(CHUNK_ROWS, n - c)
        col = np.arange(c * k, c * k + n_c, dtype=np.intp)[:, None]  # (n_c, 1)
        for a in range(0, n_c, GATHER_ROWS):
            b = min(a + GATHER_ROWS, n_c)
            fl = flat[: b - a]
            np.multiply(ranks[c + a : c + b], np.intp(n_c), out=fl)
            fl += col[a:b]
            np.take(flat_src, fl, out=out[c + a : c + b], mode="clip")
    return out


def slot_layout(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each row's ids put in k slots so that an id present in consecutive rows keeps its
    slot (chunk by chunk: each chunk's first row takes slots in rank order); a new id
    takes the slot of an id that left (the i-th new one by rank, the i-th that left by
    rank). Returns ``slotted`` (R, k) ids in slot order, ``slot`` (R, k) uint8 the slot of
    rank j (a permutation per row: ``_gather(slotted, slot) == idx``), and ``start``
    (R, k) bool: slot s holds a new id in row r. Every entry's slot is its root's rank in
    the chunk's first row, found by pointer jumping (log2 of the chunk's rows passes)."""
    n, k = idx.shape
    pos = prev_positions(idx)  # (R, k)
    first = np.zeros(n, dtype=bool)
    first[::CHUNK_ROWS] = True
    pos[first] = -1
    cont = pos >= 0
    rr, jj = np.nonzero(cont)
    parent = np.arange(n * k, dtype=np.int64).reshape(n, k)  # roots: themselves
    parent[rr, jj] = (rr - 1) * k + pos[rr, jj]
    ref = np.zeros((n, k), dtype=bool)
    ref[rr - 1, pos[rr, jj]] = True  # entries of row r - 1 that row r continues
    left = ~ref[:-1] & ~first[1:, None]  # (R - 1, k) entries of row r - 1 gone in row r
    new = ~cont & ~first[:, None]
    flat = parent.reshape(-1)
    flat[np.flatnonzero(new)] = np.flatnonzero(left)  # equal counts, row by row
    while True:
        nxt = flat[flat]
        if np.array_equal(nxt, flat):
            break
        flat = nxt
    slot = (flat % k).reshape(n, k).astype(np.uint8)
    slotted = np.empty_like(idx)
    np.put_along_axis(slotted, slot.astype(np.intp), idx, 1)
    start = np.zeros((n, k), dtype=bool)
    np.put_along_axis(start, slot.astype(np.intp), ~cont, 1)
    return slotted, slot, start


def _row_gather(a: np.ndarray, which: np.ndarray) -> np.ndarray:
    """Rows ``a[which]`` of a (M, k) array, moved as one opaque item each."""
    n, k = len(which), a.shape[1]
    items = np.ascontiguousarray(a).view(f"V{k * a.itemsize}").reshape(-1)
    return items[which].view(a.dtype).reshape(n, k)


def _kept_rows(same: np.ndarray) -> np.ndarray:
    """(R,) intp: for each row, the stored row it copies (the last row not flagged same)."""
    return np.cumsum(~same, dtype=np.intp) - 1


def explicit_slots(slotted: np.ndarray, start: np.ndarray, new_ids: Codec) -> Streams:
    """The slot layout as its changes, chunk by chunk: the start flags k-major (slot by
    slot along the rows) as bits, and the new ids in the same order."""
    n = len(slotted)
    bits, new = [], []
    for c in range(0, n, CHUNK_ROWS):
        st = np.ascontiguousarray(start[c : c + CHUNK_ROWS].T)  # (k, n_c)
        bits.append(np.packbits(st.reshape(-1), bitorder="little"))
        new.append(np.ascontiguousarray(slotted[c : c + CHUNK_ROWS].T)[st])
    return {
        "bits": (np.concatenate(bits), Codec("bit")),
        "new": (np.concatenate(new), new_ids),
    }


def slot_ids(a: Arrays, n: int, k: int) -> np.ndarray:
    """Ids in slot order, each chunk k-major (``_gather_kmajor``'s layout), from
    ``explicit_slots`` (a slot's id is its latest new id: one cumulative sum of the start
    flags per chunk, every slot starts in the chunk's first row) or as stored."""
    if "slotted" in a:
        return a["slotted"].reshape(-1)
    out = np.empty(n * k, dtype=a["new"].dtype)
    used = 0
    for c in range(0, n, CHUNK_ROWS):
        n_c = min(CHUNK_ROWS, n - c)
        st = np.unpackbits(a["bits"][c * k // 8 : (c + n_c) * k // 8], bitorder="little")
        at = np.cumsum(st, dtype=np.intp)  # (k n_c,) new ids so far, slot-major
        new = a["new"][used : used + int(at[-1])]
        at -= 1
        np.take(new, at, out=out[c * k : (c + n_c) * k], mode="clip")
        used += int(at[-1]) + 1
    return out


def index_candidates(k: int) -> list[Candidate]:
    table = lehmer_table(k)
    table_items = table.view(f"V{k}").reshape(-1) if k in (1, 2, 4, 8) else None

    def ranks_of(lehmer: np.ndarray) -> np.ndarray:
        if table_items is not None:
            return table_items[lehmer].view(np.uint8).reshape(len(lehmer), k)
        return table[lehmer]

    out = []
    for lvl in (5, 6, 7, 8):
        base = " (format 2)" if lvl == 5 else ""
        out.append(
            Candidate(
                "indices",
                f"zstd-{lvl} noshuffle{base}",
                _ids(Codec("no", lvl)),
                _as_is,
            )
        )
    for sh in ("no", "bit"):
        out.append(
            Candidate(
                "indices",
                f"lz4hc-5 {sh}shuffle",
                _ids(Codec(sh, cname="lz4hc")),
                _as_is,
            )
        )
    for sh in ("no", "byte", "bit"):
        out.append(
            Candidate(
                "indices",
                f"k-major (transposed) {sh}shuffle",
                _ids(Codec(sh, kmajor=True)),
                _as_is,
            )
        )
    out.append(
        Candidate(
            "indices",
            "byte planes: low noshuffle + high bitshuffle",
            lambda r: {
                "lo": ((r.indices & 255).astype(np.uint8), Codec("no")),
                "hi": ((r.indices >> 8).astype(np.uint8), Codec("bit")),
            },
            lambda a: (a["lo"].astype(np.uint16) | (a["hi"].astype(np.uint16) << 8),),
        )
    )
    out.append(
        Candidate(
            "indices",
            "same-row flag + changed rows noshuffle",
            lambda r: {
                "same": (_same(r.indices).astype(np.uint8), Codec("bit")),
                "rows": (r.indices[~_same(r.indices)], Codec("no")),
            },
            lambda a: (_row_gather(a["rows"], _kept_rows(a["same"].view(bool))),),
        )
    )

    def sorted_enc(ids: Codec, perm: str, gaps: bool = False) -> Callable[[Rows], Streams]:
        def enc(r: Rows) -> Streams:
            s, ranks = sort_rows(r.indices)
            if gaps:
                s = s.copy()
                s[:, 1:] = np.diff(s, axis=1)
            out: Streams = {"sorted": (s, ids)}
            if perm == "ranks":
                out["ranks"] = (ranks, Codec("bit"))
            else:
                out["lehmer"] = (lehmer_index(ranks).astype(np.uint16), Codec(perm))
            return out

        return enc

    def sorted_dec(gaps: bool = False) -> Callable[[Arrays], tuple[np.ndarray, ...]]:
        def dec(a: Arrays) -> tuple[np.ndarray, ...]:
            s = np.cumsum(a["sorted"], axis=1, dtype=np.uint16) if gaps else a["sorted"]
            ranks = a["ranks"] if "ranks" in a else ranks_of(a["lehmer"])
            return (_gather(s, ranks),)

        return dec

    for sh in ("no", "byte", "bit"):
        out.append(
            Candidate(
                "indices",
                f"class-sorted ids {sh}shuffle + ranks uint8 bitshuffle",
                sorted_enc(Codec(sh), "ranks"),
                sorted_dec(),
            )
        )
    out.append(
        Candidate(
            "indices",
            "class-sorted ids k-major noshuffle + ranks uint8 bitshuffle",
            sorted_enc(Codec("no", kmajor=True), "ranks"),
            sorted_dec(),
        )
    )
    for sh in ("no", "byte"):
        out.append(
            Candidate(
                "indices",
                f"class-sorted ids noshuffle + Lehmer uint16 {sh}shuffle",
                sorted_enc(Codec("no"), sh),
                sorted_dec(),
            )
        )
    for sh in ("no", "byte", "bit"):
        out.append(
            Candidate(
                "indices",
                f"class-sorted gaps {sh}shuffle + Lehmer uint16 noshuffle",
                sorted_enc(Codec(sh), "no", gaps=True),
                sorted_dec(gaps=True),
            )
        )

    def setflag_enc(r: Rows) -> Streams:
        s, ranks = sort_rows(r.indices)
        same = _same(s)
        return {
            "same": (same.astype(np.uint8), Codec("bit")),
            "sorted": (s[~same], Codec("no")),
            "lehmer": (lehmer_index(ranks).astype(np.uint16), Codec("no")),
        }

    def setflag_dec(a: Arrays) -> tuple[np.ndarray, ...]:
        s = _row_gather(a["sorted"], _kept_rows(a["same"].view(bool)))
        return (_gather(s, ranks_of(a["lehmer"])),)

    out.append(
        Candidate(
            "indices",
            "same-set flag + changed sets noshuffle + Lehmer noshuffle",
            setflag_enc,
            setflag_dec,
        )
    )

    def slots_enc(ids: Codec, perm: str) -> Callable[[Rows], Streams]:
        def enc(r: Rows) -> Streams:
            slotted, slot, _ = slot_layout(r.indices)
            out: Streams = {"slotted": (slotted, ids)}
            if perm == "ranks":
                out["ranks"] = (slot, Codec("bit"))
            else:
                out["lehmer"] = (lehmer_index(slot).astype(np.uint16), Codec(perm))
            return out

        return enc

    def slots_dec(a: Arrays) -> tuple[np.ndarray, ...]:
        ranks = a["ranks"] if "ranks" in a else ranks_of(a["lehmer"])
        return (_gather_kmajor(a["slotted"], ranks),)

    for sh in ("no", "byte"):
        for perm in ("byte", "ranks"):
            what = "ranks uint8 bitshuffle" if perm == "ranks" else "Lehmer uint16 byteshuffle"
            out.append(
                Candidate(
                    "indices",
                    f"slots: ids by slot k-major {sh}shuffle + {what}",
                    slots_enc(Codec(sh, kmajor=True, raw=True), perm),
                    slots_dec,
                )
            )

    def starts_enc(new_ids: Codec) -> Callable[[Rows], Streams]:
        def enc(r: Rows) -> Streams:
            slotted, slot, start = slot_layout(r.indices)
            return {
                **explicit_slots(slotted, start, new_ids),
                "lehmer": (lehmer_index(slot).astype(np.uint16), Codec("byte")),
            }

        return enc

    def starts_dec(a: Arrays) -> tuple[np.ndarray, ...]:
        ranks = ranks_of(a["lehmer"])
        return (_gather_kmajor(slot_ids(a, len(ranks), ranks.shape[1]), ranks),)

    for sh in ("no", "byte"):
        out.append(
            Candidate(
                "indices",
                f"slots: start bits k-major + new ids {sh}shuffle + Lehmer byteshuffle",
                starts_enc(Codec(sh)),
                starts_dec,
            )
        )
    return out


def value_candidates() -> list[Candidate]:
    out = []
    for lvl in (5, 6, 7, 8):
        base = " (format 2)" if lvl == 5 else ""
        out.append(
            Candidate(
                "values",
                f"row deltas zstd-{lvl} bitshuffle{base}",
                _deltas(Codec("bit", lvl)),
                _undelta,
            )
        )
    for lvl, sh in ((1, "no"), (1, "bit"), (3, "bit")):
        out.append(
            Candidate(
                "values",
                f"row deltas zstd-{lvl} {sh}shuffle",
                _deltas(Codec(sh, lvl)),
                _undelta,
            )
        )
    out.append(
        Candidate(
            "values",
            "row deltas noshuffle",
            _deltas(Codec("no")),
            _undelta,
        )
    )
    for sh in ("no", "bit"):
        out.append(
            Candidate(
                "values",
                f"row deltas k-major {sh}shuffle",
                _deltas(Codec(sh, kmajor=True)),
                _undelta,
            )
        )
    for cname in ("lz4", "lz4hc"):
        out.append(
            Candidate(
                "values",
                f"row deltas {cname}-5 bitshuffle",
                _deltas(Codec("bit", cname=cname)),
                _undelta,
            )
        )
    out.append(
        Candidate(
            "values",
            "plain codes bitshuffle (format 1)",
            _codes(Codec("bit")),
            _as_is,
        )
    )
    return out


def tail_candidates() -> list[Candidate]:
    def tdelta(t: np.ndarray) -> np.ndarray:
        d = t.copy()
        d[1:] -= t[:-1]  # uint8, modulo 256
        return d

    return [
        Candidate(
            "tail",
            "zstd-5 bitshuffle (format 2)",
            _tail(Codec("bit")),
            _as_is,
        ),
        Candidate("tail", "noshuffle", _tail(Codec("no")), _as_is),
        Candidate(
            "tail",
            "lz4hc-5 bitshuffle",
            _tail(Codec("bit", cname="lz4hc")),
            _as_is,
        ),
        Candidate(
            "tail",
            "temporal delta (mod 256) bitshuffle",
            lambda r: {"x": (tdelta(r.tail), Codec("bit"))},
            lambda a: (np.cumsum(a["x"], dtype=np.uint8),),
        ),
    ]


def canonical(idx: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows reordered by (code descending, class id ascending): the stored order up to the
    order among equal codes."""
    key = ((255 - q.astype(np.uint32)) << 16) | idx.astype(np.uint32)  # (R, k) distinct
    o = np.argsort(key, axis=1)
    return np.take_along_axis(idx, o, 1), np.take_along_axis(q, o, 1)


SORT8 = (  # an optimal sorting network for 8 inputs: 19 compare-exchanges in 6 layers
    (0, 2), (1, 3), (4, 6), (5, 7), (0, 4), (1, 5), (2, 6), (3, 7), (0, 1), (2, 3),
    (4, 5), (6, 7), (2, 4), (3, 5), (1, 4), (3, 6), (1, 2), (3, 4), (5, 6),
)  # fmt: skip


def sort_columns(key: np.ndarray) -> np.ndarray:
    """(k, n) keys sorted along the first axis, column by column: the 8-input sorting
    network on contiguous rows (two ufunc passes per compare-exchange, blocks of
    ``GATHER_ROWS`` columns that stay in cache); np.sort for other k."""
    k, n = key.shape
    if k != 8:
        return np.sort(key, axis=0)
    out = np.empty_like(key)
    for a in range(0, n, GATHER_ROWS):
        rows = [key[i, a : a + GATHER_ROWS].copy() for i in range(k)]
        spare = np.empty_like(rows[0])
        for i, j in SORT8:
            np.minimum(rows[i], rows[j], out=spare)
            np.maximum(rows[i], rows[j], out=rows[j])
            rows[i], spare = spare, rows[i]
        for i in range(k):
            out[i, a : a + GATHER_ROWS] = rows[i]
    return out


def joint_candidates() -> list[Candidate]:
    def enc(r: Rows, ids: Codec, vals: Codec) -> Streams:
        s, ranks = sort_rows(r.indices)
        qs = np.take_along_axis(r.codes, np.argsort(ranks, axis=1), 1)  # class order
        return {"sorted": (s, ids), "q": (qs, vals)}

    def dec(a: Arrays) -> tuple[np.ndarray, ...]:
        s, qs = a["sorted"], a["q"]
        o = np.argsort(255 - qs, axis=1, kind="stable")  # descending codes, ties by id
        return np.take_along_axis(s, o, 1), np.take_along_axis(qs, o, 1)

    out = []
    for sh in ("bit", "no"):
        out.append(
            Candidate(
                "indices+values",
                f"class-sorted ids noshuffle + codes in class order {sh}shuffle, no permutation",
                partial(enc, ids=Codec("no"), vals=Codec(sh)),
                dec,
                check="ties",
            )
        )

    def slots_enc(explicit: bool) -> Callable[[Rows], Streams]:
        def enc(r: Rows) -> Streams:
            slotted, slot, start = slot_layout(r.indices)
            v = np.empty_like(r.codes)
            np.put_along_axis(v, slot.astype(np.intp), r.codes, 1)  # (R, k) slot order
            dv = v.copy()
            dv[1:] -= v[:-1]  # the slot's previous code (mod 256); absolute in chunk row 0
            dv[::CHUNK_ROWS] = v[::CHUNK_ROWS]
            ids: Streams = (
                explicit_slots(slotted, start, Codec("no"))
                if explicit
                else {"slotted": (slotted, Codec("no", kmajor=True, raw=True))}
            )
            return {**ids, "dv": (dv, Codec("bit", kmajor=True, raw=True))}

        return enc

    def slots_dec(order: bool) -> Callable[[Arrays], tuple[np.ndarray, ...]]:
        def dec(a: Arrays) -> tuple[np.ndarray, ...]:
            n, k = a["dv"].shape
            ids = slot_ids(a, n, k)
            dv = a["dv"].reshape(-1)
            out_i = np.empty((n, k), dtype=ids.dtype)
            out_q = np.empty((n, k), dtype=np.uint8)
            for c in range(0, n, CHUNK_ROWS):
                n_c = min(CHUNK_ROWS, n - c)
                ids_t = ids[c * k : (c + n_c) * k].reshape(k, n_c)
                v_t = np.cumsum(dv[c * k : (c + n_c) * k].reshape(k, n_c), axis=1, dtype=np.uint8)
                if order:  # descending codes, ties by class id
                    key = (255 - v_t).astype(np.uint32) << 16
                    key |= ids_t
                    key = sort_columns(key)
                    out_i[c : c + n_c] = key.T
                    out_q[c : c + n_c] = 255 - (key.T >> 16)
                else:
                    out_i[c : c + n_c] = ids_t.T
                    out_q[c : c + n_c] = v_t.T
            return out_i, out_q

        return dec

    for explicit in (False, True):
        ids = "start bits + new ids" if explicit else "ids by slot k-major noshuffle"
        for order in (True, False):
            how = (
                "rows sorted back to descending order (sorting network)"
                if order
                else "rows left in slot order"
            )
            out.append(
                Candidate(
                    "indices+values",
                    f"slots: {ids} + codes by slot, temporal delta; {how}",
                    slots_enc(explicit),
                    slots_dec(order),
                    check="ties" if order else "set",
                )
            )
    return out


def measure(rows: Rows, cand: Candidate, repeats: int) -> Result:
    n = rows.num_rows
    enc_t, packed = math.inf, {}
    for _ in range(max(1, repeats // 2)):
        t = time.perf_counter()
        streams = cand.encode(rows)
        packed = {name: pack(a, codec) for name, (a, codec) in streams.items()}
        enc_t = min(enc_t, time.perf_counter() - t)
    dec_t = math.inf
    got: tuple[np.ndarray, ...] = ()
    for _ in range(repeats):
        t = time.perf_counter()
        got = cand.decode({name: unpack(p) for name, p in packed.items()})
        dec_t = min(dec_t, time.perf_counter() - t)
    want: tuple[np.ndarray, ...] = {
        "indices": (rows.indices,),
        "values": (rows.codes,),
        "tail": (rows.tail,),
        "indices+values": (rows.indices, rows.codes),
    }[cand.what]
    check = "exact"
    if cand.check != "exact":
        moved = (~(got[0] == rows.indices).all(1)).mean()
        want = canonical(rows.indices, rows.codes)
        if cand.check == "set":
            got = canonical(got[0], got[1])
            check = (
                f"same (class, code) pairs per row, {100 * moved:.1f} % of rows in another order"
            )
        else:
            check = f"exact up to ties: {100 * moved:.2f} % of rows reorder equal codes"
    for g, w in zip(got, want, strict=True):
        if g.dtype != w.dtype or not np.array_equal(g, w):
            raise AssertionError(f"{cand.what} / {cand.name}: does not round-trip")
    sizes = {name: sum(map(len, p.chunks)) / n for name, p in packed.items()}
    return Result(cand, sizes, n / enc_t / 1e6, n / dec_t / 1e6, check)


def print_results(results: list[Result]) -> None:
    print(f"{'array':14s} {'encoding':64s} {'B/frame':>7s} {'enc M/s':>7s} {'dec M/s':>7s}")
    for r in results:
        parts = " + ".join(f"{v:.2f}" for v in r.sizes.values()) if len(r.sizes) > 1 else ""
        print(
            f"{r.cand.what:14s} {r.cand.name:64s} {r.bpf:7.2f} {r.encode_mfs:7.2f} "
            f"{r.decode_mfs:7.1f}  {parts}{'  ' + r.check if r.check != 'exact' else ''}"
        )


@dataclass(frozen=True)
class Combo:
    names: tuple[str, ...]
    bpf: float
    decode_mfs: float  # the parts decoded in turn, one thread
    encode_mfs: float


def combos(results: list[Result]) -> list[Combo]:
    by = {w: [r for r in results if r.cand.what == w] for w in ("indices", "values", "tail")}
    out = []
    pairs: list[tuple[Result, Result | None]] = [
        (i, v) for i in by["indices"] for v in by["values"]
    ]
    pairs += [(r, None) for r in results if r.cand.what == "indices+values"]
    for first, second in pairs:
        for t in by["tail"]:
            parts = [p for p in (first, second, t) if p is not None]
            out.append(
                Combo(
                    tuple(f"{p.cand.what}: {p.cand.name}" for p in parts),
                    sum(p.bpf for p in parts),
                    1 / sum(1 / p.decode_mfs for p in parts),
                    1 / sum(1 / p.encode_mfs for p in parts),
                )
            )
    return out


def print_markdown(rows: Rows, results: list[Result], bound: float, load: tuple) -> None:
    cs = combos(results)
    base = next(c for c in cs if all("format 2" in x for x in c.names) and len(c.names) == 3)
    print(f"\n## 3. Markdown ({rows.name})\n")
    print(
        f"{os.cpu_count()} cores, load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} "
        f"(1, 5, 15 min) at the start; one thread; speeds: best of the rounds.\n"
    )
    print("| array | encoding | B/frame | encode M frames/s | decode M frames/s |")
    print("|-------|----------|--------:|------------------:|------------------:|")
    for r in results:
        extra = f" ({r.check})" if r.check != "exact" else ""
        print(
            f"| {r.cand.what} | {r.cand.name}{extra} | {r.bpf:.2f} | {r.encode_mfs:.2f} | "
            f"{r.decode_mfs:.1f} |"
        )
    print(
        f"\nTargets (indices + values + tail), combinations; format 2 re-encoded here: "
        f"{base.bpf:.2f} B/frame (on disk {sum(rows.on_disk.values()):.2f}), decode "
        f"{base.decode_mfs:.1f} M frames/s; adaptive entropy bound {bound:.2f}.\n"
    )
    print("| combination | B/frame | decode M frames/s | encode M frames/s | vs format 2 |")
    print("|-------------|--------:|------------------:|------------------:|------------:|")
    front = pareto(cs, base)
    fast = sorted((c for c in cs if c.decode_mfs >= base.decode_mfs), key=lambda c: c.bpf)[:3]
    target = sorted((c for c in cs if c.bpf <= TARGET), key=lambda c: -c.decode_mfs)[:3]
    seen: set[tuple[str, ...]] = set()
    for c in [base, *front, *fast, *target]:
        if c.names in seen:
            continue
        seen.add(c.names)
        print(
            f"| {'; '.join(c.names)} | {c.bpf:.2f} | {c.decode_mfs:.1f} | {c.encode_mfs:.2f} | "
            f"{c.bpf - base.bpf:+.2f} B, x{c.decode_mfs / base.decode_mfs:.2f} |"
        )
    ok = [c for c in cs if c.bpf <= TARGET and c.decode_mfs >= base.decode_mfs]
    print(
        f"\n(rows: format 2, then the combinations no other beats on both size and decode "
        f"speed, smallest first, in steps of {100 * (STEP - 1):.0f} % in speed up to format "
        f"2's; the smallest at least as fast as "
        f"format 2; the fastest within {TARGET:g} B/frame)\n"
    )
    best = max(target, key=lambda c: c.decode_mfs, default=None)
    print(
        f"<= {TARGET:g} B/frame with decode at least format 2's: "
        + ("; ".join(f"{c.bpf:.2f} ({c.decode_mfs:.1f} M/s)" for c in ok[:3]) if ok else "none")
        + (
            f"; the fastest within {TARGET:g}: {best.bpf:.2f} B/frame at "
            f"x{best.decode_mfs / base.decode_mfs:.2f} of format 2's decode"
            if best
            else ""
        )
    )


def pareto(cs: list[Combo], base: Combo) -> list[Combo]:
    """The combinations that no other is both smaller and faster to decode than, smallest
    first, from the smallest up to those as fast as ``base``; each at least ``STEP``
    times as fast as the one before (closer ones are within the timing's noise)."""
    front, fastest = [], 0.0
    for c in sorted(cs, key=lambda c: (c.bpf, -c.decode_mfs)):
        if c.decode_mfs > STEP * fastest:
            front.append(c)
            fastest = c.decode_mfs
            if fastest >= base.decode_mfs:
                break
    return front


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", type=Path, help="a top-k uint8 store (else synthetic rows)")
    ap.add_argument("--kind", default="segments", choices=("segments", "iid"))
    ap.add_argument("--frames", type=int, default=131072, help="synthetic rows")
    ap.add_argument("--k", type=int, default=8, help="synthetic top-k")
    ap.add_argument("--repeats", type=int, default=3, help="rounds per speed measurement")
    args = ap.parse_args()
    nblosc.set_nthreads(1)
    nblosc.use_threads = False
    load = os.getloadavg()
    t0 = time.perf_counter()
    rows = read_rows(args.store) if args.store else synthetic_rows(args.kind, args.frames, args.k)
    print(
        f"# store entropy: {rows.name}; {os.cpu_count()} cores, load {load[0]:.2f} "
        f"{load[1]:.2f} {load[2]:.2f}; read in {time.perf_counter() - t0:.1f} s"
    )
    bound = print_estimates(rows, estimates(rows))
    k = rows.indices.shape[1]
    print(f"\n## 2. Candidate encodings (blosc zstd, {CHUNK_ROWS}-row chunks, one thread)")
    cands = index_candidates(k) + value_candidates() + tail_candidates() + joint_candidates()
    results = [measure(rows, c, args.repeats) for c in cands]
    print_results(results)
    print_markdown(rows, results, bound, load)
    end = os.getloadavg()
    print(
        f"\nload average at the end {end[0]:.2f} / {end[1]:.2f} / {end[2]:.2f}; "
        f"{time.perf_counter() - t0:.0f} s in all"
    )


if __name__ == "__main__":
    main()
