"""The plan of a ``store import`` (``kdpipe.teach.imported``): everything that can fail on
the inputs, checked from the source's index and the corpus before any utterance is
converted (ids, class counts, frame counts, priors, the store's metadata), and the
conversion of one utterance's rows to (R, C) log-probs (``to_logprobs``, ``fit_rows``)."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from kdpipe.corpus.featstore import FeatureStore
from kdpipe.corpus.manifest import TRANSCRIBED
from kdpipe.corpus.priors import read_priors
from kdpipe.errors import ConfigError, CorpusError, LabelSetError, StoreError
from kdpipe.essence import Rule
from kdpipe.labels import LabelSet
from kdpipe.levels import Level
from kdpipe.store.interop.sources import POSTERIOR, Data, Entry, Posteriors, Source, open_source
from kdpipe.store.interop.sources import file_sha256 as _file_sha256
from kdpipe.store.posteriors import Totals
from kdpipe.store.spec import StoreMeta, Teacher

KINDS = ("logits", "log_probs", "probs", "loglik")
FRAME_TOLERANCE = 2  # rows a source may be off ceil(T / s) by (teach's tolerance for members)
PROB_SLACK = 0.01  # a row of probabilities may sum to 1 + this (rounding in text files)


@dataclass(kw_only=True)
class ImportSummary(Totals):
    """What an import run did (``utterances``, ``frames``: imported by this run)."""

    store: str
    source: str
    format: str
    level: str = "frame"
    subsampling: int = 1
    outside_split: int = 0  # source utterances not in ``split``, not imported
    not_in_source: int = 0  # utterances of the selection the source does not have
    trimmed: int = 0  # utterances whose rows were trimmed to ceil(T / s)
    padded: int = 0  # utterances padded with their last row
    source_bytes: int = 0  # bytes of stored source data read
    hash_seconds: float = 0.0  # hashing the source (provenance), part of ``seconds``

    @property
    def read_mb_per_second(self) -> float:
        """MB (10^6 bytes) of source data read per second of the whole run."""
        return self.source_bytes / 1e6 / max(self.seconds, 1e-9)

    def to_dict(self) -> dict[str, Any]:
        return {
            "store": self.store,
            "source": self.source,
            "format": self.format,
            "level": self.level,
            "subsampling": self.subsampling,
            **self.counts(),
            "outside_split": self.outside_split,
            "not_in_source": self.not_in_source,
            "frames": self.frames,
            "trimmed": self.trimmed,
            "padded": self.padded,
            "bytes": self.bytes,
            "bytes_per_frame": self.bytes_per_frame,
            "source_bytes": self.source_bytes,
            "seconds": self.seconds,
            "hash_seconds": self.hash_seconds,
            "frames_per_second": self.frames_per_second,
            "read_mb_per_second": self.read_mb_per_second,
            "mean_entropy": self.mean_entropy,
            "mean_tail_mass": self.mean_tail_mass,
            "accuracy": self.accuracy,
            "parts": len(self.parts),
        }


# -- values ----------------------------------------------------------------------------------


def to_logprobs(
    x: np.ndarray, kind: str, where: str, log_priors: np.ndarray | None = None
) -> np.ndarray:
    """(R, C) normalised float32 log-probs from a source's rows of ``kind``:

    - ``logits``: log-softmax; ``log_probs``: renormalised with a log-sum-exp (-inf allowed:
      probability 0); ``loglik``: Kaldi's pseudo log-likelihoods log p(s|x) - log p(s),
      turned back with ``log_priors`` (log-softmax of loglik + log prior);
    - ``probs``: log, not renormalised: a row summing to less than 1 (a pruned posterior)
      keeps its missing mass, which the rule's tail then holds; rows over 1 + PROB_SLACK,
      without mass, or with negative entries are refused.

    NaN, and inf other than -inf in ``log_probs`` (and 0 in ``probs``), are a
    ``StoreError`` naming ``where`` and the row. Float32 throughout (no float64 copy).
    """
    x = np.asarray(x)
    if x.dtype != np.float32:
        x = x.astype(np.float32)
    rows = len(x)
    top = x.max(axis=1) if x.size else np.zeros(rows, np.float32)  # (R,); NaN propagates
    _check_finite(top, where, kind)
    if kind == "probs":
        low = x.min(axis=1)  # (R,)
        if (low < 0).any():
            r = int(np.flatnonzero(low < 0)[0])
            raise StoreError(f"{where}: row {r}: negative probability {float(low[r])!r}")
        sums = x.sum(axis=1, dtype=np.float64)  # (R,)
        bad = np.flatnonzero((sums <= 0) | (sums > 1 + PROB_SLACK))
        if len(bad):
            r = int(bad[0])
            if sums[r] <= 0:
                raise StoreError(f"{where}: row {r}: no probability mass (an empty frame?)")
            raise StoreError(
                f"{where}: row {r}: probabilities sum to {sums[r]:.6g} (not probabilities? "
                "give --kind logits, log_probs or loglik)"
            )
        with np.errstate(divide="ignore"):
            return np.log(x)
    if kind == "loglik":
        if log_priors is None:
            raise ConfigError("--kind loglik needs --priors (the priors the logliks divide by)")
        x = x + log_priors.astype(np.float32)  # (R, C), a new array
        top = x.max(axis=1)
    elif kind not in ("logits", "log_probs"):
        raise ConfigError(f"unknown --kind {kind!r}: expected one of {', '.join(KINDS)}")
    if kind != "log_probs":
        low = x.min(axis=1)  # (R,)
        if np.isneginf(low).any():
            r = int(np.flatnonzero(np.isneginf(low))[0])
            raise StoreError(f"{where}: row {r}: -inf in {kind} (only log_probs may hold -inf)")
    elif np.isneginf(top).any():
        r = int(np.flatnonzero(np.isneginf(top))[0])
        raise StoreError(f"{where}: row {r}: every class has log-probability -inf")
    z = x - top[:, None]  # (R, C) float32: the one new buffer (x is ours for loglik)
    np.exp(z, out=z)
    shift = top + np.log(z.sum(axis=1))  # (R,) log-sum-exp
    return np.subtract(x, shift[:, None], out=x if kind == "loglik" else z)


def _check_finite(top: np.ndarray, where: str, kind: str) -> None:
    """NaN (the row max propagates it) or +inf anywhere in a row."""
    bad = np.flatnonzero(np.isnan(top) | np.isposinf(top))
    if len(bad):
        r = int(bad[0])
        what = "NaN" if np.isnan(top[r]) else "+inf"
        raise StoreError(f"{where}: row {r}: {what} in the {kind}")


def fit_rows(x: np.ndarray, want: int) -> np.ndarray:
    """(R, C) -> (want, C): trimmed, or padded with the last row (as teach fits members)."""
    if len(x) >= want:
        return x[:want]
    return np.concatenate([x, np.repeat(x[-1:], want - len(x), axis=0)])


def output_rows(frames: int, subsampling: int) -> int:
    """ceil(T / s): the rows teach writes for T input frames at subsampling s."""
    return -(-frames // subsampling)


# -- the plan ----------------------------------------------------------------------------------


@dataclass
class ImportPlan:
    """What an import will do, decided before any utterance is converted."""

    source: Source
    corpus: FeatureStore
    kind: str
    meta: StoreMeta
    level: Level
    subsampling: int
    todo: list[tuple[Entry, int]]  # (entry, corpus index), in the source's order
    outside_split: int
    not_in_source: int
    log_priors: np.ndarray | None
    hash_seconds: float


def _label_set(corpus: FeatureStore, labels: str | Path | None) -> tuple[LabelSet, str]:
    if labels is not None:
        return LabelSet.read(labels), str(labels)
    if corpus.task == TRANSCRIBED:
        raise ConfigError(
            f"{corpus.location}: a transcribed corpus has no label set: give --labels "
            "(the teacher's classes, one a line or a Kaldi 'name id' table)"
        )
    return corpus.labels, f"the corpus {corpus.location}"


def _select(
    source: Source, corpus: FeatureStore, split: str | None
) -> tuple[list[tuple[Entry, int]], int, int]:
    """(entry, corpus index) of the source utterances to import, source utterances
    outside ``split``, and utterances of the selection missing from the source."""
    seen: set[str] = set()
    pairs, unknown = [], []
    index = {utt_id: i for i, utt_id in enumerate(corpus.ids)}
    for e in source.entries:
        if e.utt_id in seen:
            raise StoreError(f"{e.file}: utterance {e.utt_id} appears twice")
        seen.add(e.utt_id)
        i = index.get(e.utt_id)
        if i is None:
            unknown.append(e.utt_id)
        else:
            pairs.append((e, i))
    if unknown:
        raise CorpusError(
            f"{source.location}: {len(unknown)} of its {len(source.entries)} utterances are "
            f"not in the corpus {corpus.location}, e.g. {unknown[0]} (wrong corpus?)"
        )
    wanted = corpus.indices(split)
    if split is None:
        return pairs, 0, len(wanted) - len(pairs)
    allowed = set(wanted.tolist())
    todo = [(e, i) for e, i in pairs if i in allowed]
    if not todo:
        raise CorpusError(f"{source.location}: none of its utterances is in split {split!r}")
    return todo, len(pairs) - len(todo), len(allowed) - len(todo)


def _subsampling(
    todo: list[tuple[Entry, int]], corpus: FeatureStore, given: int | None, source: Source
) -> int:
    """The given subsampling, or round(sum T / sum R) over the utterances whose rows the
    index knows (the first utterance is read when it knows none)."""
    if given is not None:
        if isinstance(given, bool) or not isinstance(given, int) or given < 1:
            raise ConfigError(f"--subsampling must be an integer >= 1, got {given!r}")
        return given
    known = [(e.rows, int(corpus.num_frames[i])) for e, i in todo if e.rows is not None]
    if not known:
        e, i = todo[0]
        known = [(data_rows(source.read(e)), int(corpus.num_frames[i]))]
    rows = sum(r for r, _ in known)
    frames = sum(t for _, t in known)
    s = round(frames / rows) if rows else 0
    if s < 1:
        raise CorpusError(
            f"{source.location}: {rows} rows for {frames} input frames: more rows than "
            "frames, cannot infer the subsampling (give --subsampling)"
        )
    return s


def data_rows(data: Data) -> int:
    return data.num_rows if isinstance(data, Posteriors) else len(data)


def check_frames(entry: Entry, rows: int, frames: int, s: int, location: str) -> None:
    want = output_rows(frames, s)
    if rows == 0 or abs(rows - want) > FRAME_TOLERANCE:
        raise CorpusError(
            f"{location}: utterance {entry.utt_id}: {rows} rows, but its {frames} input "
            f"frames make {want} at subsampling {s} (tolerance {FRAME_TOLERANCE}): another "
            "corpus, or wrong --subsampling?"
        )


def make_plan(
    src: str | Path,
    corpus_location: str | Path,
    *,
    kind: str,
    labels: str | Path | None,
    priors: str | Path | None,
    rule: Rule,
    values: str,
    split: str | None,
    subsampling: int | None,
    format: str,
    seed: int,
    hard_labels: bool,
) -> ImportPlan:
    if kind not in KINDS:
        raise ConfigError(f"unknown --kind {kind!r}: expected one of {', '.join(KINDS)}")
    if (kind == "loglik") != (priors is not None):
        raise ConfigError(
            "--kind loglik needs --priors (the priors Kaldi divided by)"
            if kind == "loglik"
            else f"--priors goes with --kind loglik, not {kind}"
        )
    corpus = FeatureStore.open(corpus_location)
    label_set, labels_from = _label_set(corpus, labels)
    source = open_source(src, format)
    try:
        return plan_source(
            source, corpus, src, kind=kind, label_set=label_set, labels_from=labels_from,
            labels=labels, priors=priors, rule=rule, values=values, split=split,
            subsampling=subsampling, seed=seed, hard_labels=hard_labels,
        )  # fmt: skip
    except BaseException:
        source.close()
        raise


def plan_source(
    source: Source,
    corpus: FeatureStore,
    src: str | Path,
    *,
    kind: str,
    label_set: LabelSet,
    labels_from: str,
    labels: str | Path | None,
    priors: str | Path | None,
    rule: Rule,
    values: str,
    split: str | None,
    subsampling: int | None,
    seed: int,
    hard_labels: bool,
) -> ImportPlan:
    c = len(label_set)
    if POSTERIOR in source.holds and kind != "probs":
        raise ConfigError(
            f"{source.location}: holds Kaldi Posterior entries (probabilities): give --kind probs"
        )
    todo, outside, missing = _select(source, corpus, split)
    for e, _ in todo:
        if e.classes is not None and e.classes != c:
            raise LabelSetError(
                f"{e.file}: utterance {e.utt_id} has {e.classes} classes; the label set "
                f"({labels_from}) has {c}"
            )
    clip = corpus.task == "clip"
    rows = [e.rows for e, _ in todo if e.rows is not None]
    level: Level = "utt" if clip and rows and all(r == 1 for r in rows) else "frame"
    if level == "utt":
        if subsampling not in (None, 1):
            raise ConfigError("--subsampling applies to frame-level targets (one row a frame)")
        s = 1
    else:
        s = _subsampling(todo, corpus, subsampling, source)
        for e, i in todo:
            if e.rows is not None:
                check_frames(e, e.rows, int(corpus.num_frames[i]), s, source.location)
    log_priors = read_priors(priors, c) if priors is not None else None
    has_hard = (
        hard_labels
        and corpus.task != TRANSCRIBED
        and corpus.level == level
        and label_set.names == corpus.labels.names
    )
    card: dict[str, Any] = {
        "kind": "imported",
        "source": str(src),
        "format": source.format,
        "value_kind": kind,
        "holds": sorted(source.holds),
        "priors": None if priors is None else {"file": str(priors), "sha256": ""},
        "labels": None if labels is None else str(labels),
        "num_classes": c,
    }
    extra = {
        "import": {
            "selection": {
                "split": split,
                "utterances": len(todo),
                "outside_split": outside,
                "not_in_source": missing,
            },
            "subsampling_inferred": subsampling is None and level == "frame",
            "frame_tolerance": FRAME_TOLERANCE,
            "seed": seed,
            "feature_cmvn": corpus.config.cmvn,
        }
    }
    name = Path(path_of(src)).name or str(src)
    meta = StoreMeta(  # validated now (rule, values), before the hashing
        labels=label_set.names,
        rule=rule,
        levels=(level,),
        values=values,
        hard_labels=(level,) if has_hard else (),
        teachers=(Teacher(name, "", card),),
        combine="single",
        frame_shift_ms=corpus.config.frame_shift_ms * s,
        subsampling=s,
        features={"fingerprint": corpus.feature_fingerprint, "config": corpus.config.to_dict()},
        corpus_fingerprint=corpus.fingerprint,
        extra=extra,
    )
    started = time.perf_counter()
    if priors is not None:
        card["priors"]["sha256"] = _file_sha256(priors)
    meta = replace(meta, teachers=(Teacher(name, source.digest(), card),))
    hash_seconds = time.perf_counter() - started
    return ImportPlan(
        source, corpus, kind, meta, level, s, todo, outside, missing, log_priors, hash_seconds
    )


def path_of(src: str | Path) -> str:
    """The file of an rspecifier (``scp:feats.scp`` -> ``feats.scp``), else ``src``."""
    text = str(src)
    head, sep, tail = text.partition(":")
    return tail if sep and head.split(",")[0] in ("ark", "scp") else text


# -- the work ----------------------------------------------------------------------------------
