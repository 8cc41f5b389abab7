"""Synthetic teacher posteriors: large, realistic inputs without training a teacher. Used
by the tests (``tests/test_testing.py``) and the benchmarks (``store_size``, ``store_read``,
``learn_loss_cost``).

Two kinds, both (N, C) float32 normalised log-probs:

- ``iid``: softmax of scaled Gaussian logits, frames independent (the worst case for
  compression: nothing repeats); ``scale=8`` gives a mean top-1 probability of ~0.7 at
  C = 2000.
- ``segments``: speech-like: piecewise-stationary over segments of ~``mean_frames`` frames
  (a phone state), each with a boosted class drawn from a Zipf prior and fixed Gaussian
  "confusion" logits, plus smooth (AR(1)) frame noise; mean top-1 probability ~0.65.
"""

from __future__ import annotations

import numpy as np

from kdpipe.essence import as_logprobs


def iid_logprobs(
    n: int, num_classes: int = 2000, *, scale: float = 8.0, seed: int | None = 0
) -> np.ndarray:
    """(n, C) independent frames: log-softmax of ``scale`` * N(0, 1) logits."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, num_classes), dtype=np.float32) * np.float32(scale)  # (N, C)
    return as_logprobs(z, "logits")


def segment_logprobs(
    n: int,
    num_classes: int = 2000,
    *,
    boost: float = 11.0,
    spread: float = 2.0,
    noise: float = 1.0,
    rho: float = 0.9,
    mean_frames: float = 8.0,
    seed: int | None = 0,
) -> np.ndarray:
    """(n, C) speech-like frames: segment templates + AR(1) noise (see the module doc)."""
    rng = np.random.default_rng(seed)
    c = num_classes
    prior = 1.0 / np.arange(1, c + 1) ** 0.7  # Zipf-like class frequencies
    prior /= prior.sum()
    perm = rng.permutation(c)
    durations: list[int] = []
    while sum(durations) < n:
        durations.append(int(rng.geometric(1.0 / mean_frames)))
    seg = np.repeat(np.arange(len(durations)), durations)[:n]  # (N,) segment of each frame
    base = rng.standard_normal((len(durations), c), dtype=np.float32) * np.float32(spread)
    base[np.arange(len(durations)), perm[rng.choice(c, size=len(durations), p=prior)]] += boost
    e = rng.standard_normal((n, c), dtype=np.float32)  # (N, C) innovations
    a = np.float32(np.sqrt(1 - rho**2))
    for t in range(1, n):  # AR(1) over frames: e_t = rho e_{t-1} + sqrt(1-rho^2) w_t
        e[t] = np.float32(rho) * e[t - 1] + a * e[t]
    return as_logprobs(base[seg] + np.float32(noise) * e, "logits")


def synthetic_logprobs(
    n: int, num_classes: int = 2000, kind: str = "segments", seed: int | None = 0
) -> np.ndarray:
    """``iid_logprobs`` or ``segment_logprobs`` by name."""
    if kind == "iid":
        return iid_logprobs(n, num_classes, seed=seed)
    if kind == "segments":
        return segment_logprobs(n, num_classes, seed=seed)
    raise ValueError(f"unknown synthetic kind {kind!r} (iid or segments)")
