"""Metrics against hand-computed values."""

from __future__ import annotations

import numpy as np

from kdpipe.metrics import collapse, confusion, edit_distance, phone_error_rate, unit_to_phone


def test_collapse_and_edit_distance():
    assert collapse(np.array([1, 1, 2, 2, 1])).tolist() == [1, 2, 1]
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance([], [1, 2]) == 2


def test_unit_to_phone():
    assert unit_to_phone("a") == "a"
    assert unit_to_phone("a_2") == "a"
    assert unit_to_phone("l-a+r_2") == "a"
    assert unit_to_phone("t_h") == "t_h"  # a phone name with an underscore, not a state


def test_phone_error_rate_ignores_silence_and_state_repeats():
    names = ["sil", "a_1", "a_2", "b_1", "b_2"]
    ref = np.array([0, 1, 2, 2, 3, 4, 0])  # sil a a a b b sil -> "a b"
    hyp = np.array([0, 1, 1, 0, 3, 3, 0])  # sil a a sil b b sil -> "a b"
    assert phone_error_rate([ref], [hyp], names) == 0.0
    hyp2 = np.array([0, 3, 3, 3, 3, 3, 0])  # "b": one deletion
    assert phone_error_rate([ref], [hyp2], names) == 0.5


def test_confusion_counts():
    m = confusion([np.array([0, 1, 1])], [np.array([0, 0, 1])], 2)
    assert m.tolist() == [[1, 0], [1, 1]]
