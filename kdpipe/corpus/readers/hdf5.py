"""Reader for HDF5 archives of precomputed features (no audio).

Layout (one file, read with h5py)::

    /                      file attributes:
        labels             list of label names (required), index i = class i
        task               "clip" or "frame" (optional; "frame" if any utterance has an
                           alignment, else "clip")
        sample_rate, frame_shift_ms, frame_length_ms, num_mel_bins, snip_edges, dither
                           the feature config (optional; FbankConfig defaults otherwise;
                           num_mel_bins must equal F)
    /<utt-id>              float dataset (T, F): one utterance's features. Every 2-D dataset
                           anywhere in the file is an utterance; its id is its path without
                           the leading '/' (so 'yes/0a7c_nohash_0' lives in group 'yes').
        label              attribute, clip task: a label name (str) or index (int)
        alignment          attribute, frame task: int (T,) label indices
        speaker            attribute, optional (default "unknown")
        split              attribute, optional (default "train")
    /<utt-id>.alignment    optional 1-D int dataset (T,): the alignment as a sibling dataset,
                           for utterances too long for an attribute (HDF5 caps those at 64 KiB)

A frame-task alignment may differ from T by up to 2 frames (fixed by ``prepare``, as for
audio corpora).
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np

from kdpipe.corpus.features import FbankConfig
from kdpipe.corpus.manifest import Corpus, Utterance
from kdpipe.corpus.readers.problems import Problems
from kdpipe.errors import AlignmentError, CorpusError, KdpipeError
from kdpipe.labels import LabelSet

ALI_SUFFIX = ".alignment"


def read_hdf5(path: str | Path, skip_bad: bool = False) -> Corpus:
    """Read an HDF5 feature archive; see the module docstring for the layout."""
    path = Path(path)
    problems = Problems(skip_bad)
    with _open(path) as f:
        labels = _labels(f, path)
        cfg = read_feature_config(path, f=f)
        entries = _datasets(f)
        task = _str(f.attrs["task"]) if "task" in f.attrs else None
        if task is None:
            task = "frame" if any(_alignment(f, k) is not None for k in entries) else "clip"
        utts, alignments = [], {}
        for key in entries:
            ds = f[key]
            where = f"{path}:{key}"
            try:
                if ds.dtype.kind != "f":
                    raise CorpusError(f"{where}: features must be float, not {ds.dtype}")
                if ds.shape[0] == 0:
                    raise CorpusError(f"{where}: empty features (0 frames)")
                if ds.shape[1] != cfg.num_mel_bins:
                    raise CorpusError(
                        f"{where}: {ds.shape[1]} features, the file says "
                        f"num_mel_bins={cfg.num_mel_bins}"
                    )
                label = None
                if task == "frame":
                    ali = _alignment(f, key)
                    if ali is None:
                        raise AlignmentError(f"{where}: no alignment attribute or dataset")
                    bad = ali[(ali < 0) | (ali >= len(labels))]
                    if len(bad):
                        raise AlignmentError(
                            f"{where}: label index {int(bad[0])} is outside "
                            f"the label set (0..{len(labels) - 1})"
                        )
                    alignments[key] = ali.astype(np.int32)
                else:
                    label = _clip_label(ds.attrs.get("label"), labels, where)
                utts.append(
                    Utterance(
                        id=key,
                        speaker=_str(ds.attrs.get("speaker", "unknown")),
                        split=_str(ds.attrs.get("split", "train")),
                        label=label,
                        features=key,
                    )
                )
            except CorpusError as error:
                problems.add(key, str(error), type(error))
    return Corpus(
        utterances=utts,
        labels=labels,
        task=task,  # type: ignore[arg-type]
        source=str(path),
        format="hdf5",
        alignments=alignments if task == "frame" else None,
        sample_rate=cfg.sample_rate,
        skipped=problems.skipped,
    )


def read_feature_config(path: str | Path, cmvn: str = "utterance", f: Any = None) -> FbankConfig:
    """The archive's FbankConfig from its file attributes; ``cmvn`` is the reader's choice."""
    if f is None:
        with _open(Path(path)) as h:
            return read_feature_config(path, cmvn, h)
    known = {field.name for field in fields(FbankConfig)} - {"cmvn"}
    settings: dict[str, Any] = {k: _plain(f.attrs[k]) for k in known if k in f.attrs}
    if "num_mel_bins" not in settings:
        first = next(iter(_datasets(f)), None)
        if first is None:
            raise CorpusError(f"{path}: no (T, F) feature datasets")
        settings["num_mel_bins"] = int(f[first].shape[1])
    try:
        return FbankConfig.from_dict({**settings, "cmvn": cmvn})
    except KdpipeError as error:
        raise CorpusError(f"{path}: bad feature config in file attributes: {error}") from None


def load_features(path: str | Path, keys: list[str]) -> Any:
    """Yield (T, F) float32 features of ``keys`` in order, from one open file."""
    with _open(Path(path)) as f:
        for k in keys:
            yield np.asarray(f[k][()], dtype=np.float32)


def _open(path: Path) -> Any:
    import h5py  # h5py stays out of light importers (prepare, pipeline)

    try:
        return h5py.File(path, "r")
    except OSError as error:
        raise CorpusError(f"{path}: not a readable HDF5 file: {error}") from None


def _datasets(f: Any) -> list[str]:
    """Paths (no leading '/') of every 2-D dataset, sorted."""
    import h5py  # see _open

    out: list[str] = []

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Dataset) and obj.ndim == 2:
            out.append(name)

    f.visititems(visit)
    return sorted(out)


def _labels(f: Any, path: Path) -> LabelSet:
    if "labels" not in f.attrs:
        raise CorpusError(f"{path}: no 'labels' file attribute (the list of label names)")
    return LabelSet(tuple(_str(v) for v in f.attrs["labels"]))


def _alignment(f: Any, key: str) -> Any:
    if key + ALI_SUFFIX in f:
        return np.asarray(f[key + ALI_SUFFIX][()]).astype(np.int64).reshape(-1)
    if "alignment" in f[key].attrs:
        return np.asarray(f[key].attrs["alignment"]).astype(np.int64).reshape(-1)
    return None


def _clip_label(value: Any, labels: LabelSet, where: str) -> str:
    if value is None:
        raise AlignmentError(f"{where}: no 'label' attribute (clip task)")
    value = _plain(value)
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value < len(labels):
            raise AlignmentError(f"{where}: label index {value} is outside the label set")
        return labels.names[value]
    name = _str(value)
    if name not in labels:
        raise AlignmentError(f"{where}: label {name!r} is not in the label set")
    return name


def _plain(v: Any) -> Any:
    """numpy scalars and bytes from h5py attributes as plain Python values."""
    if isinstance(v, bytes):
        return v.decode()
    return v.item() if hasattr(v, "item") and getattr(v, "ndim", 1) == 0 else v


def _str(v: Any) -> str:
    v = _plain(v)
    return v if isinstance(v, str) else str(v)
