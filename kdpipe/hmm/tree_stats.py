"""Tree statistics: Kaldi's ``acc-tree-stats`` on frame-level phones and pdf classes.

One diagonal Gaussian's sufficient statistics (count, sum x, sum x^2) per distinct *event*
(left phone, central phone, right phone, pdf class) seen in the alignments, the contexts
taken from the phone sequence (0 at the utterance edges). Plain numpy arrays, so that
worker processes return them and the parent sums them; ``kdpipe.hmm.tree`` builds the tree
from them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from kdpipe.errors import AlignmentError


@dataclass(frozen=True, eq=False)
class TreeStats:
    """One diagonal Gaussian's sufficient statistics per distinct event (left phone, central
    phone, right phone, pdf class), rows sorted and unique. Plain arrays: worker processes
    return them, ``+`` and ``total`` sum them, ``as_arrays`` / ``from_arrays`` store them."""

    events: np.ndarray  # (E, 4) int32: left, central, right phone, pdf class
    counts: np.ndarray  # (E,) float64: frames
    sums: np.ndarray  # (E, D) float64: sum of x
    sums_sq: np.ndarray  # (E, D) float64: sum of x^2

    def __post_init__(self) -> None:
        num, dim = self.sums.shape
        shapes_ok = (
            self.events.shape == (num, 4)
            and self.counts.shape == (num,)
            and self.sums_sq.shape == (num, dim)
        )
        if not shapes_ok:
            raise AlignmentError("tree stats: events, counts and sums disagree in shape")

    @property
    def dim(self) -> int:
        return int(self.sums.shape[1])

    @property
    def num_events(self) -> int:
        return int(self.events.shape[0])

    @property
    def num_frames(self) -> float:
        return float(self.counts.sum())

    @classmethod
    def empty(cls, dim: int) -> TreeStats:
        return cls(np.zeros((0, 4), np.int32), np.zeros(0), np.zeros((0, dim)), np.zeros((0, dim)))

    @classmethod
    def total(cls, parts: Iterable[TreeStats]) -> TreeStats:
        """The sum of ``parts`` (utterances, or workers' totals), events merged."""
        parts = list(parts)
        if not parts:
            raise AlignmentError("tree stats: nothing to sum")
        if len({p.dim for p in parts}) != 1:
            raise AlignmentError("tree stats: parts of different feature dimensions")
        return _reduce(
            np.concatenate([p.events for p in parts]),
            np.concatenate([p.counts for p in parts]),
            np.concatenate([p.sums for p in parts]),
            np.concatenate([p.sums_sq for p in parts]),
        )

    def __add__(self, other: TreeStats) -> TreeStats:
        return TreeStats.total([self, other])

    def as_arrays(self) -> dict[str, np.ndarray]:
        return {
            "events": self.events,
            "counts": self.counts,
            "sums": self.sums,
            "sums_sq": self.sums_sq,
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> TreeStats:
        return cls(
            np.asarray(arrays["events"], np.int32),
            np.asarray(arrays["counts"], np.float64),
            np.asarray(arrays["sums"], np.float64),
            np.asarray(arrays["sums_sq"], np.float64),
        )


def accumulate_tree_stats(
    features: np.ndarray, phones: np.ndarray, pdf_classes: np.ndarray, phone_starts: np.ndarray
) -> TreeStats:
    """Tree statistics of one utterance (Kaldi's ``acc-tree-stats``).

    ``features`` (T, D), and per frame its phone, its pdf class and whether a phone instance
    starts there (``phone_starts[0]`` is true). A frame's left and right context are the
    previous and next phone *instance* in the utterance, 0 at the edges."""
    features = np.asarray(features)
    phones = np.asarray(phones, np.int64)
    pdf_classes = np.asarray(pdf_classes, np.int64)
    phone_starts = np.asarray(phone_starts, bool)
    if features.ndim != 2:
        raise AlignmentError(f"tree stats: features of shape {features.shape}, not (T, D)")
    num_frames = features.shape[0]
    if not phones.shape == pdf_classes.shape == phone_starts.shape == (num_frames,):
        raise AlignmentError(
            f"tree stats: {num_frames} frames of features but phones {phones.shape}, "
            f"pdf classes {pdf_classes.shape}, phone starts {phone_starts.shape}"
        )
    if num_frames == 0:
        return TreeStats.empty(features.shape[1])
    if not phone_starts[0]:
        raise AlignmentError("tree stats: the first frame does not start a phone")
    instance = np.cumsum(phone_starts) - 1  # (T,) index of each frame's phone instance
    instance_phones = phones[phone_starts]  # (I,)
    if np.any(phones != instance_phones[instance]):
        raise AlignmentError("tree stats: the phone changes inside a phone instance")
    if np.any(phones < 1) or np.any(pdf_classes < 0):
        raise AlignmentError("tree stats: phones are ids >= 1, pdf classes >= 0")
    edge = np.zeros(1, np.int64)
    left = np.concatenate([edge, instance_phones[:-1]])[instance]  # (T,)
    right = np.concatenate([instance_phones[1:], edge])[instance]  # (T,)
    x = features.astype(np.float64)  # (T, D)
    return _reduce(
        np.stack([left, phones, right, pdf_classes], axis=1), np.ones(num_frames), x, x * x
    )


def _reduce(
    events: np.ndarray, counts: np.ndarray, sums: np.ndarray, sums_sq: np.ndarray
) -> TreeStats:
    """Rows with equal events summed, events sorted."""
    if events.shape[0] == 0:
        return TreeStats.empty(sums.shape[1])
    order = np.lexsort(events.T[::-1])  # (N,) by left, central, right, pdf class
    events = events[order]
    new = np.ones(len(events), bool)
    new[1:] = np.any(events[1:] != events[:-1], axis=1)
    starts = np.flatnonzero(new)  # (E,)
    return TreeStats(
        events[starts].astype(np.int32),
        np.add.reduceat(counts[order], starts).astype(np.float64),
        np.add.reduceat(sums[order], starts, axis=0).astype(np.float64),
        np.add.reduceat(sums_sq[order], starts, axis=0).astype(np.float64),
    )
