"""Check and encode one utterance's targets; assemble a part's arrays (the writer's core).

Parts are written in the current format (``spec.VERSION``): uint8 values of sparse rows are
row-delta coded on the way out (``coding``).

Shapes: T frames of the utterance, k kept classes per row (fixed), nnz entries (variable),
C classes, U utterances and R = sum(T) frames of a part.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kdpipe.errors import LabelSetError, StoreError
from kdpipe.sparse import SparseRows
from kdpipe.store import spec
from kdpipe.store.coding import ROW_DELTA, delta_encode, values_transform


def _values(x: np.ndarray, meta: spec.StoreMeta, where: str, *, tail: bool) -> np.ndarray:
    """Encode float log-probs (or uint8 codes of the store's codebook) as the store does."""
    if x.dtype == np.uint8:
        if meta.values == "uint8":
            return x
        x = spec.log_codebook()[x]
    if not np.issubdtype(x.dtype, np.floating):
        raise StoreError(f"{where}: log-probs must be floats, got {x.dtype}")
    if np.isnan(x).any():
        raise StoreError(f"{where}: NaN log-probabilities")
    if (x > 1e-3).any():
        raise StoreError(f"{where}: log-probabilities > 0 (max {float(x.max()):.4g})")
    return spec.encode_logp(x, meta.values, tail=tail)


def encode_rows(
    rows: SparseRows, meta: spec.StoreMeta, where: str, num_rows: int | None
) -> SparseRows:
    """Validate ``rows`` against the store's layout and label set and encode its values."""
    c = meta.num_classes
    if rows.num_classes != c:
        raise LabelSetError(
            f"{where}: targets over {rows.num_classes} classes; the store's label set has {c}"
        )
    layout, width = meta.rule.layout, meta.rule.width(c)
    if rows.layout != layout or (width is not None and rows.width != width):
        raise StoreError(
            f"{where}: {rows.layout} rows of width {rows.width}; the store's rule "
            f"{meta.rule} needs {layout} rows" + (f" of width {width}" if width else "")
        )
    if num_rows is not None and rows.num_rows != num_rows:
        raise StoreError(f"{where}: {rows.num_rows} rows, expected {num_rows}")
    if rows.tail.shape != (rows.num_rows,):
        raise StoreError(f"{where}: tail has shape {rows.tail.shape}, expected ({rows.num_rows},)")
    if rows.values.dtype == np.uint8 and not np.array_equal(rows.codebook, spec.log_codebook()):
        raise StoreError(f"{where}: uint8 values with a foreign codebook")
    indices, offsets = None, None
    if rows.indices is not None:
        ix = rows.indices
        if ix.shape != rows.values.shape or not np.issubdtype(ix.dtype, np.integer):
            raise StoreError(f"{where}: class indices must be integers shaped like the values")
        if ix.size and (int(ix.min()) < 0 or int(ix.max()) >= c):
            bad = int(ix.max()) if int(ix.max()) >= c else int(ix.min())
            raise StoreError(f"{where}: class index {bad} out of range [0, {c})")
        indices = ix.astype(spec.index_dtype(c), copy=False)
    elif rows.values.shape[1:] != (c,):
        raise StoreError(f"{where}: dense rows must have {c} columns")
    if rows.offsets is not None:
        off = np.asarray(rows.offsets, dtype=np.int64)
        if off[0] != 0 or off[-1] != len(rows.values) or (np.diff(off) < 0).any():
            raise StoreError(f"{where}: row offsets are not a valid CSR offsets array")
        offsets = off
    values = _values(rows.values, meta, f"{where} values", tail=False)
    if indices is not None:
        _check_descending(values, offsets, where)
    return SparseRows(
        values=values,
        tail=_values(rows.tail, meta, f"{where} tail", tail=True),
        num_classes=c,
        indices=indices,
        offsets=offsets,
    )


def _check_descending(values: np.ndarray, offsets: np.ndarray | None, where: str) -> None:
    """Sparse rows keep their entries in descending probability order (the format says so,
    and the row-delta coding of uint8 values relies on it)."""
    if offsets is None:
        up = values[:, 1:] > values[:, :-1]  # (T, k-1)
        bad = np.flatnonzero(up.any(axis=1))
    else:
        up = values[1:] > values[:-1]  # (nnz-1,)
        same_row = np.ones(len(up), dtype=bool)
        same_row[offsets[1:-1][(offsets[1:-1] > 0) & (offsets[1:-1] < len(values))] - 1] = False
        pos = np.flatnonzero(up & same_row)
        bad = np.searchsorted(offsets, pos, side="right") - 1
    if len(bad):
        raise StoreError(
            f"{where}: row {int(bad[0])}: entries not in descending probability order "
            "(a selection rule returns them sorted)"
        )


def _hard(x: Any, n: int, meta: spec.StoreMeta, where: str) -> np.ndarray:
    dt, c = spec.hard_dtype(meta.num_classes), meta.num_classes
    a = np.asarray(x).reshape(-1) if x is not None else np.full(n, -1)
    if a.shape != (n,) or not (np.issubdtype(a.dtype, np.integer) or a.size == 0):
        raise StoreError(f"{where}: hard labels must be {n} integers, got {a.shape} {a.dtype}")
    a = a.astype(np.int64)
    if a.size and (a.min() < -1 or a.max() >= c):
        raise StoreError(f"{where}: hard label out of range [0, {c}) (-1 = no label)")
    return np.where(a < 0, np.iinfo(dt).max, a).astype(dt)


def encode_utterance(meta: spec.StoreMeta, utt_id: str, **kw: Any) -> dict[str, Any]:
    """One utterance, checked and encoded; the keywords are ``StoreWriter.add``'s."""
    rec: dict[str, Any] = {"id": utt_id, "levels": {}, "hard": {}, "members": {}}
    for level in spec.LEVELS:
        rows = kw[level]
        if (rows is not None) != (level in meta.levels):
            need = "needs" if level in meta.levels else "has no"
            raise StoreError(f"utterance {utt_id}: the store {need} {level}-level targets")
        if rows is None:
            continue
        n = None if level == "frame" else 1
        enc = encode_rows(rows, meta, f"utterance {utt_id} {level}", n)
        rec["levels"][level] = enc
        mem = kw[f"members_{level}"]
        if len(mem) != len(meta.members):
            raise StoreError(
                f"utterance {utt_id}: {len(mem)} member {level} targets for "
                f"{len(meta.members)} members"
            )
        rec["members"][level] = [
            encode_rows(m, meta, f"utterance {utt_id} member {name} {level}", enc.num_rows)
            for m, name in zip(mem, meta.members, strict=True)
        ]
        if level in meta.hard_labels:
            rec["hard"][level] = _hard(
                kw[f"hard_{level}"], enc.num_rows, meta, f"utterance {utt_id} hard {level}"
            )
        elif kw[f"hard_{level}"] is not None:
            raise StoreError(f"utterance {utt_id}: the store has no {level} hard labels")
    rec["num_frames"] = rec["levels"]["frame"].num_rows if "frame" in meta.levels else 0
    start, stop = (int(v) for v in kw["input_window"])
    if start < 0 or (stop != -1 and stop < start):
        raise StoreError(f"utterance {utt_id}: bad input window {kw['input_window']}")
    if not 1 <= int(kw["subsampling"]) <= 65535 or not kw["frame_shift_ms"] > 0:
        raise StoreError(f"utterance {utt_id}: bad subsampling or frame shift")
    rec["index"] = (int(kw["subsampling"]), float(kw["frame_shift_ms"]), (start, stop))
    return rec


def _rows_arrays(base: str, rows: SparseRows, out: dict[str, np.ndarray]) -> None:
    if rows.offsets is not None:
        out[base + "row_offsets"] = rows.offsets
    if rows.indices is not None:
        out[base + "indices"] = rows.indices
    transform = values_transform(rows.layout, rows.values.dtype.name)
    out[base + "values"] = (
        delta_encode(rows.values, rows.offsets) if transform == ROW_DELTA else rows.values
    )
    out[base + "tail"] = rows.tail


def assemble_part(meta: spec.StoreMeta, recs: list[dict[str, Any]]) -> tuple[dict, int]:
    """The arrays of a part (path -> array, as ``spec.expected_arrays``) and its frames."""
    ids = [r["id"] for r in recs]
    raw = [i.encode("utf-8") for i in ids]
    id_off = np.zeros(len(raw) + 1, dtype=np.int64)
    np.cumsum([len(b) for b in raw], out=id_off[1:])
    frames = np.array([r["num_frames"] for r in recs], dtype=np.int64)
    f_off = np.zeros(len(recs) + 1, dtype=np.int64)
    np.cumsum(frames, out=f_off[1:])
    out: dict[str, np.ndarray] = {
        "index/ids/utf8": np.frombuffer(b"".join(raw), dtype=np.uint8),
        "index/ids/offsets": id_off,
        "index/frame_offsets": f_off,
        "index/subsampling": np.array([r["index"][0] for r in recs], dtype=np.uint16),
        "index/frame_shift_ms": np.array([r["index"][1] for r in recs], dtype=np.float32),
        "index/input_window": np.array([r["index"][2] for r in recs], dtype=np.int64).reshape(
            -1, 2
        ),
    }
    for level in meta.levels:
        _rows_arrays(f"{level}/", SparseRows.concat([r["levels"][level] for r in recs]), out)
        if level in meta.hard_labels:
            out[f"{level}/hard"] = np.concatenate([r["hard"][level] for r in recs])
        for j in range(len(meta.members)):
            rows = SparseRows.concat([r["members"][level][j] for r in recs])
            _rows_arrays(f"members/{j}/{level}/", rows, out)
    return out, int(f_off[-1])
