"""``import_posteriors``: teacher outputs someone already computed, into a target store.

``kdpipe store import SRC --out STORE --corpus FEATS --kind KIND``: the outputs of a teacher
run elsewhere (Kaldi ``nnet3-compute``, a NumPy or HDF5 dump; formats in
``kdpipe.store.interop.sources``) become a store that ``kdpipe learn`` streams like one
``kdpipe teach`` wrote: every selection rule and value encoding, hard labels from the
corpus, quality columns, resumable. Each utterance's rows go through
``PosteriorWriter``, the one path from (R, C) log-probs to stored targets that teach uses.
Legend: R rows of an utterance in the source, T its input frames in the corpus, s the
store's subsampling, C classes. Pure numpy (no torch).

Order of work: everything that can fail on the inputs is checked first, from the source's
index and the corpus, before any utterance is converted (docs/interop.md, "Import"):
the ids (every source id must be in the corpus; ``split`` keeps those in the split and
skips the others), the class counts, the frame counts (R must be within ``FRAME_TOLERANCE``
of ceil(T / s); the rows are then fitted to ceil(T / s), trimmed or padded with the last
row, as teach fits a member), the priors; then the source is hashed (its provenance) and
the store opened (``FingerprintMismatch`` for a store of other settings unless
``overwrite``). What only the data tells (NaN, a Posterior's class index) fails on the
utterance, naming it and its file; committed parts stay and a rerun resumes.

Threads: the calling thread reads the source (and the corpus' hard labels) ahead, a
bounded queue feeds ``threads`` workers that convert, select and measure (numpy releases
the GIL there), and the workers hand utterances to the store writer in the source's order
(``_InOrder``), so that the parts do not depend on the thread count.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from kdpipe import outputs
from kdpipe.console import progress_bar
from kdpipe.corpus.featstore import FeatureStore
from kdpipe.corpus.manifest import TRANSCRIBED
from kdpipe.corpus.priors import read_priors
from kdpipe.corpus.views import labels_at_rate
from kdpipe.errors import ConfigError, CorpusError, KdpipeError, LabelSetError, StoreError
from kdpipe.essence import Rule
from kdpipe.labels import LabelSet
from kdpipe.levels import Level
from kdpipe.store.interop.sources import POSTERIOR, Data, Entry, Posteriors, Source, open_source
from kdpipe.store.interop.sources import file_sha256 as _file_sha256
from kdpipe.store.posteriors import Added, PosteriorWriter, Totals
from kdpipe.store.spec import StoreMeta, Teacher
from kdpipe.store.writer import PART_FRAMES, StoreWriter

KINDS = ("logits", "log_probs", "probs", "loglik")
FRAME_TOLERANCE = 2  # rows a source may be off ceil(T / s) by (teach's tolerance for members)
PROB_SLACK = 0.01  # a row of probabilities may sum to 1 + this (rounding in text files)
QUEUE_UTTERANCES = 6  # read ahead of the workers


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
class _Plan:
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
        known = [(_rows(source.read(e)), int(corpus.num_frames[i]))]
    rows = sum(r for r, _ in known)
    frames = sum(t for _, t in known)
    s = round(frames / rows) if rows else 0
    if s < 1:
        raise CorpusError(
            f"{source.location}: {rows} rows for {frames} input frames: more rows than "
            "frames, cannot infer the subsampling (give --subsampling)"
        )
    return s


def _rows(data: Data) -> int:
    return data.num_rows if isinstance(data, Posteriors) else len(data)


def _check_frames(entry: Entry, rows: int, frames: int, s: int, location: str) -> None:
    want = output_rows(frames, s)
    if rows == 0 or abs(rows - want) > FRAME_TOLERANCE:
        raise CorpusError(
            f"{location}: utterance {entry.utt_id}: {rows} rows, but its {frames} input "
            f"frames make {want} at subsampling {s} (tolerance {FRAME_TOLERANCE}): another "
            "corpus, or wrong --subsampling?"
        )


def _plan(
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
) -> _Plan:
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
        return _plan_source(
            source, corpus, src, kind=kind, label_set=label_set, labels_from=labels_from,
            labels=labels, priors=priors, rule=rule, values=values, split=split,
            subsampling=subsampling, seed=seed, hard_labels=hard_labels,
        )  # fmt: skip
    except BaseException:
        source.close()
        raise


def _plan_source(
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
) -> _Plan:
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
                _check_frames(e, e.rows, int(corpus.num_frames[i]), s, source.location)
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
    name = Path(_path_of(src)).name or str(src)
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
    return _Plan(
        source, corpus, kind, meta, level, s, todo, outside, missing, log_priors, hash_seconds
    )


def _path_of(src: str | Path) -> str:
    """The file of an rspecifier (``scp:feats.scp`` -> ``feats.scp``), else ``src``."""
    text = str(src)
    head, sep, tail = text.partition(":")
    return tail if sep and head.split(",")[0] in ("ark", "scp") else text


# -- the work ----------------------------------------------------------------------------------


class _Dropped(Exception):
    """An utterance after a failed one: not written."""


class _InOrder:
    """The ``StoreWriter`` that ``PosteriorWriter`` sees from several worker threads: each
    ``add`` waits for its turn (``begin(seq)`` says which utterance a thread is on), so
    utterances reach the store in the source's order whatever the threads; after a failure
    at ``seq``, later utterances are dropped (``_Dropped``), earlier ones still go in."""

    def __init__(self, writer: StoreWriter) -> None:
        self.writer, self.meta = writer, writer.meta
        self._cond = threading.Condition()
        self._next = 0
        self._local = threading.local()
        self.errors: dict[int, BaseException] = {}
        self.stop: float = float("inf")  # seq of the first failure

    def begin(self, seq: int) -> None:
        self._local.seq = seq

    def add(self, utt_id: str, **kw: Any) -> bool:
        seq = self._local.seq
        with self._cond:
            while self._next != seq:
                if seq > self.stop:
                    raise _Dropped
                self._cond.wait()
            if seq > self.stop:
                raise _Dropped
        try:
            return self.writer.add(utt_id, **kw)
        finally:
            with self._cond:
                self._next += 1
                self._cond.notify_all()

    def fail(self, seq: float, error: BaseException | None) -> None:
        with self._cond:
            if error is not None:
                self.errors[int(seq)] = error
            self.stop = min(self.stop, seq)
            self._cond.notify_all()

    @property
    def failed(self) -> bool:
        return self.stop != float("inf")

    def first_error(self) -> BaseException | None:
        return self.errors[min(self.errors)] if self.errors else None


@dataclass
class _Item:
    seq: int
    entry: Entry
    data: Data
    frames: int  # T, input frames in the corpus
    hard: np.ndarray | int | None


class _Workers:
    """Convert, fit, select and write utterances in ``threads`` threads (see ``_InOrder``)."""

    def __init__(self, plan: _Plan, writer: StoreWriter, summary: ImportSummary, threads: int,
                 seed: int) -> None:  # fmt: skip
        self.plan, self.summary = plan, summary
        self.gate = _InOrder(writer)
        # PosteriorWriter needs only ``meta`` and ``add`` of its writer
        self.posteriors = PosteriorWriter(self.gate, seed)
        self.queue: queue.Queue[_Item | None] = queue.Queue(maxsize=QUEUE_UTTERANCES)
        self.lock = threading.Lock()
        self.threads = [
            threading.Thread(target=self._run, name=f"kdpipe-import-{k}", daemon=True)
            for k in range(threads)
        ]
        for t in self.threads:
            t.start()

    def put(self, item: _Item) -> None:
        while not self.gate.failed:
            try:
                self.queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def finish(self) -> None:
        for _ in self.threads:
            self.queue.put(None)
        for t in self.threads:
            t.join()

    def abort(self) -> None:
        """Stop at once (the reading thread failed or was interrupted)."""
        self.gate.fail(-1, None)
        try:
            while True:
                self.queue.get_nowait()
        except queue.Empty:
            pass
        for _ in self.threads:
            try:
                self.queue.put_nowait(None)
            except queue.Full:
                break
        for t in self.threads:
            t.join(timeout=30)

    def _run(self) -> None:
        while (item := self.queue.get()) is not None:
            if item.seq > self.gate.stop:
                continue
            self.gate.begin(item.seq)
            try:
                added, fit = self._one(item)
            except _Dropped:
                continue
            except BaseException as error:
                self.gate.fail(item.seq, error)
                continue
            with self.lock:
                s = self.summary
                s.count(added)
                s.trimmed += fit < 0
                s.padded += fit > 0

    def _one(self, item: _Item) -> tuple[Added, int]:
        plan, e = self.plan, item.entry
        c = plan.meta.num_classes
        data = item.data
        x = data.dense(c, e.where) if isinstance(data, Posteriors) else data
        if x.shape[1] != c:
            raise LabelSetError(f"{e.where}: {x.shape[1]} classes; the label set has {c}")
        if plan.level == "utt":
            if len(x) != 1:
                raise CorpusError(f"{e.where}: {len(x)} rows; utterance-level targets need 1")
            want = 1
        else:
            _check_frames(e, len(x), item.frames, plan.subsampling, plan.source.location)
            want = output_rows(item.frames, plan.subsampling)
        fit = want - len(x)
        logp = to_logprobs(fit_rows(x, want), plan.kind, e.where, plan.log_priors)  # (T', C)
        added = self.posteriors.add(e.utt_id, logp, hard=item.hard)
        if added is None:  # committed meanwhile by another writer
            raise _Dropped
        return added, fit


def _hard(plan: _Plan, i: int) -> np.ndarray | int | None:
    """The corpus' hard labels at the store's rate: frame j*s (teach's rule), -1 past the
    labels; the clip label at utterance level; None without hard labels."""
    if plan.level not in plan.meta.hard_labels:
        return None
    corpus = plan.corpus
    if plan.level == "utt":
        assert corpus.clip_labels is not None
        return int(corpus.clip_labels[i])
    want = output_rows(int(corpus.num_frames[i]), plan.subsampling)
    return labels_at_rate(corpus.frame_labels(i), (0, -1), plan.subsampling, want)


def import_posteriors(
    src: str | Path,
    corpus: str | Path,
    out: str | Path,
    *,
    kind: str,
    labels: str | Path | None = None,
    priors: str | Path | None = None,
    rule: Rule | None = None,
    values: str = "uint8",
    split: str | None = None,
    subsampling: int | None = None,
    format: str = "auto",
    overwrite: bool = False,
    part_frames: int | None = None,
    storage_options: dict[str, Any] | None = None,
    progress: bool = True,
    threads: int | None = None,
    seed: int = 0,
    hard_labels: bool = True,
) -> ImportSummary:
    """Import the teacher outputs ``src`` (of ``kind``: logits, log_probs, probs, loglik)
    for the utterances of the feature store ``corpus`` into the target store ``out``.

    ``labels``: the teacher's label file (default: the corpus' labels; hard labels are
    stored only when the two agree); ``priors``: Kaldi priors for ``loglik``; ``split``:
    import only the source utterances in this corpus split (the others are skipped and
    counted); ``subsampling``: the source's rows per input frame (default inferred);
    ``threads``: worker threads (default: the CPUs, at most 4). Resumable: a rerun skips
    committed utterances (reading nothing of them) and gives the same store; a store of
    other settings is refused unless ``overwrite``. See the module docstring.
    """
    started = time.perf_counter()
    outputs.claim_output(
        out, makes=outputs.TARGET_STORE, inputs=[src, corpus, labels, priors],
        overwrite=overwrite, storage_options=storage_options,
    )  # fmt: skip
    plan = _plan(
        src, corpus, kind=kind, labels=labels, priors=priors, rule=rule or Rule(),
        values=values, split=split, subsampling=subsampling, format=format, seed=seed,
        hard_labels=hard_labels,
    )  # fmt: skip
    with plan.source as source:
        summary = ImportSummary(
            store=str(out), source=str(src), format=source.format, level=plan.level,
            subsampling=plan.subsampling,
            outside_split=plan.outside_split, not_in_source=plan.not_in_source,
            hash_seconds=plan.hash_seconds,
        )  # fmt: skip
        writer = StoreWriter(
            out, plan.meta, storage_options=storage_options, overwrite=overwrite,
            part_frames=part_frames or PART_FRAMES, shard="import",
        )  # fmt: skip
        done = writer.committed
        summary.before = len(done)
        todo = [(e, i) for e, i in plan.todo if e.utt_id not in done]
        summary.skipped = len(plan.todo) - len(todo)
        total = sum(e.rows or 0 for e, _ in todo)
        n = max(1, min(4, os.cpu_count() or 1)) if threads is None else max(1, threads)
        workers = _Workers(plan, writer, summary, n, seed)
        try:
            with progress_bar("import", total, enabled=progress, unit="rows") as advance:
                for seq, (e, i) in enumerate(todo):
                    if workers.gate.failed:
                        break
                    try:
                        data = source.read(e)
                    except KdpipeError as error:
                        workers.gate.fail(seq, error)
                        break
                    frames = int(plan.corpus.num_frames[i])
                    workers.put(_Item(seq, e, data, frames, _hard(plan, i)))
                    advance(e.rows or _rows(data))
        except BaseException:
            workers.abort()
            writer.release()
            raise
        workers.finish()
        failure = workers.gate.first_error()
        if failure is not None:
            writer.release()
            raise failure  # the buffer is abandoned; committed parts stay (a rerun resumes)
        writer.close()
    summary.settle(writer.dropped_at_commit, writer.num_committed)  # counted as added
    summary.source_bytes = source.bytes_read
    summary.parts = list(writer.parts_written)
    summary.bytes = writer.bytes_written()
    summary.seconds = time.perf_counter() - started
    return summary
