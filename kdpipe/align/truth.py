"""How good an alignment is, where the true phone boundaries are known (synthetic corpora).

- frame agreement: the share of frames whose aligned phone is the true phone;
- boundary accuracy: the share of true phone boundaries (changes of phone between two
  frames) that have an aligned boundary within 10 ms / 20 ms (1 / 2 frames at a 10 ms
  shift). Each true boundary is matched to the nearest aligned one, whatever its phones:
  the measure the alignment literature reports (e.g. within-20-ms rates of forced
  aligners), and defined even where the aligned pronunciation differs from the truth;
- a model against the truth (``model_truth``): the phones a model trained on an alignment
  predicts, scored against the true phones rather than its training labels, over all
  frames and apart where the alignment was right and where it was wrong.

Shapes: per utterance (T,) phone names (or any labels), aligned and true, same T.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Agreement:
    """Frame and boundary agreement of alignments with the truth, over ``frames``."""

    frames: int
    frame_agreement: float  # share of frames with the true phone
    boundaries: int  # true phone boundaries
    within_10ms: float  # share of them with an aligned boundary <= 1 frame away
    within_20ms: float  # ... <= 2 frames away

    def to_dict(self) -> dict[str, float]:
        return {
            "frames": self.frames,
            "frame_agreement": round(self.frame_agreement, 4),
            "boundaries": self.boundaries,
            "within_10ms": round(self.within_10ms, 4),
            "within_20ms": round(self.within_20ms, 4),
        }


def read_reference(src: str | Path) -> dict[str, np.ndarray] | None:
    """The true phones of a corpus made by ``synth phones --labels aligned``: utterance ->
    (T,) phone names from ``SRC/reference/{split}/phones.txt``; None when SRC has none."""
    folder = Path(src) / "reference"
    tables = sorted(folder.glob("*/phones.txt")) if folder.is_dir() else []
    if not tables:
        return None
    out: dict[str, np.ndarray] = {}
    for table in tables:
        out.update(read_table(table))
    return out


def _boundaries(labels: np.ndarray) -> np.ndarray:
    """(B,) frame indices t where labels[t] != labels[t - 1]."""
    return np.flatnonzero(labels[1:] != labels[:-1]) + 1


def agreement(
    aligned: Mapping[str, Sequence[str] | np.ndarray],
    truth: Mapping[str, Sequence[str] | np.ndarray],
    frame_shift_ms: float = 10.0,
) -> Agreement:
    """Agreement of ``aligned`` with ``truth`` on the utterances both have (same length)."""
    same = frames = bounds = near10 = near20 = 0
    for utt, hyp in aligned.items():
        if utt not in truth:
            continue
        ref = np.asarray(truth[utt])
        got = np.asarray(hyp)
        if len(ref) != len(got):
            continue
        same += int((ref == got).sum())
        frames += len(ref)
        ref_b, hyp_b = _boundaries(ref), _boundaries(got)
        bounds += len(ref_b)
        if len(ref_b) and len(hyp_b):
            pos = np.clip(np.searchsorted(hyp_b, ref_b), 1, len(hyp_b)) - 1
            dist = np.minimum(
                np.abs(hyp_b[pos] - ref_b),
                np.abs(hyp_b[np.minimum(pos + 1, len(hyp_b) - 1)] - ref_b),
            )  # (B,) frames to the nearest aligned boundary
            near10 += int((dist * frame_shift_ms <= 10.0 + 1e-9).sum())
            near20 += int((dist * frame_shift_ms <= 20.0 + 1e-9).sum())
    return Agreement(
        frames,
        same / max(frames, 1),
        bounds,
        near10 / max(bounds, 1),
        near20 / max(bounds, 1),
    )


def read_table(path: str | Path) -> dict[str, np.ndarray]:
    """A Kaldi-style table ``utt-id token token ...`` (``phone_ali.txt``, ``phones.txt``):
    utterance -> (T,) tokens."""
    out: dict[str, np.ndarray] = {}
    for line in Path(path).read_text().splitlines():
        utt, *tokens = line.split()
        out[utt] = np.array(tokens)
    return out


def model_truth(
    predicted: Mapping[str, np.ndarray],
    aligned: Mapping[str, np.ndarray],
    truth: Mapping[str, np.ndarray],
) -> dict[str, float]:
    """A model's phones against the truth, on the utterances all three have.

    ``predicted``: utterance -> (T',) phones the model chose (its argmax tied state's phone)
    at its output rate; ``aligned``: the alignment's phones of the same utterance (T,), what
    it was trained on; ``truth``: the true phones (T,). A model with subsampling s is
    compared on frames 0, s, 2s, ... Returns the frame accuracy against the truth over all
    frames, over the frames whose alignment was right and over those where it was wrong,
    and the share of frames where it was wrong (``label_error``)."""
    hits = {"all": 0, "right": 0, "wrong": 0}
    frames = {"all": 0, "right": 0, "wrong": 0}
    for utt, hyp in predicted.items():
        if utt not in truth or utt not in aligned or len(truth[utt]) != len(aligned[utt]):
            continue
        ref, ali = np.asarray(truth[utt]), np.asarray(aligned[utt])
        step = max(1, round(len(ref) / max(len(hyp), 1)))
        n = min(len(hyp), len(ref[::step]))
        got, ref, ali = np.asarray(hyp)[:n], ref[::step][:n], ali[::step][:n]
        correct, label_right = got == ref, ali == ref
        for key, mask in (("all", slice(None)), ("right", label_right), ("wrong", ~label_right)):
            hits[key] += int(correct[mask].sum())
            frames[key] += int(correct[mask].size)
    return {
        "truth_frames": frames["all"],
        "truth_accuracy": hits["all"] / max(frames["all"], 1),
        "truth_accuracy_label_right": hits["right"] / max(frames["right"], 1),
        "truth_accuracy_label_wrong": hits["wrong"] / max(frames["wrong"], 1),
        "label_error": frames["wrong"] / max(frames["all"], 1),
    }
