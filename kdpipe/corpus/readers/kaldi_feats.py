"""Kaldi's own features: ``feats.scp`` matrices read with kaldiio, normalised per speaker
with ``cmvn.scp`` as Kaldi's ``apply-cmvn`` does, and taken into the store as they are.

Per data dir (``readers/kaldi.py`` parses the index files and resolves their paths):

- ``feats.scp``: ``<utt-id> <ark file>:<offset>`` (a Kaldi row range ``[a:b]`` allowed):
  one (T, D) float matrix per utterance, any Kaldi matrix kind kaldiio reads (float,
  double, compressed). Every matrix must have the D columns of the first.
- ``cmvn.scp`` (optional): ``<speaker> <ark file>:<offset>``: Kaldi's CMVN stats, a
  2 x (D + 1) matrix per speaker of ``utt2spk`` (per utterance without an ``utt2spk``,
  as ``compute-cmvn-stats`` writes them then): row 0 the sums of the features with the
  frame count in the last column, row 1 the sums of their squares.

``apply_cmvn_stats`` is ``apply-cmvn``: by default mean normalisation (Kaldi's
``--norm-vars=false``), ``x - sum / count``; with ``norm_vars`` also divided by the standard
deviation ``sqrt(sumsq / count - mean^2)`` (the variance floored at 1e-20, like Kaldi's).
The offset and scale are computed in float64 and applied to the float32 features in
float32, as Kaldi does.

What the store records (``ExternalFeatures``): kind ``kaldi``, D, config ``{"cmvn": None |
{"norm_vars": bool, "per": "speaker" | "utterance"}}`` and source ``{split: {"feats.scp":
sha256, "cmvn.scp": sha256}}`` (of each scp's text; file names, not paths, so a moved
corpus keeps its fingerprint); the store adds the fingerprint of that record and every
matrix's shape.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import IO, Any

import numpy as np

from kdpipe.corpus.manifest import ExternalFeatures, Loaded, Utterance
from kdpipe.corpus.readers.problems import Problems
from kdpipe.errors import CorpusError

VAR_FLOOR = 1e-20  # Kaldi's apply-cmvn floors the variance here (and warns)


def apply_cmvn_stats(feats: np.ndarray, stats: np.ndarray, norm_vars: bool = False) -> np.ndarray:
    """Kaldi's ``apply-cmvn`` of (T, D) features with (2, D + 1) stats: (T, D) float32."""
    dim = stats.shape[1] - 1
    count = float(stats[0, dim])
    mean = stats[0, :dim] / count  # (D,) float64
    if not norm_vars:
        return (feats + (-mean).astype(np.float32)).astype(np.float32, copy=False)
    var = np.maximum(stats[1, :dim] / count - mean * mean, VAR_FLOOR)  # (D,)
    scale = 1.0 / np.sqrt(var)
    offset = -(mean * scale)
    out = feats * scale.astype(np.float32) + offset.astype(np.float32)
    return out.astype(np.float32, copy=False)


@dataclass(frozen=True)
class FeatsDir:
    """One data dir's feature index files, parsed by ``readers/kaldi.py``."""

    split: str
    feats_scp: Path
    lines: dict[str, int]  # utt id -> its line in feats.scp
    cmvn_scp: Path | None = None
    cmvn: dict[str, tuple[int, str]] = field(default_factory=dict)  # key -> (line, rx)


def kaldi_external(
    dirs: list[FeatsDir],
    utts: list[Utterance],
    problems: Problems,
    *,
    per_speaker: bool,
    norm_vars: bool = False,
) -> tuple[ExternalFeatures | None, list[Utterance]]:
    """The ``ExternalFeatures`` of ``utts`` (each with its resolved ``<ark>:<offset>`` in
    ``Utterance.features``, from the data dir of its split in ``dirs``) and the utterances
    kept; None and [] when no matrix loads.

    D comes from the first matrix that loads (those before it are problems). A speaker
    (utterance, without ``utt2spk``) missing from its cmvn.scp, or whose stats are
    unreadable or of the wrong shape, is a problem of each of its utterances.
    """
    if len({d.cmvn_scp is None for d in dirs}) > 1:
        with_cmvn = ", ".join(d.split for d in dirs if d.cmvn_scp is not None)
        raise CorpusError(
            f"{dirs[0].feats_scp.parent.parent}: only some splits ({with_cmvn}) have a "
            "cmvn.scp; give every split one, or none"
        )
    dir_of = {d.split: d for d in dirs}
    where = {
        utt.id: f"{dir_of[utt.split].feats_scp}:{dir_of[utt.split].lines[utt.id]}" for utt in utts
    }
    dim, utts = _first_dim(utts, where, problems)
    if dim is None:
        return None, []
    stats: dict[str, np.ndarray] = {}  # utt id -> its speaker's (2, D + 1) stats
    found: dict[tuple[str, str], np.ndarray | str] = {}  # (split, speaker) -> stats or why not
    kept = []
    for utt in utts:
        d = dir_of[utt.split]
        if d.cmvn_scp is not None:
            key = (d.split, utt.speaker)
            if key not in found:
                found[key] = _speaker_stats(d.cmvn_scp, d.cmvn, utt.speaker, dim)
            speaker_stats = found[key]
            if isinstance(speaker_stats, str):
                problems.add(utt.id, f"{speaker_stats} (utterance {utt.id})")
                continue
            stats[utt.id] = speaker_stats
        kept.append(utt)
    per = "speaker" if per_speaker else "utterance"
    has_cmvn = dirs[0].cmvn_scp is not None
    config: dict[str, Any] = {"cmvn": {"norm_vars": norm_vars, "per": per} if has_cmvn else None}
    source = {
        d.split: {p.name: _sha256(p) for p in (d.feats_scp, d.cmvn_scp) if p is not None}
        for d in dirs
    }
    load = partial(_load, dim=dim, stats=stats, norm_vars=norm_vars, where=where)
    return ExternalFeatures("kaldi", dim, config, source, load), kept


def _load(
    utts: list[Utterance],
    *,
    dim: int,
    stats: dict[str, np.ndarray],
    norm_vars: bool,
    where: dict[str, str],
) -> Iterator[Loaded]:
    """Each utterance's (T, D) matrix, CMVN applied, from one set of open ark files."""
    fds: dict[str, IO[bytes]] = {}  # ark files kaldiio keeps open across utterances
    try:
        for utt in utts:
            at = where.get(utt.id, str(utt.features))
            try:
                matrix = _matrix(str(utt.features), f"{at}: utterance {utt.id}", fds)
                feats = np.ascontiguousarray(matrix, dtype=np.float32)  # (T, D), as Kaldi reads
                if feats.shape[1] != dim:
                    raise CorpusError(
                        f"{at}: utterance {utt.id}: a matrix of {feats.shape[1]} columns; "
                        f"the first matrix of feats.scp has {dim}"
                    )
                if utt.id in stats:
                    feats = apply_cmvn_stats(feats, stats[utt.id], norm_vars)
                yield feats, None, None
            except CorpusError as error:
                yield None, None, (type(error).__name__, str(error))
    finally:
        for ark in fds.values():
            ark.close()


def _first_dim(
    utts: list[Utterance], where: dict[str, str], problems: Problems
) -> tuple[int | None, list[Utterance]]:
    """D of the first matrix that loads, and the utterances from it on (those before it,
    which do not load, are problems)."""
    for k, utt in enumerate(utts):
        try:
            first = _matrix(str(utt.features), f"{where[utt.id]}: utterance {utt.id}")
        except CorpusError as error:
            problems.add(utt.id, str(error))
            continue
        return first.shape[1], utts[k:]
    return None, []


def _matrix(rx: str, what: str, fds: dict[str, IO[bytes]] | None = None) -> np.ndarray:
    """The (T, D) float matrix at ``rx`` (``<ark>:<offset>``), through the ark files open in
    ``fds`` (None: opened and closed here); ``CorpusError`` starting with ``what`` (the scp
    line and whose matrix it is) otherwise."""
    import kaldiio  # kaldiio stays out of light importers (prepare, pipeline)

    own: dict[str, IO[bytes]] = {}
    try:
        mat = kaldiio.load_mat(rx, fd_dict=own if fds is None else fds)
    except (OSError, ValueError, RuntimeError, EOFError, AssertionError, IndexError) as error:
        raise CorpusError(f"{what}: not a readable Kaldi matrix: {error}") from None
    finally:
        for ark in own.values():
            ark.close()
    if not (isinstance(mat, np.ndarray) and mat.ndim == 2 and mat.dtype.kind == "f"):
        got = f"shape {np.shape(mat)}, dtype {getattr(mat, 'dtype', type(mat).__name__)}"
        raise CorpusError(f"{what}: expected a float matrix, got {got}")
    return mat


def _speaker_stats(
    path: Path, table: dict[str, tuple[int, str]], speaker: str, dim: int
) -> np.ndarray | str:
    """The (2, D + 1) float64 stats of ``speaker``, or the one-line reason they are unusable."""
    if speaker not in table:
        return f"{path}: no CMVN stats for speaker {speaker!r}"
    n, rx = table[speaker]
    try:
        stats = _matrix(rx, f"{path}:{n}: speaker {speaker}")
    except CorpusError as error:
        return str(error)
    if stats.shape != (2, dim + 1):
        return (
            f"{path}:{n}: speaker {speaker}: stats of shape {stats.shape}, expected "
            f"(2, {dim + 1}) for {dim}-dim features"
        )
    if not stats[0, dim] >= 1:
        return f"{path}:{n}: speaker {speaker}: frame count {stats[0, dim]:g} < 1 in its stats"
    return stats.astype(np.float64)


def _sha256(path: Path) -> str:
    """The sha256 of a file's bytes (an index file's text)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()
