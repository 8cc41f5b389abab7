"""Views of a corpus's inputs: crop windows, and per-utterance seeded generators.

A view keeps input frames [start, stop) of each utterance instead of the whole of it:
``teach`` labels only the window (progressive label distillation: the teacher sees a
shorter input than it was trained on), and ``learn``/``eval`` can train and score on the
same windows (``LabelledData.from_store(..., view=...)``). CMVN is applied to the whole
utterance first, then the window is cut: ``features(i)[start:stop]``, frame labels
likewise. Teach records the window per utterance in the target store
(``index/input_window``), so a student distilled from it sees exactly those frames.
Windows depend only on (view, utterance id, frame count): sharded, resumed and reordered
runs cut the same ones. Legend: N utterances.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from kdpipe.errors import ConfigError
from kdpipe.schema import check_keys, from_dict, to_dict
from kdpipe.seeds import utt_rng

NO_CROP = (0, -1)  # the target store's "whole utterance" window
VIEW_KEYS = ("length_ms", "offset_ms", "random", "seed")


@dataclass(frozen=True)
class ViewConfig:
    """A crop window: input frames [offset, offset + length) of each utterance only."""

    length_ms: float  # the window's length
    offset_ms: float = 0.0  # fixed start; ignored when random
    random: bool = False  # draw the start per utterance, uniformly, from (seed, utt id)
    seed: int = 0  # the generator of random starts; recorded so learn can re-derive them

    def __post_init__(self) -> None:
        for name in ("length_ms", "offset_ms"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ConfigError(f"view: {name} must be a number, got {v!r}")
        if not self.length_ms > 0 or self.offset_ms < 0:
            raise ConfigError("view: need length_ms > 0 and offset_ms >= 0")
        if not isinstance(self.random, bool) or not isinstance(self.seed, int):
            raise ConfigError("view: random must be true/false and seed an integer")

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "view") -> ViewConfig:
        """From a ``view:`` mapping (keys of this class; ``length_ms`` required)."""
        check_keys(d, cls, where)
        if "length_ms" not in d:
            raise ConfigError(f"{where}: missing key 'length_ms'")
        return from_dict(cls, d, where)


def view_from_options(
    base: Mapping[str, Any] | None = None,
    length_ms: float | None = None,
    offset_ms: float | None = None,
    random: bool | None = None,
    seed: int | None = None,
) -> ViewConfig | None:
    """A ``view:`` mapping (from a config file) with CLI overrides (``--view-ms``,
    ``--view-offset-ms``, ``--view-random/--no-view-random``, ``--view-seed``) on top;
    None when neither gives anything. ``ConfigError`` for options without a length."""
    if base is not None and not isinstance(base, Mapping):
        raise ConfigError(f"view: expected a mapping of {', '.join(VIEW_KEYS)}, got {base!r}")
    settings = dict(base or {})
    over = {"length_ms": length_ms, "offset_ms": offset_ms, "random": random, "seed": seed}
    settings.update({k: v for k, v in over.items() if v is not None})
    if not settings:
        return None
    check_keys(settings, ViewConfig, "view")
    if "length_ms" not in settings:
        raise ConfigError("view: settings given without a length (--view-ms or view.length_ms)")
    return ViewConfig.from_dict(settings)


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
    inference or training).
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
    for i, utt_id in enumerate(ids):
        start = offset
        if view.random:
            latest = int(num_frames[i]) - length  # the last start that fits the window
            start = int(utt_rng(view.seed, utt_id, "view").integers(0, latest + 1))
        out[i] = (start, start + length)
    return out


def view_lengths(windows: np.ndarray, num_frames: np.ndarray) -> np.ndarray:
    """(N,) input frames seen per utterance."""
    stop = np.where(windows[:, 1] < 0, num_frames, windows[:, 1])
    return (stop - windows[:, 0]).astype(np.int64)


def labels_at_rate(
    labels: np.ndarray, window: tuple[int, int], subsampling: int, rows: int
) -> np.ndarray:
    """(rows,) int64 hard labels at the teacher's output rate: label of input frame j * s
    of the view [start, stop) (stop -1: to the end), -1 where there is none (as
    ``kdpipe.losses.align_frame_labels``). Teach and import store them so."""
    start, stop = window
    y = labels[start : None if stop < 0 else stop][::subsampling][:rows].astype(np.int64)
    y = np.where(y < 0, -1, y)
    return np.concatenate([y, np.full(rows - len(y), -1, np.int64)]) if len(y) < rows else y
