"""Content checks of ``verify_store``: one target matrix of a part, row by row.

Each finding names the part, the utterance (from the part's frame offsets) and the array.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from kdpipe.store import spec
from kdpipe.store.coding import NO_TRANSFORM, ROW_DELTA, delta_decode

MAX_MESSAGES = 50  # errors listed in full; the rest are counted


@dataclass
class VerifyReport:
    """The outcome: ``ok`` when there is no error (warnings allowed)."""

    location: str
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    more_errors: int = 0
    parts: int = 0
    utterances: int = 0
    frames: int = 0
    arrays: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors

    def error(self, msg: str) -> None:
        if len(self.errors) < MAX_MESSAGES:
            self.errors.append(msg)
        else:
            self.more_errors += 1


def _row_error(
    rep: VerifyReport,
    at: str,
    ids: list[str],
    f_off: np.ndarray | None,
    path: str,
    row: int,
    msg: str,
) -> None:
    level = path.split("/")[-2]
    u = row if level == "utt" or f_off is None else int(np.searchsorted(f_off, row, "right") - 1)
    who = f"utterance {ids[u]}" if 0 <= u < len(ids) else f"row {row}"
    rep.error(f"{at}: {who}: array {path}: {msg}")


def check_rows(
    rep: VerifyReport,
    at: str,
    base: str,
    d: dict[str, np.ndarray],
    meta: spec.StoreMeta,
    ids: list[str],
    f_off: np.ndarray | None,
    transform: str = NO_TRANSFORM,
) -> None:
    """Content checks of one target matrix (``base`` = e.g. ``frame/``) whose values are
    stored with ``transform`` (``coding``)."""
    c, enc = meta.num_classes, meta.values
    vals, tail = d[base + "values"], d[base + "tail"]
    ro = d.get(base + "row_offsets")
    if ro is not None and (ro[0] != 0 or ro[-1] != len(vals) or (np.diff(ro) < 0).any()):
        return rep.error(f"{at}: array {base}row_offsets is not a valid offsets array")
    if transform == ROW_DELTA:
        vals = delta_decode(vals, ro)
    ix = d.get(base + "indices")
    rows_of = (
        (lambda pos: int(np.searchsorted(ro, pos, "right") - 1))
        if ro is not None
        else (lambda pos: int(pos))
    )
    if (
        ix is not None
        and ix.size
        and (bad := np.flatnonzero((ix >= c).reshape(len(ix), -1).any(axis=-1))).size
    ):
        _row_error(
            rep,
            at,
            ids,
            f_off,
            base + "indices",
            rows_of(bad[0]),
            f"class index {int(ix.max())} out of range [0, {c}) ({bad.size} rows)",
        )
    finite = vals >= 1 if enc == "uint8" else np.isfinite(vals) & (vals <= 0)
    if (bad := np.flatnonzero(~finite.reshape(len(vals), -1).all(axis=-1))).size:
        _row_error(
            rep,
            at,
            ids,
            f_off,
            base + "values",
            rows_of(bad[0]),
            "values not finite log-probabilities",
        )
    if enc == "float16" and (bad := np.flatnonzero(np.isnan(tail) | (tail > 0))).size:
        _row_error(rep, at, ids, f_off, base + "tail", int(bad[0]), "tail is not a log-mass")
    logp = spec.log_codebook()[vals] if enc == "uint8" else vals.astype(np.float32)
    p = np.exp(logp.astype(np.float64))
    if ix is not None:  # sparse rows must be in descending order
        with np.errstate(invalid="ignore"):
            step = np.diff(logp, axis=-1) if ro is None else np.diff(logp)
        if ro is not None:
            step = step[np.diff(np.repeat(np.arange(len(ro) - 1), np.diff(ro))) == 0]
        if (step > 0).any():
            rep.error(f"{at}: array {base}values: entries not in descending order")
    if ro is None:
        sums = p.sum(axis=-1)
    else:
        sums = np.bincount(np.repeat(np.arange(len(ro) - 1), np.diff(ro)), p, len(ro) - 1)
    tail_p = np.exp((spec.log_codebook()[tail] if enc == "uint8" else tail).astype(np.float64))
    off = np.abs(sums + tail_p - 1.0) if len(sums) else np.zeros(0)
    if (bad := np.flatnonzero(~(off <= spec.sum_tolerance(enc)))).size:
        _row_error(
            rep,
            at,
            ids,
            f_off,
            base + "values",
            int(bad[0]),
            f"kept mass + tail = {1 + float(off[bad[0]]):.4f}, not 1 (tolerance "
            f"{spec.sum_tolerance(enc):.3f}; {bad.size} rows)",
        )
    h = d.get(base + "hard")
    if h is not None and (bad := np.flatnonzero((h >= c) & (h != np.iinfo(h.dtype).max))).size:
        _row_error(rep, at, ids, f_off, base + "hard", int(bad[0]), "hard label out of range")
