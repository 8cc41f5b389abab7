"""``prepare``: read a corpus, compute filterbanks once, write the feature store.

Flow: ``read_corpus`` -> order utterances by split (train, dev, test, others) -> load,
downmix and resample audio and compute raw fbank features in a process pool (batches of
utterances, results consumed in order, so the store is byte-identical for any ``jobs``) ->
check each alignment against its frame count -> ``FeatureStoreWriter``. HDF5 archives skip
the audio and copy their features; so do corpora that bring their own (``Corpus.external``:
Kaldi ``feats.scp``, lhotse-stored features), loaded in this process by their reader's
loader and recorded as external features (the store's ``external_features``), with an
``FbankConfig`` whose ``num_mel_bins`` is their dimension D and whose frame shift and sample
rate are theirs where the source says (lhotse), ``features``' otherwise (Kaldi).

Transcripts (``Utterance.text``) go into the store for every task; a transcribed corpus
(no labels) gives a transcribed store.

Bad utterances (missing/corrupt/empty/truncated audio, NaN or infinite features,
alignment too far off, labels outside the label set, ids that do not match across files)
raise a one-line ``CorpusError`` naming the utterance and file, or with ``skip_bad`` are
left out, counted in the summary and listed in the store's ``skipped`` attribute.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import shutil
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from kdpipe import errors, outputs
from kdpipe.console import progress_bar
from kdpipe.corpus.audio import load_audio
from kdpipe.corpus.featstore import FeatureStoreWriter
from kdpipe.corpus.features import FbankConfig, compute_fbank
from kdpipe.corpus.manifest import SPLITS, TRANSCRIBED, Corpus, ExternalFeatures, Utterance
from kdpipe.corpus.readers import read_corpus
from kdpipe.corpus.readers.hdf5 import load_features, read_feature_config
from kdpipe.errors import AlignmentError, AudioError, CorpusError, KdpipeError
from kdpipe.zarrio import is_url

ALIGN_TOLERANCE = 2  # frames: window/shift rounding differences between aligners
BATCH = 32  # utterances per pool task: ~0.2 s of work for 1 s clips, little IPC overhead
MAX_AUTO_JOBS = 8  # beyond this, audio decoding is usually disk-bound
MIN_AUTO_SHARE = 256  # utterances per auto worker: ~1 s of work pays for a ~1 s spawn


@dataclass(frozen=True)
class PrepareSummary:
    """What ``prepare_corpus`` wrote."""

    location: str
    task: str
    num_utterances: int
    num_frames: int
    splits: dict[str, int]
    hours: float  # of audio written
    fingerprint: str
    seconds: float  # wall-clock time of the whole prepare
    jobs: int
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (utt id, reason)

    @property
    def utterances_per_second(self) -> float:
        return self.num_utterances / max(self.seconds, 1e-9)


def fix_alignment(
    ali: np.ndarray, num_frames: int, utt_id: str, where: str = "", tolerance: int = ALIGN_TOLERANCE
) -> np.ndarray:
    """Fit a (T_ali,) alignment to ``num_frames``: trim, or repeat the last label.

    A difference of more than ``tolerance`` frames is an ``AlignmentError``.
    """
    diff = len(ali) - num_frames
    if abs(diff) > tolerance:
        at = f" ({where})" if where else ""
        raise AlignmentError(
            f"utterance {utt_id}{at}: alignment has {len(ali)} frames but the features have "
            f"{num_frames}; more than {tolerance} apart"
        )
    if diff > 0:
        return ali[:num_frames]
    if diff < 0:
        return np.concatenate([ali, np.full(-diff, ali[-1], dtype=ali.dtype)])
    return ali


def prepare_corpus(
    src: str | Path,
    out: str | Path,
    format: str | None = None,
    features: FbankConfig = FbankConfig(),  # noqa: B008 (frozen, immutable)
    jobs: int | None = None,
    skip_bad: bool = False,
    progress: bool = True,
    *,
    overwrite: bool = False,
    split: str = "train",
    feature_source: str = "auto",
    norm_vars: bool = False,
) -> PrepareSummary:
    """Compute features of the corpus at ``src`` into a new feature store at ``out``.

    ``features`` sets the filterbank (for HDF5 archives only its ``cmvn`` is used; the rest
    comes from the file; for external features see the module doc). ``jobs`` worker
    processes (default: CPUs, at most 8; 1 = none). ``split`` names the split of a single
    Kaldi data dir or lhotse manifest. ``feature_source`` (``auto``, ``audio``, ``stored``)
    and ``norm_vars`` are ``read_corpus``'s.
    """
    started = time.perf_counter()
    outputs.claim_output(out, makes=outputs.FEATURE_STORE, inputs=[src], overwrite=overwrite)
    corpus = read_corpus(
        src,
        format,
        split=split,
        skip_bad=skip_bad,
        sample_rate=features.sample_rate,
        feature_source=feature_source,
        norm_vars=norm_vars,
    )
    cfg = features
    if corpus.format == "hdf5":
        cfg = read_feature_config(src, cmvn=features.cmvn)
    elif corpus.external is not None:
        cfg = external_config(corpus.external, features)
    else:
        cfg.check_computable()  # before the store and the workers: one line
    utts = _store_order(corpus.utterances)
    skipped = list(corpus.skipped)
    n_jobs = _num_jobs(jobs, len(utts))
    writer = FeatureStoreWriter(
        out,
        task=corpus.task,
        labels=corpus.labels,
        config=cfg,
        source=str(src) if is_url(src) else str(Path(src).resolve()),  # teach re-reads audio
        source_format=corpus.format,
        overwrite=overwrite,
        external=None if corpus.external is None else corpus.external.record(),
    )
    try:
        if corpus.format == "hdf5":
            feats_iter: Iterable[tuple[Any, float | None, Any]] = (
                (feats, len(feats) * cfg.frame_shift_ms / 1000, None)
                for feats in load_features(src, [utt.features or utt.id for utt in utts])
            )
        elif corpus.external is not None:
            feats_iter = corpus.external.load(utts)
        else:
            size = min(BATCH, max(1, math.ceil(len(utts) / (4 * n_jobs))))  # >= 4 per worker
            batches = [utts[i : i + size] for i in range(0, len(utts), size)]
            fn = partial(_featurize_batch, cfg=cfg)
            feats_iter = (r for batch in _ordered_map(fn, batches, n_jobs) for r in batch)
        hours = 0.0
        for utt, (feats, duration, err) in _progress(
            zip(utts, feats_iter, strict=True), len(utts), progress
        ):
            try:
                if err is not None:
                    raise getattr(errors, err[0], CorpusError)(err[1])
                if duration is None:  # a loader that knows frames, not seconds
                    duration = len(feats) * cfg.frame_shift_ms / 1000
                hours += _add(writer, corpus, utt, feats, duration)
            except CorpusError as error:
                if not skip_bad:
                    raise
                skipped.append((utt.id, str(error)))
        if not writer.ids:
            first = f"; first: {skipped[0][1]}" if skipped else ""
            raise CorpusError(f"{src}: all {len(skipped)} utterances were skipped{first}")
        fingerprint = writer.close(skipped=skipped)
    except BaseException:
        if not is_url(out):
            shutil.rmtree(out, ignore_errors=True)  # never leave a half-written store
        raise
    return PrepareSummary(
        location=str(out),
        task=corpus.task,
        num_utterances=len(writer.ids),
        num_frames=int(sum(writer.lengths)),
        splits={s: writer.splits.count(s) for s in dict.fromkeys(writer.splits)},
        hours=hours / 3600,
        fingerprint=fingerprint,
        seconds=time.perf_counter() - started,
        jobs=n_jobs,
        skipped=skipped,
    )


def external_config(external: ExternalFeatures, features: FbankConfig) -> FbankConfig:
    """The ``FbankConfig`` a store of external features records: ``num_mel_bins`` = D, the
    frame shift and sample rate of the source where it says, ``features``' otherwise (and
    ``features``' cmvn, applied on read, and window)."""
    shift = external.frame_shift_ms or features.frame_shift_ms
    return replace(
        features,
        num_mel_bins=external.dim,
        frame_shift_ms=shift,
        frame_length_ms=max(features.frame_length_ms, shift),
        sample_rate=external.sample_rate or features.sample_rate,
    )


def _add(
    writer: FeatureStoreWriter, corpus: Corpus, utt: Utterance, feats: np.ndarray, duration: float
) -> float:
    """Check one utterance's features and labels, append it; return its duration (s)."""
    where = utt.audio or f"{corpus.source}:{utt.features or utt.id}"
    if len(feats) == 0:
        raise AudioError(
            f"utterance {utt.id}: {where} is too short for one frame ({duration:.3f} s)"
        )
    finite = np.isfinite(feats).all(axis=1)  # (T,): a NaN or inf would poison the CMVN stats
    if not finite.all():
        first = int(np.flatnonzero(~finite)[0])
        raise CorpusError(
            f"utterance {utt.id}: {where}: features hold NaN or infinite values "
            f"({int((~finite).sum())} of {len(feats)} frames, the first {first})"
        )
    clip, frame = None, None
    if corpus.task == "frame":
        assert corpus.alignments is not None  # a frame-task corpus has them
        frame = fix_alignment(corpus.alignments[utt.id], len(feats), utt.id, where)
    elif corpus.task != TRANSCRIBED:
        assert utt.label is not None  # a clip-task corpus labels every utterance
        clip = corpus.label_set.index(utt.label)
    writer.add(
        utt.id,
        feats,
        speaker=utt.speaker,
        split=utt.split,
        duration=duration,
        clip_label=clip,
        frame_labels=frame,
        text=utt.text,
    )
    return duration


def _featurize_batch(
    batch: list[Utterance], cfg: FbankConfig
) -> list[tuple[np.ndarray | None, float, tuple[str, str] | None]]:
    """Worker: (features (T, F), duration s, error (class name, message) or None) per utt."""
    out: list[tuple[Any, float, Any]] = []
    for utt in batch:
        try:
            if utt.audio is None:
                raise AudioError(f"utterance {utt.id}: no audio file")
            wave = load_audio(utt.audio, cfg.sample_rate, utt.start, utt.end, utt_id=utt.id)  # (S,)
            out.append((compute_fbank(wave, cfg), len(wave) / cfg.sample_rate, None))
        except KdpipeError as error:
            out.append((None, 0.0, (type(error).__name__, str(error))))
    return out


def _ordered_map(fn: Callable[[Any], Any], items: list[Any], jobs: int) -> Iterator[Any]:
    """``map(fn, items)`` over ``jobs`` processes, in order, with a bounded number in flight."""
    if jobs <= 1:
        yield from map(fn, items)
        return
    ctx = multiprocessing.get_context("spawn")  # safe with threads (zarr, rich) in the parent
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=ctx)
    try:
        rest = iter(items)
        pending = deque(pool.submit(fn, item) for item in islice(rest, 2 * jobs))
        while pending:
            result = pending.popleft().result()
            pending.extend(pool.submit(fn, item) for item in islice(rest, 1))
            yield result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _num_jobs(jobs: int | None, n: int) -> int:
    """Worker processes: as asked, or CPUs up to 8 with at least 256 utterances each."""
    if jobs is None:
        jobs = min(os.cpu_count() or 1, MAX_AUTO_JOBS, max(1, math.ceil(n / MIN_AUTO_SHARE)))
    if jobs < 1:
        raise errors.ConfigError(f"--jobs must be >= 1, got {jobs}")
    return max(1, min(jobs, n))


def _store_order(utts: list[Utterance]) -> list[Utterance]:
    """Utterances grouped by split (train, dev, test, then others by name), stable."""
    rank = {s: (i, s) for i, s in enumerate(SPLITS)}
    return sorted(utts, key=lambda utt: rank.get(utt.split, (len(SPLITS), utt.split)))


def _progress(items: Iterable[Any], total: int, show: bool) -> Iterator[Any]:
    with progress_bar("features", total, enabled=show, unit="utt") as advance:
        for item in items:
            yield item
            advance(1)
