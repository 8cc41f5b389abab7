"""Evaluation metrics on label sequences (pure numpy).

- frame / clip accuracy: fraction of argmax predictions equal to the reference;
- phone error rate (PER): collapse repeated frames of hypothesis and reference (best-path
  decoding, as for a hybrid system without a decoder), map sub-phone units to phones, drop
  silence, then Levenshtein distance over reference length;
- confusion matrix: counts[ref, hyp].
"""

from __future__ import annotations

from collections.abc import Sequence

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


def edit_distance(ref: Sequence[int], hyp: Sequence[int]) -> int:
    """Levenshtein distance (substitutions, insertions, deletions all cost 1)."""
    ref, hyp = list(ref), list(hyp)
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def unit_to_phone(name: str) -> str:
    """The phone a label unit belongs to: ``a`` -> a, ``a_2`` -> a, ``l-a+r_2`` -> a."""
    base = name.rsplit("_", 1)[0] if "_" in name and name.rsplit("_", 1)[1].isdigit() else name
    if "-" in base and "+" in base:
        base = base.split("-", 1)[1].split("+", 1)[0]
    return base


def phone_error_rate(
    refs: Sequence[np.ndarray], hyps: Sequence[np.ndarray], label_names: Sequence[str]
) -> float:
    """PER over utterances of frame-label sequences (indices into ``label_names``)."""
    phones = [unit_to_phone(n) for n in label_names]
    ids = {p: i for i, p in enumerate(sorted(set(phones)))}
    to_phone = np.array([ids[p] for p in phones])
    silent = {ids[p] for p in phones if p in SILENCE}
    errors = total = 0
    for r, h in zip(refs, hyps, strict=True):
        r_ph = [p for p in collapse(to_phone[r]) if p not in silent]
        h_ph = [p for p in collapse(to_phone[h]) if p not in silent]
        errors += edit_distance(r_ph, h_ph)
        total += len(r_ph)
    return errors / max(total, 1)


def confusion(refs: Sequence[np.ndarray], hyps: Sequence[np.ndarray], num_classes: int):
    """counts[ref, hyp] over all frames (or clips), shape (C, C) int64."""
    r = np.concatenate([np.asarray(x, dtype=np.int64) for x in refs])
    h = np.concatenate([np.asarray(x, dtype=np.int64) for x in hyps])
    return np.bincount(r * num_classes + h, minlength=num_classes**2).reshape(
        num_classes, num_classes
    )
