"""Selection rules: each keeps what its definition says, and ``sample`` is unbiased."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kdpipe import essence
from kdpipe.errors import ConfigError
from kdpipe.essence import Rule, as_logprobs, cumulative, full, sample, threshold, topk


def _logp(seed: int, n: int = 16, c: int = 30, scale: float = 3.0) -> np.ndarray:
    return as_logprobs(np.random.default_rng(seed).standard_normal((n, c)) * scale, "logits")


def test_as_logprobs_accepts_probs_logits_and_logprobs():
    lp = _logp(0)
    np.testing.assert_allclose(as_logprobs(np.exp(lp), "probs"), lp, atol=1e-5)
    np.testing.assert_allclose(as_logprobs(lp + 3.0, "logits"), lp, atol=1e-5)
    with pytest.raises(ConfigError, match="kind"):
        as_logprobs(lp, "softmax")
    with pytest.raises(ConfigError, match=r"\(N, C\)"):
        as_logprobs(lp[0])


@given(seed=st.integers(0, 1000), k=st.integers(1, 30))
@settings(max_examples=30, deadline=None)
def test_topk_keeps_the_k_largest_in_order_with_the_exact_tail(seed, k):
    lp = _logp(seed)
    r = topk(lp, k)
    want = np.sort(lp, axis=1)[:, ::-1][:, :k]
    np.testing.assert_array_equal(r.values, want)
    np.testing.assert_array_equal(np.take_along_axis(lp, r.indices, 1), r.values)
    assert all(len(set(row)) == k for row in r.indices.tolist())
    rest = np.exp(lp.astype(np.float64)).sum(1) - np.exp(want.astype(np.float64)).sum(1)
    np.testing.assert_allclose(r.tail_mass(), np.clip(rest, 0, 1), atol=2e-6)


@given(seed=st.integers(0, 1000), k=st.integers(1, 12), ties=st.booleans())
@settings(max_examples=40, deadline=None)
def test_topk_over_many_classes_takes_the_block_maxima_shortcut_exactly(seed, k, ties):
    # C = 400 (a multiple of SPLIT, >= 4 k SPLIT): the shortcut runs; ties (values
    # repeated, -inf classes) make it fall back to the full partition
    lp = _logp(seed, n=24, c=400, scale=6.0)
    if ties:
        lp[::3] = np.round(lp[::3], 1)
        lp[1, 5:] = -np.inf
    if not ties:
        assert essence._top_candidates(lp, k) is not None  # the shortcut ran
    r = topk(lp, k)
    np.testing.assert_array_equal(r.values, np.sort(lp, axis=1)[:, ::-1][:, :k])
    np.testing.assert_array_equal(np.take_along_axis(lp, r.indices, 1), r.values)
    assert all(len(set(row)) == k for row in r.indices.tolist())


def test_threshold_keeps_exactly_the_classes_above_p_min_and_the_top1():
    lp = _logp(1)
    r = threshold(lp, 0.05)
    dense = r.densify()
    p = np.exp(lp)
    np.testing.assert_array_equal(dense > 0, (p >= 0.05) | (p == p.max(1, keepdims=True)))
    np.testing.assert_allclose(dense[dense > 0], p[dense > 0], rtol=1e-6)
    assert (np.diff(r.values)[np.diff(r.row_ids()) == 0] <= 0).all()  # descending in rows


@given(seed=st.integers(0, 1000), mass=st.floats(0.05, 1.0), guess=st.integers(1, 40))
@settings(max_examples=30, deadline=None)
def test_cumulative_is_the_smallest_set_reaching_the_mass(seed, mass, guess):
    lp = _logp(seed, scale=2.0)
    r = cumulative(lp, mass, guess=guess)
    p = np.sort(np.exp(lp.astype(np.float64)), 1)[:, ::-1]
    cs = np.cumsum(p, 1)
    want = np.minimum((cs < mass).sum(1) + 1, lp.shape[1])
    np.testing.assert_array_equal(r.widths(), want)
    np.testing.assert_allclose(
        np.exp(r.values), np.concatenate([p[i, :w] for i, w in enumerate(want)]), rtol=1e-5
    )
    assert r.top1().tolist() == lp.argmax(1).tolist()


def test_full_is_dense_and_exact():
    lp = _logp(2)
    r = full(lp)
    assert r.layout == "dense" and r.indices is None
    np.testing.assert_allclose(r.densify(), np.exp(lp), rtol=1e-6)
    assert np.all(r.tail_mass() == 0)


def _within_sampling_error(mean: np.ndarray, p: np.ndarray, draws: int) -> bool:
    """|mean - p| within 6 standard errors, plus 10 counts of slack for tiny p (where the
    count is Poisson, not Gaussian)."""
    sigma = np.sqrt(p * (1 - p) / draws)
    return bool(np.all(np.abs(mean - p) <= 6 * sigma + 10 / draws))


@given(seed=st.integers(0, 10_000), n=st.integers(1, 12), c=st.integers(2, 12))
@settings(max_examples=40, deadline=None, derandomize=True)
def test_sample_is_unbiased(seed, n, c):
    """E[sample(n)] = p: the mean over many draws converges to the full distribution."""
    rng = np.random.default_rng(seed)
    lp = as_logprobs(rng.standard_normal((3, c)) * rng.uniform(0.5, 4), "logits")
    p = np.exp(lp.astype(np.float64))
    draws = 3000
    rep = np.repeat(lp, draws, axis=0)  # every row drawn `draws` times, in one call
    r = sample(rep, n, rng=rng)
    assert (r.widths() <= n).all() and np.all(r.tail_mass() == 0)
    mean = r.densify().astype(np.float64).reshape(3, draws, c).mean(1)
    assert _within_sampling_error(mean, p, n * draws), np.abs(mean - p).max()


def test_sample_is_biased_if_we_cheat_so_the_test_can_fail():
    """Top-k renormalised is biased: the same check rejects it (the test has teeth)."""
    rng = np.random.default_rng(0)
    lp = as_logprobs(rng.standard_normal((1, 8)) * 2, "logits")
    p = np.exp(lp.astype(np.float64))[0]
    k = topk(lp, 2).densify()[0].astype(np.float64)
    k /= k.sum()
    assert not _within_sampling_error(k, p, 2 * 3000)


def test_rule_as_data_and_validation():
    r = Rule.from_dict({"name": "cumulative", "params": {"mass": 0.9}})
    assert r.layout == "variable" and r.width(10) is None and str(r) == "cumulative(mass=0.9)"
    assert Rule.from_dict(r.to_dict()) == r
    assert Rule("full", {}).width(7) == 7 and Rule().width(100) == 8
    with pytest.raises(ConfigError, match="unknown selection rule"):
        Rule("nucleus", {})
    with pytest.raises(ConfigError, match="parameters"):
        Rule("topk", {"n": 3})
    with pytest.raises(ConfigError, match="k must be"):
        topk(_logp(0), 31)
    with pytest.raises(ConfigError, match="p_min"):
        threshold(_logp(0), 0.0)
    assert Rule("sample", {"n": 4}).apply(_logp(3), rng=0).layout == "variable"
