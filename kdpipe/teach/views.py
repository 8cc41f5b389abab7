"""Input views (crop windows) and per-utterance random generators.

A view makes the teacher label input frames [start, stop) of an utterance instead of the
whole of it (progressive label distillation: the teacher sees a shorter input than it was
trained on). The window is recorded per utterance in the target store
(``index/input_window``), so ``learn`` feeds the student exactly the same frames:
``features(i)[start:stop]``, CMVN applied to the whole utterance first, as here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from kdpipe.errors import ConfigError
from kdpipe.teach.config import ViewConfig

NO_CROP = (0, -1)  # the store's "whole utterance" window


def utt_rng(seed: int, utt_id: str, stream: str) -> np.random.Generator:
    """A generator that depends only on (seed, utterance id, stream): identical in resumed,
    sharded and reordered runs. ``stream`` separates uses (``view``, ``sample``...)."""
    digest = hashlib.sha256(f"{stream}\0{utt_id}".encode()).digest()
    return np.random.default_rng([seed & 0xFFFFFFFF, *np.frombuffer(digest[:16], np.uint32)])


def ms_to_frames(ms: float, frame_shift_ms: float) -> int:
    """Whole input frames in ``ms`` milliseconds (nearest)."""
    return round(ms / frame_shift_ms)


def crop_windows(
    view: ViewConfig | None,
    ids: Sequence[str],
    num_frames: np.ndarray,
    frame_shift_ms: float,
) -> np.ndarray:
    """(N, 2) int64 [start, stop) input frames per utterance; (0, -1) rows without a view.

    ``ConfigError`` naming the first utterance shorter than the window (known before any
    inference).
    """
    n = len(ids)
    out = np.tile(np.asarray(NO_CROP, dtype=np.int64), (n, 1))
    if view is None:
        return out
    length = ms_to_frames(view.length_ms, frame_shift_ms)
    offset = ms_to_frames(view.offset_ms, frame_shift_ms)
    if length < 1:
        raise ConfigError(f"view: length_ms {view.length_ms} is less than one frame")
    need = length if view.random else offset + length
    short = np.flatnonzero(np.asarray(num_frames) < need)
    if len(short):
        i = int(short[0])
        raise ConfigError(
            f"view: the crop window ({need} frames = {need * frame_shift_ms:g} ms) is longer "
            f"than utterance {ids[i]} ({int(num_frames[i])} frames); {len(short)} utterance(s) "
            "are too short: shorten the window or select longer utterances"
        )
    for i, u in enumerate(ids):
        start = offset
        if view.random:
            start = int(utt_rng(view.seed, u, "view").integers(0, int(num_frames[i]) - length + 1))
        out[i] = (start, start + length)
    return out


def view_lengths(windows: np.ndarray, num_frames: np.ndarray) -> np.ndarray:
    """(N,) input frames the teacher sees per utterance."""
    stop = np.where(windows[:, 1] < 0, num_frames, windows[:, 1])
    return (stop - windows[:, 0]).astype(np.int64)
