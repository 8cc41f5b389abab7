"""``export_store``: a target store out to Kaldi, lhotse or NumPy files (docs/interop.md).

One level of the store (``frame``: R = T rows per utterance; ``utt``: one row) is written,
in store order, in one of two forms:

- **sparse** (default): the kept entries of each row, as the selection rule kept them, in
  descending probability order: class indices with their probabilities (Kaldi) or
  log-probabilities (lhotse, npy), plus the tail (log of the mass the rule dropped) where
  the format has room for it. Probabilities are ``exp`` of the stored log-probs, **not**
  renormalised: a row sums to 1 - tail. ``renormalize`` rescales the kept entries to sum
  1 (tail mass 0).
- **dense** (``dense=True``): (R, C) float32 probabilities, ``SparseRows.densify``: the
  classes not kept are 0 (the tail dropped), or share the tail evenly
  (``spread_tail=True``: rows sum to 1), or the kept entries are renormalised.

Formats (each folder also gets ``labels.txt``, one label a line in index order, and
``export.json``, the provenance record, written last: a folder without it is an
interrupted export):

- ``kaldi``: ``targets.ark`` + ``targets.scp``. Sparse: Kaldi's binary ``Posterior``
  (what ``copy-post``, ``ali-to-post`` and nnet1/nnet3 posterior targets read), written
  here: kaldiio 2.18 can neither write nor read ``Posterior`` (its reader takes the
  ``\\0B\\4`` header for an int32 vector). Dense: Kaldi float matrices (``FM``) written by
  kaldiio's ``write_array`` (nnet3 dense targets).
- ``lhotse``: ``cuts.jsonl.gz`` + ``targets.h5`` (lhotse's ``NumpyHdf5Writer``): per cut
  the custom arrays ``kd_indices`` (R, W) int32, ``kd_logprobs`` (R, W) float32 and
  ``kd_tail`` (R,) float32, or dense ``kd_probs`` (R, C) float32; ``TemporalArray`` at
  the frame level (frame shift from the store), plain ``Array`` at the utt level.
  Variable-width rows are padded to the store's widest row W (index 0, log-prob -inf).
- ``npy``: per utterance ``<name>.npz`` (sparse: ``indices``, ``logprobs``, ``tail``, and
  ``offsets`` (R+1,) for variable-width rows, which are then flat CSR) or ``<name>.npy``
  (dense (R, C) float32 probabilities); ``<name>`` is ``safe_name(utterance id)``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
from kaldiio.matio import write_array

from kdpipe import __version__, outputs
from kdpipe.console import progress_bar
from kdpipe.errors import ConfigError
from kdpipe.sparse import SparseRows
from kdpipe.store.reader import StoreReader

FORMATS = ("kaldi", "lhotse", "npy")
MANIFEST = "export.json"  # the provenance record, written last
LABELS = "labels.txt"
INSTALL_LHOTSE = "export to lhotse needs lhotse: pip install 'kdpipe[lhotse]'"
NAME_MAX = 255  # bytes in a file name on common file systems (ext4, APFS, NTFS)

# Kaldi binary Posterior (hmm/posterior.cc, PosteriorHolder::Write): "\0B", then
# WriteBasicType(int32 T), per frame WriteBasicType(int32 n), then n times
# WriteBasicType(int32 class) WriteBasicType(float prob). WriteBasicType writes one size
# byte (4 for int32 and float) and then the value, little-endian here.
_SIZE = np.dtype([("size", "u1"), ("n", "<i4")])  # 5 bytes
_PAIR = np.dtype([("s1", "u1"), ("cls", "<i4"), ("s2", "u1"), ("prob", "<f4")])  # 10 bytes


@dataclass(frozen=True)
class ExportSummary:
    """What ``export_store`` wrote."""

    to: str  # kaldi | lhotse | npy
    out: str  # the folder
    level: str  # frame | utt
    form: str  # sparse | dense
    utterances: int
    frames: int  # rows written: frames, or one per utterance at the utt level
    bytes: int  # total size of the files written
    seconds: float
    files: int  # number of files written


def safe_name(utt_id: str) -> str:
    """``utt_id`` as a file name that stays inside its folder: percent-encoded as in URLs
    (``urllib.parse.quote(utt_id, safe="")``: ``/`` -> ``%2F``, ``%`` -> ``%25``, non-ASCII
    as UTF-8 bytes), a leading ``.`` as ``%2E``. ``urllib.parse.unquote`` gives the id back."""
    name = quote(utt_id, safe="")
    return "%2E" + name[1:] if name.startswith(".") else name


def posterior_bytes(classes: np.ndarray, probs: np.ndarray, widths: np.ndarray) -> bytes:
    """One utterance as Kaldi binary ``Posterior``: frame r holds the ``widths[r]`` pairs
    (``classes``, ``probs``) that follow those of the frames before it (flat, row order)."""
    t, nnz = len(widths), len(classes)
    offsets = np.zeros(t + 1, dtype=np.int64)
    np.cumsum(widths, out=offsets[1:])
    head = np.empty(t, dtype=_SIZE)
    head["size"], head["n"] = 4, widths
    pair = np.empty(nnz, dtype=_PAIR)
    pair["s1"], pair["cls"], pair["s2"], pair["prob"] = 4, classes, 4, probs
    start = 7  # "\0B" + the frame count
    out = np.empty(start + _SIZE.itemsize * t + _PAIR.itemsize * nnz, dtype=np.uint8)
    out[:start] = np.frombuffer(b"\0B\4" + struct.pack("<i", t), dtype=np.uint8)
    rows = np.arange(t)
    at = start + _SIZE.itemsize * rows + _PAIR.itemsize * offsets[:-1]  # frame headers
    out[at[:, None] + np.arange(_SIZE.itemsize)] = head.view(np.uint8).reshape(t, _SIZE.itemsize)
    row_of = np.repeat(rows, widths)
    at = start + _SIZE.itemsize * (row_of + 1) + _PAIR.itemsize * np.arange(nnz)
    out[at[:, None] + np.arange(_PAIR.itemsize)] = pair.view(np.uint8).reshape(nnz, _PAIR.itemsize)
    return out.tobytes()


def prepare_rows(rows: SparseRows, renormalize: bool = False) -> SparseRows:
    """``rows`` with float32 log-probs (codes decoded); ``renormalize``: the kept entries
    rescaled to sum 1 per row, the tail -inf."""
    lp, tail = rows.logprobs(), rows.tail_logprob()
    if renormalize:
        r = rows.num_rows
        if rows.offsets is None:  # (R, W)
            x = lp.astype(np.float64)
            top = x.max(axis=1, keepdims=True) if x.size else np.zeros((r, 1))
            lp = (x - top - np.log(np.exp(x - top).sum(axis=1, keepdims=True))).astype(np.float32)
        else:  # flat CSR; every row keeps at least one entry
            ids = rows.row_ids()
            sums = np.bincount(ids, weights=np.exp(lp.astype(np.float64)), minlength=r)
            lp = (lp - np.log(np.maximum(sums, 1e-300))[ids]).astype(np.float32)
        tail = np.full(r, -np.inf, dtype=np.float32)
    return SparseRows(lp, tail, rows.num_classes, indices=rows.indices, offsets=rows.offsets)


@dataclass(frozen=True)
class _Item:
    """One utterance to write: its prepared rows and index columns."""

    utt_id: str
    rows: SparseRows  # float32 log-probs (prepare_rows)
    frames: int  # frame count in the store's index
    shift_s: float  # teacher output frame shift, seconds
    window: tuple[int, int]  # input window [start, stop); (0, -1): no crop


class _Writer:
    """What the format writers share: the options and the dense / sparse forms of rows."""

    def __init__(self, out: Path, level: str, dense: bool, spread_tail: bool) -> None:
        self.out, self.level, self.dense, self.spread_tail = out, level, dense, spread_tail

    def probs(self, rows: SparseRows) -> np.ndarray:
        return rows.densify(spread_tail=self.spread_tail)

    def add(self, item: _Item) -> None:
        raise NotImplementedError

    def close(self) -> dict[str, str]:
        """The files written, by role (for export.json)."""
        raise NotImplementedError


class _KaldiWriter(_Writer):
    def __init__(self, out: Path, level: str, dense: bool, spread_tail: bool) -> None:
        super().__init__(out, level, dense, spread_tail)
        self.ark_name = str(out / "targets.ark")  # the scp names it as given (Kaldi's way)
        self.ark = open(self.ark_name, "wb")  # noqa: SIM115  (closed in close())
        self.scp = open(out / "targets.scp", "w", encoding="utf-8")  # noqa: SIM115

    def add(self, item: _Item) -> None:
        key = item.utt_id  # whitespace was refused up front (_check_ids)
        self.ark.write(key.encode() + b" ")
        offset = self.ark.tell()
        rows = item.rows
        if self.dense:
            write_array(self.ark, np.ascontiguousarray(self.probs(rows), dtype=np.float32))
        else:
            self.ark.write(
                posterior_bytes(
                    rows.class_ids().reshape(-1).astype(np.int32),
                    np.exp(rows.logprobs()).reshape(-1),
                    rows.widths(),
                )
            )
        self.scp.write(f"{key} {self.ark_name}:{offset}\n")

    def close(self) -> dict[str, str]:
        self.ark.close()
        self.scp.close()
        kind = "float matrices (FM)" if self.dense else "Posterior"
        return {"archive": "targets.ark", "scp": "targets.scp", "kaldi_type": kind}


class _NpyWriter(_Writer):
    def add(self, item: _Item) -> None:
        name, rows = safe_name(item.utt_id), item.rows
        if self.dense:
            np.save(self.out / f"{name}.npy", self.probs(rows))
            return
        arrays: dict[str, Any] = {
            "indices": rows.class_ids().astype(np.int32),
            "logprobs": rows.logprobs(),
            "tail": rows.tail_logprob(),
        }
        if rows.offsets is not None:
            arrays["offsets"] = rows.offsets.astype(np.int64)
        np.savez(self.out / f"{name}.npz", **arrays)

    def close(self) -> dict[str, str]:
        return {"per_utterance": "<safe_name(id)>." + ("npy" if self.dense else "npz")}


class _LhotseWriter(_Writer):
    def __init__(
        self,
        out: Path,
        level: str,
        dense: bool,
        spread_tail: bool,
        *,
        lhotse: Any,
        cuts: Mapping[str, Any] | None,
        durations: Mapping[str, float] | None,
        width: int | None,
    ) -> None:
        from lhotse.features.io import NumpyHdf5Writer  # type: ignore[import-untyped]

        super().__init__(out, level, dense, spread_tail)
        self.lhotse, self.cuts, self.durations, self.width = lhotse, cuts, durations, width
        self.h5 = NumpyHdf5Writer(out / "targets.h5")
        self.writer = lhotse.CutSet.open_writer(out / "cuts.jsonl.gz")

    def _cut(self, item: _Item) -> Any:
        if self.cuts is not None:
            return self.cuts[item.utt_id]
        if self.durations is not None:
            duration = round(float(self.durations[item.utt_id]), 6)  # float32 noise off
        else:  # frame level (the utt level without frames was refused up front)
            duration = round(item.frames * item.shift_s, 6)
        return self.lhotse.MonoCut(item.utt_id, start=0.0, duration=duration, channel=0)

    def _arrays(self, rows: SparseRows) -> dict[str, np.ndarray]:
        if self.dense:
            return {"kd_probs": self.probs(rows)}
        indices, logprobs = rows.class_ids(), rows.logprobs()
        if rows.offsets is not None:  # pad to the store's widest row
            assert self.width is not None
            widths = rows.widths()
            cols = np.arange(len(indices)) - np.repeat(rows.offsets[:-1], widths)
            at = (rows.row_ids(), cols)
            indices = np.zeros((rows.num_rows, self.width), dtype=np.int32)
            indices[at] = rows.class_ids()
            flat = logprobs
            logprobs = np.full((rows.num_rows, self.width), -np.inf, dtype=np.float32)
            logprobs[at] = flat
        return {
            "kd_indices": np.ascontiguousarray(indices, dtype=np.int32),
            "kd_logprobs": np.ascontiguousarray(logprobs, dtype=np.float32),
            "kd_tail": rows.tail_logprob(),
        }

    def add(self, item: _Item) -> None:
        cut = self._cut(item)
        name = safe_name(item.utt_id)
        for field, value in self._arrays(item.rows).items():
            key = f"{field}/{name}"
            if self.level == "frame":
                manifest = self.h5.store_array(
                    key, value, frame_shift=item.shift_s, temporal_dim=0, start=cut.start
                )
            else:
                manifest = self.h5.store_array(key, value)
            cut = cut.with_custom(field, manifest)
        if item.window != (0, -1):
            cut = cut.with_custom("kd_input_window", list(item.window))
        self.writer.write(cut)

    def close(self) -> dict[str, str]:
        self.h5.close()
        self.writer.close()
        fields = "kd_probs" if self.dense else "kd_indices, kd_logprobs, kd_tail"
        return {"cuts": "cuts.jsonl.gz", "arrays": "targets.h5", "custom_fields": fields}


def _some(ids: list[str], what: str) -> str:
    """``"3 <what>, e.g. <first id>"``."""
    return f"{len(ids)} {what}, e.g. {ids[0]}"


def _check_ids(ids: list[str], to: str) -> None:
    """Ids the format cannot hold: whitespace in a Kaldi key, a file name over NAME_MAX."""
    if to == "kaldi":
        bad = [u for u in ids if any(c.isspace() for c in u)]
        if bad:
            raise ConfigError(
                _some(bad, "utterance id(s) with whitespace, which Kaldi keys cannot hold")
            )
    elif to == "npy":
        bad = [u for u in ids if len(safe_name(u)) + 4 > NAME_MAX]
        if bad:
            raise ConfigError(
                _some(bad, f"utterance id(s) too long for a file name of {NAME_MAX} bytes")
            )


def _prepare_out(out: Path, overwrite: bool, inputs: list[str]) -> None:
    outputs.refuse_inputs(out, inputs, "export")  # never inside its store, nor holding it
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise ConfigError(f"--out {out}: folder is not empty (--overwrite replaces an export)")
        if not (out / MANIFEST).is_file():
            raise ConfigError(
                f"--out {out}: not empty and holds no {MANIFEST} (not an export by kdpipe): "
                "not deleting it"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def import_lhotse() -> Any:
    """The lhotse module; ``ConfigError`` telling how to install it when it is missing."""
    try:
        import lhotse  # type: ignore[import-untyped]  # optional, heavy (imports torch)
    except ImportError:
        raise ConfigError(INSTALL_LHOTSE) from None
    return lhotse


def _clear(out: Path, keep_folder: bool) -> None:
    """Delete ``out`` (``keep_folder``: only what is in it)."""
    if not keep_folder:
        shutil.rmtree(out, ignore_errors=True)
        return
    for child in out.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def _load_cuts(lhotse: Any, path: str | Path, ids: list[str]) -> dict[str, Any]:
    """The cuts of ``path`` by id; every store utterance must have one and vice versa."""
    if not Path(path).is_file():
        raise ConfigError(f"--cuts {path}: no such file")
    try:
        cuts = {cut.id: cut for cut in lhotse.CutSet.from_file(path)}
    except Exception as error:  # lhotse raises many kinds on a malformed manifest
        raise ConfigError(f"--cuts {path}: not a lhotse CutSet: {error}") from None
    store = set(ids)
    extra = [c for c in cuts if c not in store]
    if extra:
        raise ConfigError(f"--cuts {path}: {_some(extra, 'cut(s) have no targets in the store')}")
    missing = [u for u in ids if u not in cuts]
    if missing:
        raise ConfigError(f"--cuts {path}: {_some(missing, 'store utterance(s) have no cut')}")
    bad = [c for c in cuts.values() if not hasattr(c, "with_custom")]
    if bad:
        raise ConfigError(
            f"--cuts {path}: cut {bad[0].id} ({type(bad[0]).__name__}) takes no custom fields"
        )
    return cuts


def _widest(reader: StoreReader, level: str) -> int:
    """The widest row of ``level`` (variable-width stores; ``sample(n)``: n)."""
    rule = reader.meta.rule
    if rule.name == "sample":
        return int(rule.params["n"])
    widest = 1
    for block in reader.blocks():
        rows = getattr(block, level)
        if rows is not None and rows.num_rows:
            widest = max(widest, int(rows.widths().max()))
    return widest


def export_store(
    store: str | Path,
    to: str,
    out: str | Path,
    *,
    dense: bool = False,
    renormalize: bool = False,
    spread_tail: bool = False,
    level: str | None = None,
    cuts: str | Path | None = None,
    durations: Mapping[str, float] | None = None,
    overwrite: bool = False,
    storage_options: dict[str, Any] | None = None,
    progress: bool = True,
) -> ExportSummary:
    """Write the targets of ``store`` (a path or fsspec URL) into the folder ``out`` as
    ``to`` (``kaldi``, ``lhotse`` or ``npy``; see the module docstring).

    ``level``: ``frame`` or ``utt`` (default: ``frame`` where the store has it).
    ``dense``: (R, C) probabilities instead of the kept entries; ``spread_tail`` (dense
    only) spreads the dropped mass evenly over the classes not kept; ``renormalize``
    rescales the kept entries to sum 1. lhotse only: ``cuts`` (a CutSet file: the targets
    are attached to its cuts, matched by id) or ``durations`` ({id: seconds}, e.g. a feature
    store's) make the cuts; without either a cut lasts frames x frame shift and has no
    recording. ``out`` must be empty or missing; ``overwrite`` replaces a previous export.
    """
    started = time.perf_counter()
    if to not in FORMATS:
        raise ConfigError(f"unknown export format {to!r}: expected one of {', '.join(FORMATS)}")
    if spread_tail and not dense:
        raise ConfigError("spread_tail (--spread-tail) needs the dense form (--dense)")
    if spread_tail and renormalize:
        raise ConfigError("--spread-tail and --renormalize are two ways to fill the tail: pick one")
    if to != "lhotse" and (cuts is not None or durations is not None):
        raise ConfigError("--cuts and --corpus go with --to lhotse only")
    if cuts is not None and durations is not None:
        raise ConfigError("give --cuts or --corpus, not both")
    reader = StoreReader(store, storage_options=storage_options)
    meta = reader.meta
    level = level or ("frame" if "frame" in meta.levels else "utt")
    if level not in ("frame", "utt"):
        raise ConfigError(f"unknown level {level!r}: expected frame or utt")
    if level not in meta.levels:
        raise ConfigError(
            f"{reader.location}: has no {level!r} level (levels: {', '.join(meta.levels)})"
        )
    out = Path(out)
    _check_ids(reader.ids, to)
    lhotse: Any = None
    cut_map: dict[str, Any] | None = None
    width: int | None = None
    if to == "lhotse":
        lhotse = import_lhotse()
        if cuts is not None:
            cut_map = _load_cuts(lhotse, cuts, reader.ids)
        elif durations is not None:
            missing = [u for u in reader.ids if u not in durations]
            if missing:
                raise ConfigError(_some(missing, "store utterance(s) are not in the corpus"))
        elif level == "utt" and "frame" not in meta.levels:
            raise ConfigError(
                "utterance-level targets carry no duration: give --cuts or --corpus to make cuts"
            )
        if not dense and meta.rule.layout == "variable":
            width = _widest(reader, level)
    existed = out.is_dir()
    _prepare_out(out, overwrite, [str(reader.location), *([str(cuts)] if cuts else [])])
    writer: _Writer
    if to == "kaldi":
        writer = _KaldiWriter(out, level, dense, spread_tail)
    elif to == "npy":
        writer = _NpyWriter(out, level, dense, spread_tail)
    else:
        writer = _LhotseWriter(
            out,
            level,
            dense,
            spread_tail,
            lhotse=lhotse,
            cuts=cut_map,
            durations=durations,
            width=width,
        )
    utterances = rows_written = cropped = 0
    total = reader.total_frames if level == "frame" else len(reader)
    done = False
    try:
        with progress_bar(f"export {to}", total, enabled=progress, unit="rows") as advance:
            for block in reader.blocks():
                rows = prepare_rows(getattr(block, level), renormalize)
                starts = block.frame_offsets if level == "frame" else np.arange(len(block) + 1)
                frames = block.frames_per_utterance()
                for i, utt_id in enumerate(block.ids):
                    a, b = int(starts[i]), int(starts[i + 1])
                    window = (int(block.input_window[i, 0]), int(block.input_window[i, 1]))
                    cropped += window != (0, -1)
                    writer.add(
                        _Item(
                            utt_id=utt_id,
                            rows=rows.slice_rows(a, b),
                            frames=int(frames[i]),
                            shift_s=round(float(block.frame_shift_ms[i]) / 1000, 9),
                            window=window,
                        )
                    )
                    rows_written += b - a
                    utterances += 1
                    advance(b - a)
        done = True
    finally:
        files = writer.close()
        if not done:  # the folder holds only this export's files: leave nothing half-made
            _clear(out, keep_folder=existed)
    meta.label_set.write(out / LABELS)
    shifts = sorted({float(x) for x in np.unique(reader.frame_shift_ms)})
    record = {
        "format": "kdpipe.export",
        "version": 1,
        "to": to,
        "form": "dense" if dense else "sparse",
        "level": level,
        "values": ("probabilities" if dense or to == "kaldi" else "log-probabilities"),
        "tail": "spread" if spread_tail else "renormalized" if renormalize else "dropped",
        "store": reader.location,
        "store_fingerprint": reader.record["fingerprint"],
        "rule": meta.rule.to_dict(),
        "num_classes": meta.num_classes,
        "frame_shift_ms": meta.frame_shift_ms,
        "subsampling": meta.subsampling,
        "utterances": utterances,
        "rows": rows_written,
        "cropped_utterances": cropped,
        "files": {**files, "labels": LABELS},
        "kdpipe_version": __version__,
        "exported_at": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if shifts and shifts != [float(meta.frame_shift_ms)]:
        record["frame_shifts_ms"] = shifts  # utterances whose shift differs from the default
    if width is not None:
        record["padded_width"] = width
    (out / MANIFEST).write_text(json.dumps(record, indent=1) + "\n")
    count = size = 0
    for root, _, names in os.walk(out):
        for n in names:
            count += 1
            size += os.path.getsize(os.path.join(root, n))
    return ExportSummary(
        to=to,
        out=str(out),
        level=level,
        form=str(record["form"]),
        utterances=utterances,
        frames=rows_written,
        bytes=size,
        seconds=time.perf_counter() - started,
        files=count,
    )
