"""Metrics against hand-computed values."""

from __future__ import annotations

import numpy as np

from kdpipe.metrics import (
    ErrorCounts,
    collapse,
    collapsed_per,
    confusion,
    error_counts,
    total_errors,
    unit_to_phone,
)


def test_collapse_and_error_counts():
    assert collapse(np.array([1, 1, 2, 2, 1])).tolist() == [1, 2, 1]
    kitten = error_counts("kitten", "sitting")  # k->s, e->i, +g
    assert (kitten.sub, kitten.dels, kitten.ins, kitten.ref_len) == (2, 0, 1, 6)
    assert kitten.errors == 3 and kitten.rate == 0.5
    assert error_counts([], [1, 2]) == ErrorCounts(0, 0, 2, 0)
    assert error_counts([], []).rate == 0.0 and error_counts([], [1]).rate == float("inf")
    words = total_errors(
        [["the", "cat", "sat"], ["a", "dog"]], [["the", "cat"], ["a", "big", "dog"]]
    )
    assert (words.dels, words.ins, words.ref_len, words.rate) == (1, 1, 5, 0.4)
    assert words.to_dict()["del"] == 1


def test_unit_to_phone():
    assert unit_to_phone("a") == "a"
    assert unit_to_phone("a_2") == "a"
    assert unit_to_phone("l-a+r_2") == "a"
    assert unit_to_phone("t_h") == "t_h"  # a phone name with an underscore, not a state
    assert unit_to_phone("a_2_5") == "a"  # an aligned tied state: phone, pdf class, leaf


def test_collapsed_per_ignores_silence_and_state_repeats():
    names = ["sil", "a_1", "a_2", "b_1", "b_2"]
    ref = np.array([0, 1, 2, 2, 3, 4, 0])  # sil a a a b b sil -> "a b"
    hyp = np.array([0, 1, 1, 0, 3, 3, 0])  # sil a a sil b b sil -> "a b"
    assert collapsed_per([ref], [hyp], names) == 0.0
    hyp2 = np.array([0, 3, 3, 3, 3, 3, 0])  # "b": one deletion
    assert collapsed_per([ref], [hyp2], names) == 0.5


def test_confusion_counts():
    m = confusion([np.array([0, 1, 1])], [np.array([0, 0, 1])], 2)
    assert m.tolist() == [[1, 0], [1, 1]]
