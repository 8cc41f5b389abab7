"""A member's outputs are checked in one reduction when they are fine, and exactly when
its sum is unusual: every fault is still found, padding and overflow are not faults."""

from __future__ import annotations

import pytest
import torch

from kdpipe.teach.ensemble import _bad_values, find_nan

LENGTHS = torch.tensor([4, 2])  # utterance 1 has 2 padded frames


def _out(kind: str) -> torch.Tensor:
    x = torch.randn(2, 4, 6)
    if kind == "log_probs":
        return torch.log_softmax(x, -1)
    return torch.softmax(x, -1) if kind == "probs" else x


@pytest.mark.parametrize(
    ("kind", "where", "value", "bad"),
    [
        ("logits", (1, 1, 2), float("nan"), 1),
        ("logits", (0, 3, 0), float("inf"), 0),
        ("logits", (1, 0, 5), float("-inf"), 1),
        ("log_probs", (1, 1, 0), float("inf"), 1),
        ("log_probs", (0, 2, 1), float("nan"), 0),
        ("log_probs", (0, 2, 1), float("-inf"), None),  # probability 0: fine
        ("probs", (1, 0, 3), -0.25, 1),
        ("probs", (0, 1, 3), float("inf"), 0),
        ("probs", (0, 1, 3), 0.0, None),
        ("logits", (1, 3, 0), float("nan"), None),  # in utterance 1's padding: not its output
    ],
)
def test_every_fault_is_found_and_only_faults(kind, where, value, bad):
    out = _out(kind)
    assert _bad_values(out, LENGTHS, kind, "frame") is None
    out[where] = value
    assert _bad_values(out, LENGTHS, kind, "frame") == bad


def test_an_overflowing_sum_of_finite_logits_is_no_fault():
    out = torch.full((2, 4, 6), 3e38)  # the float32 sum overflows to +inf
    assert _bad_values(out, LENGTHS, "logits", "frame") is None


def test_find_nan_ignores_minus_infinity_and_padding():
    logp = torch.log_softmax(torch.randn(2, 4, 6), -1)
    logp[0, 1, 2] = float("-inf")
    assert find_nan(logp, LENGTHS, "frame") is None
    logp[1, 3, 0] = float("nan")  # padding
    assert find_nan(logp, LENGTHS, "frame") is None
    logp[1, 1, 0] = float("nan")
    assert find_nan(logp, LENGTHS, "frame") == 1
