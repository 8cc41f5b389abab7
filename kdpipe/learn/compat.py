"""Compatibility checks between a target store, a corpus (feature store) and a student,
run before the first training step. Every refusal names the store and what differs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from kdpipe.corpus.featstore import FeatureStore
from kdpipe.errors import (
    ConfigError,
    FingerprintMismatch,
    LabelSetError,
    ModelError,
    StoreError,
    StoreIntegrityError,
)
from kdpipe.labels import LabelSet
from kdpipe.learn.targets import check_rates
from kdpipe.levels import LEVEL_WORDS, Level
from kdpipe.store.reader import StoreReader
from kdpipe.store.verify import verify_store


def check_meta(
    reader: StoreReader,
    corpus: FeatureStore,
    level: Level,
    student_sub: int,
    ctc: dict[str, Any] | None = None,
    labels: LabelSet | None = None,
) -> None:
    """Labels, features, frame shift, level and subsampling of ``reader`` against the corpus
    and the student (``LabelSetError``, ``FingerprintMismatch``, ``ModelError``); a CTC
    student (``ctc``: its card record, ``learn.ctc.ctc_record``) needs a CTC teacher's
    store over the same tokens and blank (``labels``), a frame-label student a frame-label
    store."""
    where = f"store {reader.location}"
    meta = reader.meta
    check_ctc(reader, ctc)
    if ctc is None or labels is None:
        reader.check_labels(corpus.labels, f"corpus {corpus.location}")
    else:
        reader.check_labels(labels, "the student's CTC units")
    feat_fp = meta.features.get("fingerprint") if meta.features else None
    if feat_fp and feat_fp != corpus.feature_fingerprint:
        theirs = corpus.config.to_dict()
        ours = meta.features.get("config") or {}
        diffs = [f"{key} {ours.get(key)!r} vs {theirs.get(key)!r}" for key in sorted(theirs)
                 if key in ours and ours.get(key) != theirs.get(key)]  # fmt: skip
        detail = f"; differing settings: {', '.join(diffs)}" if diffs else ""
        raise FingerprintMismatch(
            f"{where}: targets were computed on features with fingerprint {feat_fp}, "
            f"corpus {corpus.location} has {corpus.feature_fingerprint}{detail}"
        )
    if meta.corpus_fingerprint and meta.corpus_fingerprint not in (
        corpus.fingerprint,
        corpus.attrs.get("fingerprint"),
    ):
        raise FingerprintMismatch(
            f"{where}: targets were computed on corpus {meta.corpus_fingerprint}, "
            f"{corpus.location} is {corpus.fingerprint} (another corpus or a changed one)"
        )
    if level not in meta.levels:
        raise ModelError(
            f"{where} holds {'/'.join(meta.levels)}-level targets; the student is "
            f"{LEVEL_WORDS[level]} level (needs {level}-level targets)"
        )
    if level == "frame":
        shift = corpus.config.frame_shift_ms
        subs = np.unique(reader.subsampling) if len(reader) else np.array([meta.subsampling])
        for sub in subs:
            check_rates(student_sub, int(sub), where)
        for sub, teacher_shift in zip(reader.subsampling, reader.frame_shift_ms, strict=True):
            teacher_sub, teacher_ms = int(sub), float(teacher_shift)
            if abs(teacher_ms - shift * teacher_sub) > 1e-3:
                raise FingerprintMismatch(
                    f"{where}: teacher frame shift {teacher_ms:g} ms with subsampling "
                    f"{teacher_sub} does not match the corpus frame shift {shift:g} ms x "
                    f"{teacher_sub}"
                )


def check_ctc(reader: StoreReader, ctc: dict[str, Any] | None) -> None:
    """A CTC store for a CTC student only, with the student's tokens and blank."""
    where = f"store {reader.location}"
    stored = reader.meta.extra.get("ctc")
    if stored is None and ctc is None:
        return
    if stored is None:
        raise ModelError(
            f"{where} holds a frame-label teacher's targets; a CTC student distils from a CTC "
            "teacher's store (teach with a checkpoint trained with --loss ctc)"
        )
    if ctc is None:
        kind = stored.get("units", {}).get("kind", "?")
        raise ModelError(
            f"{where} holds a CTC teacher's targets (blank and {kind} tokens); train the "
            f"student with --loss ctc --units {kind} (or give a frame-label store)"
        )
    theirs, ours = stored.get("units", {}), ctc.get("units", {})
    if stored.get("blank") != ctc.get("blank"):
        raise LabelSetError(
            f"{where}: blank index {stored.get('blank')} vs the student's {ctc.get('blank')}"
        )
    if theirs.get("fingerprint") != ours.get("fingerprint"):
        raise LabelSetError(
            f"{where}: the teacher's {theirs.get('kind')} units (fingerprint "
            f"{theirs.get('fingerprint')}) are not the student's {ours.get('kind')} units "
            f"({ours.get('fingerprint')}): build both from the same corpus and --units"
        )


def check_verified(location: str, labels: LabelSet | Sequence[str]) -> None:
    """``StoreIntegrityError`` unless ``kdpipe store verify`` would pass on the store."""
    report = verify_store(location, labels=labels)
    if not report.ok:
        more = len(report.errors) - 1 + report.more_errors
        extra = f" (+{more} more)" if more else ""
        raise StoreIntegrityError(
            f"store {location} fails verification: {report.errors[0]}{extra}; "
            f"see `kdpipe store verify {location}`"
        )


def join_ids(
    reader: StoreReader, corpus: FeatureStore, split: str, allow_partial: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(store positions, corpus indices) of the split's utterances that the store covers,
    in store order. Refuses an empty intersection, and a partial one unless allowed."""
    in_split = corpus.indices(split)
    corpus_pos = {corpus.ids[index]: int(index) for index in in_split}
    pos = [position for position, utt in enumerate(reader.ids) if utt in corpus_pos]
    where = f"store {reader.location}"
    if not pos:
        raise StoreError(
            f"{where} has no targets for any of the {len(in_split)} utterances of split "
            f"{split!r} of {corpus.location} (store ids look like "
            f"{reader.ids[0] if len(reader) else 'nothing'!r}, corpus ids like "
            f"{corpus.ids[int(in_split[0])]!r})"
        )
    missing = len(in_split) - len(pos)
    if missing and not allow_partial:
        have = set(reader.ids)
        split_ids = (corpus.ids[int(index)] for index in in_split)
        first = next(utt for utt in split_ids if utt not in have)
        raise StoreError(
            f"{where} covers {len(pos)} of the {len(in_split)} utterances of split {split!r} "
            f"({missing} missing, e.g. {first}); pass --allow-partial to train on the "
            f"{len(pos)} it covers"
        )
    positions = np.array(pos, dtype=np.int64)
    indices = [corpus_pos[reader.ids[position]] for position in positions]
    return positions, np.array(indices, dtype=np.int64)


def crop_windows(
    reader: StoreReader, pos: np.ndarray, corpus: FeatureStore, fidx: np.ndarray
) -> np.ndarray:
    """(U, 2) [start, stop) input frames of each utterance (the store's input window with
    stop = -1 resolved); ``StoreError`` naming an utterance whose window does not fit."""
    win = reader.input_window[pos].copy()  # (U, 2)
    total = corpus.num_frames[fidx]  # (U,)
    win[:, 1] = np.where(win[:, 1] < 0, total, win[:, 1])
    bad = (win[:, 0] < 0) | (win[:, 1] > total) | (win[:, 1] <= win[:, 0])
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise StoreError(
            f"store {reader.location}: utterance {reader.ids[pos[first]]}: input window "
            f"[{win[first, 0]}, {reader.input_window[pos[first], 1]}) does not fit its "
            f"{total[first]} feature frames"
        )
    return win


def check_frame_counts(
    reader: StoreReader, pos: np.ndarray, win: np.ndarray, corpus_location: str
) -> None:
    """Teacher rows per utterance against the (cropped) input frames: equal to
    ceil(frames / s) without subsampling, within 2 with it (as ``store verify``)."""
    sub = reader.subsampling[pos].astype(np.int64)
    frames = win[:, 1] - win[:, 0]
    want = -(-frames // sub)
    have = reader.num_frames[pos]
    tol = np.where(sub > 1, 2, 0)
    bad = np.abs(have - want) > tol
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise StoreError(
            f"store {reader.location}: utterance {reader.ids[pos[first]]} has {have[first]} "
            f"teacher frames but {frames[first]} input frames in {corpus_location} (subsampling "
            f"{sub[first]}: expected {want[first]}); {int(bad.sum())} utterance(s) disagree: were "
            "the targets made from other features?"
        )


def check_sampled(reader: StoreReader, temperature: float) -> None:
    """The sampled essence is unbiased only at T = 1 (see ``losses.sampled_kd``)."""
    if reader.meta.rule.name == "sample" and temperature != 1.0:
        raise ConfigError(
            f"store {reader.location} holds sampled targets (rule {reader.meta.rule}); "
            f"they can only be used at temperature 1 (got {temperature}): re-tempering "
            "needs the teacher's probabilities, which a sample does not keep"
        )
