"""``verify_store``: check everything a store promises, and name what breaks it.

Checked: the format record; each committed part's commit record, chunks (present, CRC),
array metadata and sha256 checksums; offsets; class indices in range; values finite, in
descending order within rows and summing with the tail to 1 (within the encoding's
tolerance); hard labels in range; no utterance twice; and, given the corpus, no utterance
missing or extra and frame counts that fit. Parts without a commit record (left by an
interrupted writer; readers ignore them) are warnings, unless the commit log
(``parts.read_log``) says they were committed: a logged part that is gone or lost its
record is an error. What could not be checked (no corpus, no commit log) is listed in
``VerifyReport.unchecked``.

The content checks (``check_rows``) take one target matrix of a part row by row; each
finding names the part, the utterance (from the part's frame offsets) and the array.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kdpipe import zarrio
from kdpipe.errors import ConfigError, KdpipeError
from kdpipe.labels import LabelSet
from kdpipe.store import arrayio, coding, spec
from kdpipe.store.coding import NO_TRANSFORM, ROW_DELTA, delta_decode
from kdpipe.store.parts import PartInfo, log_findings, read_log, scan

MAX_MESSAGES = 50  # errors listed in full; the rest are counted


@dataclass
class VerifyReport:
    """The outcome: ``ok`` when there is no error (warnings allowed)."""

    location: str
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    more_errors: int = 0
    unchecked: list[str] = field(default_factory=list)  # checks that could not be made
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

    def fail(array: str, row: int, msg: str) -> None:
        _row_error(rep, at, ids, f_off, base + array, row, msg)

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
        fail(
            "indices",
            rows_of(bad[0]),
            f"class index {int(ix.max())} out of range [0, {c}) ({bad.size} rows)",
        )
    finite = vals >= 1 if enc == "uint8" else np.isfinite(vals) & (vals <= 0)
    if (bad := np.flatnonzero(~finite.reshape(len(vals), -1).all(axis=-1))).size:
        fail(
            "values",
            rows_of(bad[0]),
            "values not finite log-probabilities",
        )
    if enc == "float16" and (bad := np.flatnonzero(np.isnan(tail) | (tail > 0))).size:
        fail("tail", int(bad[0]), "tail is not a log-mass")
    logp = coding.log_codebook()[vals] if enc == "uint8" else vals.astype(np.float32)
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
    tail_p = np.exp((coding.log_codebook()[tail] if enc == "uint8" else tail).astype(np.float64))
    off = np.abs(sums + tail_p - 1.0) if len(sums) else np.zeros(0)
    if (bad := np.flatnonzero(~(off <= coding.sum_tolerance(enc)))).size:
        fail(
            "values",
            int(bad[0]),
            f"kept mass + tail = {1 + float(off[bad[0]]):.4f}, not 1 (tolerance "
            f"{coding.sum_tolerance(enc):.3f}; {bad.size} rows)",
        )
    h = d.get(base + "hard")
    if h is not None and (bad := np.flatnonzero((h >= c) & (h != np.iinfo(h.dtype).max))).size:
        _row_error(rep, at, ids, f_off, base + "hard", int(bad[0]), "hard label out of range")


def _check_part(
    rep: VerifyReport,
    store: Any,
    location: str,
    part: PartInfo,
    meta: spec.StoreMeta,
    transform: str,
) -> tuple[list[str], dict[str, np.ndarray]]:
    """Checksums and contents of one part; returns its utterance ids and its index arrays
    (by name: ``frame_offsets``, ...), both empty if the index is unreadable."""
    at = f"{location}: part {part.id}"
    prefix = f"parts/{part.id}"
    if zarrio.can_list(location):
        for key in arrayio.missing_chunks(store, prefix, part.arrays)[:5]:
            rep.error(
                f"{at}: array {key.removeprefix(prefix + '/').rsplit('/c/', 1)[0]}: "
                f"chunk {key} is missing"
            )
    data: dict[str, np.ndarray] = {}
    paths = list(part.arrays)
    arrays = arrayio.open_arrays(store, [f"{prefix}/{p}" for p in paths], return_errors=True)
    ok = [k for k, a in enumerate(arrays) if not isinstance(a, KdpipeError)]
    got = arrayio.read_slices(
        [arrays[k] for k in ok],
        [Ellipsis] * len(ok),
        [f"{at}: array {paths[k]}" for k in ok],
        return_errors=True,
    )
    results: list[Any] = list(arrays)
    for k, g in zip(ok, got, strict=True):
        results[k] = g
    for path, arr, res in zip(paths, arrays, results, strict=True):
        rep.arrays += 1
        rec = part.arrays[path]
        if isinstance(arr, KdpipeError):
            rep.error(f"{at}: array {path}: missing or unreadable metadata")
            continue
        if isinstance(res, KdpipeError):
            rep.error(str(res))
            continue
        if [list(arr.shape), arr.dtype.name, list(arr.chunks)] != [
            rec["shape"],
            rec["dtype"],
            rec.get("chunks", list(arr.chunks)),
        ]:
            rep.error(f"{at}: array {path}: metadata disagrees with the commit record")
        elif arrayio.sha256(res) != rec["sha256"]:
            rep.error(
                f"{at}: array {path}: sha256 differs from the commit record (damaged or tampered)"
            )
        data[path] = res
    if any(p.startswith("index/") and p not in data for p in part.arrays):
        return [], {}
    raw, off, f_off = data["index/ids/utf8"], data["index/ids/offsets"], data["index/frame_offsets"]
    u = part.num_utterances
    for name, o, end in (("ids/offsets", off, len(raw)), ("frame_offsets", f_off, part.num_frames)):
        if len(o) != u + 1 or o[0] != 0 or o[-1] != end or (np.diff(o) < 0).any():
            rep.error(f"{at}: array index/{name} is not a valid offsets array")
            return [], {}
    ids = [raw[off[i] : off[i + 1]].tobytes().decode("utf-8", "replace") for i in range(u)]
    _check_quality(rep, at, data, ids)
    srcs = [""] + [f"members/{j}/" for j in range(len(meta.members))]
    for base in (f"{s}{lv}/" for s in srcs for lv in meta.levels):
        if all(p in data for p in part.arrays if p.startswith(base)):
            check_rows(rep, at, base, data, meta, ids, f_off, transform)
    rep.parts += 1
    rep.utterances += u
    rep.frames += part.num_frames
    index = {p.removeprefix("index/"): a for p, a in data.items() if p.startswith("index/")}
    return ids, index


def _check_quality(rep: VerifyReport, at: str, data: dict[str, Any], ids: list[str]) -> None:
    """Format 3's quality columns: entropy >= 0, agreement in [0, 1]; NaN is unknown."""
    bounds = {"entropy": (0.0, np.inf), "agreement": (0.0, 1.0)}
    for name, (low, high) in bounds.items():
        column = data.get(f"index/quality/{name}")
        if column is None:
            continue
        known = ~np.isnan(column)
        bad = np.flatnonzero(known & ((column < low) | (column > high) | np.isinf(column)))
        if len(bad):
            i = int(bad[0])
            rep.error(
                f"{at}: utterance {ids[i]}: quality {name} {float(column[i])!r} outside "
                f"[{low}, {high}] (index/quality/{name})"
            )


def verify_store(
    location: str | Path,
    *,
    storage_options: dict[str, Any] | None = None,
    corpus_ids: Sequence[str] | None = None,
    corpus_frames: Sequence[int] | None = None,
    corpus_fingerprint: str | None = None,
    labels: LabelSet | Sequence[str] | None = None,
    frame_tolerance: int | None = None,
) -> VerifyReport:
    """Verify the store at ``location``; see the module docstring.

    ``corpus_ids`` (+ ``corpus_frames``, input frames per utterance) is the corpus the
    targets should cover; ``corpus_fingerprint`` its fingerprint, which must equal the
    store's recorded feature or corpus fingerprint where one is recorded;
    ``frame_tolerance`` is how far a teacher's frame count may be from input frames /
    subsampling (default 0 without subsampling, else 2).
    """
    where = str(location)
    if frame_tolerance is not None and frame_tolerance < 0:
        raise ConfigError(f"frame_tolerance must be >= 0, got {frame_tolerance}")
    rep = VerifyReport(where)
    try:
        store = zarrio.open_store(location, "r", storage_options)
        root = arrayio.read_json_many(store, ["zarr.json"])[0]
        if root is None:
            raise KdpipeError(f"{where}: no zarr.json: not a zarr v3 target store")
        meta, rec = spec.parse_root(root.get("attributes") or {}, where)
        if labels is not None:
            other = labels if isinstance(labels, LabelSet) else LabelSet(tuple(labels))
            meta.label_set.check_same(other, f"store {where}", "the given label set")
        found = scan(store, location, meta, rep.errors, rec["version"])
        recorded = {
            str(fp) for fp in (meta.features.get("fingerprint"), meta.corpus_fingerprint) if fp
        }
        if corpus_fingerprint and recorded and corpus_fingerprint not in recorded:
            rep.error(
                f"{where}: made from features/corpus {', '.join(sorted(recorded))}, "
                f"not from the given corpus ({corpus_fingerprint})"
            )
    except KdpipeError as e:
        rep.error(str(e))
        return rep
    try:
        log = read_log(store, location, rec.get(spec.COMMIT_LOG_KEY) is True)
    except KdpipeError as e:
        rep.error(str(e))
        return rep
    lost: set[str] = set()
    if log is None:
        rep.unchecked.append(
            "lost parts: "
            + (
                "parts cannot be listed over HTTP"
                if not zarrio.can_list(location)
                else "the store keeps no commit log (written by an older kdpipe)"
            )
            + ", so a part deleted whole or without its commit record goes unseen"
        )
    else:
        errors, warnings = log_findings(log, found, where)
        for message in errors:
            rep.error(message)
        rep.warnings += warnings
        lost = set(log)
    rep.warnings += [
        f"{where}: part {p} has no commit record (an interrupted writer's "
        "leftover; readers ignore it)"
        for p in found.uncommitted
        if p not in lost
    ]
    if corpus_ids is None:
        rep.unchecked.append(
            "coverage: without the corpus, utterances never written (or lost with a part "
            "before the commit log) and target frame counts against the input frames"
        )
    seen: dict[str, str] = {}
    frames: dict[str, tuple[int, int, tuple[int, int]]] = {}
    for part in found.parts:
        ids, index = _check_part(rep, store, where, part, meta, spec.stored_transform(rec))
        if "frame" in meta.levels and ids:
            f_off, sub, win = (index[n] for n in ("frame_offsets", "subsampling", "input_window"))
            for k, u in enumerate(ids):
                frames[u] = (
                    int(f_off[k + 1] - f_off[k]),
                    int(sub[k]),
                    (int(win[k][0]), int(win[k][1])),
                )
        for u in ids:
            if u in seen:
                rep.error(f"{where}: utterance {u} is in parts {seen[u]} and {part.id}")
            seen[u] = part.id
    if corpus_ids is not None:
        _check_corpus(rep, seen, frames, list(corpus_ids), corpus_frames, frame_tolerance)
    return rep


def _check_corpus(
    rep: VerifyReport,
    seen: dict[str, str],
    frames: dict,
    ids: list[str],
    corpus_frames: Sequence[int] | None,
    tol: int | None,
) -> None:
    want = set(ids)
    missing = [u for u in ids if u not in seen]
    extra = sorted(set(seen) - want)
    if missing:
        rep.error(
            f"{rep.location}: {len(missing)} corpus utterance(s) missing from the store,"
            f" e.g. {', '.join(missing[:5])}"
        )
    if extra:
        rep.error(
            f"{rep.location}: {len(extra)} utterance(s) not in the corpus, "
            f"e.g. {', '.join(extra[:5])}"
        )
    if corpus_frames is None or not frames:
        return
    for u, t_in in zip(ids, corpus_frames, strict=True):
        if u not in frames:
            continue
        n, sub, (start, stop) = frames[u]
        span = (t_in if stop == -1 else min(stop, t_in)) - start
        allowed = (0 if sub == 1 else 2) if tol is None else tol
        if abs(n - span / sub) > allowed:
            rep.error(
                f"{rep.location}: utterance {u}: {n} target frames for {span} input "
                f"frames at subsampling {sub}"
            )
