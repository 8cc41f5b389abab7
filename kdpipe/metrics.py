"""Evaluation metrics on label sequences (pure numpy).

- frame / clip accuracy: fraction of argmax predictions equal to the reference;
- error counts of token sequences (substitutions, deletions, insertions) by ``kaldialign``
  (the k2 team's edit distance, what icefall scores with), per utterance and in total;
- collapsed phone error rate: collapse repeated frames of hypothesis and reference (best-path
  decoding, as for a hybrid system without a decoder), map sub-phone units to phones, drop
  silence, then the error counts over the reference length;
- confusion matrix: counts[ref, hyp].
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import kaldialign
import numpy as np

SILENCE = ("sil", "sp", "spn", "<sil>")


def collapse(seq: np.ndarray) -> np.ndarray:
    """Merge runs of equal labels: [a a b b a] -> [a b a]."""
    seq = np.asarray(seq)
    if len(seq) == 0:
        return seq
    keep = np.ones(len(seq), dtype=bool)
    keep[1:] = seq[1:] != seq[:-1]
    return seq[keep]


@dataclass(frozen=True)
class ErrorCounts:
    """Substitutions, deletions and insertions against ``ref_len`` reference tokens."""

    sub: int = 0
    dels: int = 0
    ins: int = 0
    ref_len: int = 0

    @property
    def errors(self) -> int:
        return self.sub + self.dels + self.ins

    @property
    def rate(self) -> float:
        """Errors over reference tokens (0 for an empty reference without errors, inf with)."""
        if self.ref_len == 0:
            return 0.0 if self.errors == 0 else float("inf")
        return self.errors / self.ref_len

    def __add__(self, other: ErrorCounts) -> ErrorCounts:
        return ErrorCounts(
            self.sub + other.sub,
            self.dels + other.dels,
            self.ins + other.ins,
            self.ref_len + other.ref_len,
        )

    def to_dict(self) -> dict[str, float]:
        return {"sub": self.sub, "del": self.dels, "ins": self.ins, "ref_len": self.ref_len,
                "errors": self.errors, "rate": self.rate}  # fmt: skip


def error_counts(ref: Sequence[Hashable], hyp: Sequence[Hashable]) -> ErrorCounts:
    """The Levenshtein alignment's substitutions, deletions and insertions (all cost 1),
    counted by ``kaldialign.edit_distance``."""
    counts = kaldialign.edit_distance(list(ref), list(hyp))
    return ErrorCounts(int(counts["sub"]), int(counts["del"]), int(counts["ins"]), len(ref))


def total_errors(
    refs: Sequence[Sequence[Hashable]], hyps: Sequence[Sequence[Hashable]]
) -> ErrorCounts:
    """Error counts summed over utterances (the corpus-level rate is their ``rate``)."""
    total = ErrorCounts()
    for ref, hyp in zip(refs, hyps, strict=True):
        total = total + error_counts(ref, hyp)
    return total


def unit_state(name: str) -> tuple[str, int]:
    """(phone, HMM state) of a label unit: trailing ``_<digits>`` are the state (and, for
    an aligned tied state, its leaf: ``a_2_5`` is state 2 of a); a triphone ``l-p+r`` is
    its centre phone p; a name without a state suffix is state 1 (``t_h`` is a phone)."""
    parts = name.split("_")
    digits = 0
    while digits < 2 and len(parts) - digits > 1 and parts[-1 - digits].isdigit():
        digits += 1
    state = int(parts[-digits]) if digits else 1
    base = "_".join(parts[: len(parts) - digits]) if digits else name
    if "-" in base and "+" in base:
        base = base.split("-", 1)[1].split("+", 1)[0]
    return base, state


def unit_to_phone(name: str) -> str:
    """The phone a label unit belongs to: ``a``, ``a_2``, ``l-a+r_2``, ``a_2_5`` -> a."""
    return unit_state(name)[0]


def collapsed_per(
    refs: Sequence[np.ndarray], hyps: Sequence[np.ndarray], label_names: Sequence[str]
) -> float:
    """The *collapsed* PER of frame-label sequences (indices into ``label_names``): the
    argmax without a decoder, which a flickering argmax drives past 100%
    (``kdpipe.decode`` gives the decoded PER)."""
    phones = [unit_to_phone(n) for n in label_names]
    ids = {p: i for i, p in enumerate(sorted(set(phones)))}
    to_phone = np.array([ids[p] for p in phones])
    silent = {ids[p] for p in phones if p in SILENCE}
    ref_phones = [[int(p) for p in collapse(to_phone[r]) if p not in silent] for r in refs]
    hyp_phones = [[int(p) for p in collapse(to_phone[h]) if p not in silent] for h in hyps]
    total = total_errors(ref_phones, hyp_phones)
    return total.errors / max(total.ref_len, 1)


def confusion(refs: Sequence[np.ndarray], hyps: Sequence[np.ndarray], num_classes: int):
    """counts[ref, hyp] over all frames (or clips), shape (C, C) int64."""
    r = np.concatenate([np.asarray(x, dtype=np.int64) for x in refs])
    h = np.concatenate([np.asarray(x, dtype=np.int64) for x in hyps])
    return np.bincount(r * num_classes + h, minlength=num_classes**2).reshape(
        num_classes, num_classes
    )
