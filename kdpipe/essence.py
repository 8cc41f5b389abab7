"""Selection rules: the "essence" of a teacher posterior that the target store keeps.

Every rule takes log-probabilities ``logp`` (N, C) (N frames or clips, C classes; they are
renormalised with a log-sum-exp, so unnormalised log-probs or logits work too) and returns a
``SparseRows`` with float32 log-probs at temperature 1, entries of each row in descending
probability order, and the log of the mass not kept (the tail). Pure numpy.

``Rule`` names a rule and its parameters as plain data (what the store metadata records).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from kdpipe.errors import ConfigError
from kdpipe.schema import from_dict
from kdpipe.sparse import Layout, SparseRows


def as_logprobs(x: np.ndarray, kind: str = "logprobs") -> np.ndarray:
    """(N, C) float32 normalised log-probabilities from ``logprobs``, ``logits`` or ``probs``."""
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] == 0:
        raise ConfigError(f"essence: expected a (N, C) array, got shape {x.shape}")
    if kind == "probs":
        with np.errstate(divide="ignore"):
            x = np.log(x.astype(np.float64))
    elif kind not in ("logprobs", "logits"):
        raise ConfigError(f"essence: kind must be logprobs, logits or probs, not {kind!r}")
    x = x.astype(np.float64, copy=False)
    m = x.max(axis=1, keepdims=True)  # (N, 1)
    lse = m + np.log(np.exp(x - m).sum(axis=1, keepdims=True))  # (N, 1)
    return (x - lse).astype(np.float32)


def _tail(kept_logp: np.ndarray, rows: np.ndarray | None, n: int) -> np.ndarray:
    """(N,) log(1 - sum of kept probabilities), -inf where nothing is left."""
    p = np.exp(kept_logp.astype(np.float64))
    kept = p.sum(axis=1) if rows is None else np.bincount(rows, weights=p, minlength=n)
    with np.errstate(divide="ignore"):
        return np.log(np.clip(1.0 - kept, 0.0, 1.0)).astype(np.float32)


def _csr(logp: np.ndarray, rows: np.ndarray, cols: np.ndarray, vals: np.ndarray) -> SparseRows:
    """CSR rows from (row, col, value) entries, sorted by row then descending value."""
    n, c = logp.shape
    order = np.lexsort((-vals, rows))
    rows, cols, vals = rows[order], cols[order], vals[order]
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n), out=offsets[1:])
    return SparseRows(
        values=vals.astype(np.float32),
        tail=_tail(vals, rows, n),
        num_classes=c,
        indices=cols.astype(np.int64),
        offsets=offsets,
    )


def topk(logp: np.ndarray, k: int) -> SparseRows:
    """The k most probable classes of each row (fixed width).

    Parthasarathi & Strom, "Lessons from building acoustic models with a million hours of
    speech", ICASSP 2019 (teacher top-k posteriors stored for student training); the
    soft-target loss is Hinton, Vinyals & Dean, "Distilling the knowledge in a neural
    network", 2015. Uses ``argpartition`` (O(C) per row), then sorts only the k kept.
    """
    c = logp.shape[1]
    if not 1 <= k <= c:
        raise ConfigError(f"topk: k must be in [1, {c}], got {k}")
    idx, vals = _sorted_top(logp, k)  # (N, k)
    return top_rows(idx, vals, c)


def top_rows(indices: np.ndarray, values: np.ndarray, num_classes: int) -> SparseRows:
    """Fixed-width rows from each row's kept classes (N, k) and log-probs (N, k), sorted
    descending, with the tail of what they leave: ``topk``'s result, also for top-k
    selected elsewhere (on the teacher's device, ``kdpipe.device_essence``)."""
    vals = values.astype(np.float32, copy=False)
    tail = _tail(vals, None, len(vals))
    return SparseRows(values=vals, tail=tail, num_classes=num_classes, indices=indices)


def threshold(logp: np.ndarray, p_min: float) -> SparseRows:
    """Classes with probability >= ``p_min`` (variable width; at least the top-1 is kept).

    Kaldi's ``prob-to-post --min-post`` (Povey et al., "The Kaldi speech recognition
    toolkit", ASRU 2011) prunes posteriors below a floor the same way.
    """
    if not 0.0 < p_min <= 1.0:
        raise ConfigError(f"threshold: p_min must be in (0, 1], got {p_min}")
    keep = logp >= np.float32(np.log(p_min))
    keep[np.arange(len(logp)), logp.argmax(axis=1)] = True
    rows, cols = np.nonzero(keep)
    return _csr(logp, rows, cols, logp[rows, cols])


SPLIT = 8  # the top-g fast path's strided blocks: C / SPLIT maxima, g * SPLIT candidates


def _sorted_top(logp: np.ndarray, g: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, g) classes and log-probs of the g most probable classes, descending."""
    n, c = logp.shape
    part: np.ndarray | None = np.tile(np.arange(c), (n, 1)) if g >= c else None
    if part is None:
        part = _top_candidates(logp, g)
    if part is None:  # the g largest, by partitioning at c - g (no negated copy)
        part = np.argpartition(logp, c - g, axis=1)[:, c - g :]
    vals = np.take_along_axis(logp, part, axis=1)  # (N, g') candidates (g' >= g)
    if part.shape[1] > g:
        best = np.argpartition(vals, part.shape[1] - g, axis=1)[:, -g:]  # (N, g)
        part, vals = np.take_along_axis(part, best, 1), np.take_along_axis(vals, best, 1)
    order = np.argsort(-vals, axis=1, kind="stable")
    return np.take_along_axis(part, order, 1), np.take_along_axis(vals, order, 1)


def _top_candidates(logp: np.ndarray, g: int) -> np.ndarray | None:
    """(N, g * SPLIT) columns that hold each row's g largest entries, or None where the
    shortcut does not apply (C not a multiple of SPLIT, too few classes, tied maxima).

    Block j holds columns j, j + w, ..., j + (SPLIT - 1) w (w = C / SPLIT). The g largest
    entries of a row lie in the g blocks with the largest maxima, so only those blocks'
    g * SPLIT entries are partitioned: one max pass over the row instead of a partition
    of all C (3x faster at C = 2000, g = 8; the same classes and values).
    """
    n, c = logp.shape
    w = c // SPLIT
    if c % SPLIT or 4 * g * SPLIT > c or n == 0:
        return None
    maxima = logp.reshape(n, SPLIT, w).max(axis=1)  # (N, w): block j's largest entry
    kth = np.partition(maxima, w - g, axis=1)[:, w - g]  # (N,) the g-th largest maximum
    _, blocks = np.nonzero(maxima >= kth[:, None])  # row-major: g per row when no ties
    if len(blocks) != n * g:  # every row has >= g: more means ties (or -inf rows)
        return None
    return (blocks.reshape(n, g)[:, :, None] + w * np.arange(SPLIT)).reshape(n, g * SPLIT)


def cumulative(logp: np.ndarray, mass: float, guess: int = 64) -> SparseRows:
    """The smallest set of most probable classes whose mass reaches ``mass`` (variable).

    The "nucleus" (top-p) set of Holtzman et al., "The curious case of neural text
    degeneration", ICLR 2020, used here as a pruning rule. Rows whose top-``guess`` classes
    already reach ``mass`` are solved with ``argpartition``; the rest with a full sort.
    """
    if not 0.0 < mass <= 1.0:
        raise ConfigError(f"cumulative: mass must be in (0, 1], got {mass}")
    n, c = logp.shape
    row_ids = np.arange(n)
    blocks = []
    for g in dict.fromkeys((min(guess, c), c)):  # a cheap pass, then the rows it missed
        idx, vals = _sorted_top(logp[row_ids], g)  # (n', g)
        cs = np.cumsum(np.exp(vals.astype(np.float64)), axis=1)
        done = (cs[:, -1] >= mass) | (g == c)
        count = np.minimum((cs < mass).sum(axis=1) + 1, g)  # (n',)
        rr, jj = np.nonzero((np.arange(g)[None, :] < count[:, None]) & done[:, None])
        blocks.append((row_ids[rr], idx[rr, jj], vals[rr, jj]))
        row_ids = row_ids[~done]
        if not len(row_ids):
            break
    rows, cols, vals_all = (np.concatenate(x) for x in zip(*blocks, strict=True))
    return _csr(logp, rows, cols, vals_all)


def sample(logp: np.ndarray, n: int, rng: np.random.Generator | int | None = None) -> SparseRows:
    """An unbiased sparse target: n classes drawn with replacement from each row.

    Each row keeps the distinct classes drawn, with probability count / n, so the expected
    target equals the full distribution (E[count_i / n] = p_i) and the tail is zero. This is
    the random-sampling KD of Anshumann et al., "Sparse logit sampling: accelerating
    knowledge distillation in LLMs", ACL 2025 (proposal = the teacher distribution), and in
    spirit Kaldi's ``prob-to-post --random-prune`` (pruning small posteriors at random with
    their expectation preserved). Variable width, at most n entries per row.
    """
    if n < 1:
        raise ConfigError(f"sample: n must be >= 1, got {n}")
    rng = np.random.default_rng(rng)
    rows_n, c = logp.shape
    cdf = np.cumsum(np.exp(logp.astype(np.float64)), axis=1)  # (N, C)
    cdf /= cdf[:, -1:]
    shifted = (cdf + np.arange(rows_n)[:, None]).ravel()  # increasing over all rows
    u = rng.random((rows_n, n)) + np.arange(rows_n)[:, None]  # (N, n)
    pos = np.searchsorted(shifted, u.ravel(), side="right")
    row_of = np.repeat(np.arange(rows_n), n)  # (N * n,) the row of each draw
    cols = np.clip(pos - row_of * c, 0, c - 1)
    keys, counts = np.unique(row_of * c + cols, return_counts=True)
    r, col = keys // c, keys % c
    vals = np.log(counts / n).astype(np.float32)
    rows = _csr(logp, r, col, vals)
    return replace(rows, tail=np.full(rows_n, -np.inf, dtype=np.float32))  # sums to 1 exactly


def full(logp: np.ndarray) -> SparseRows:
    """The dense posterior (every class), for comparison with the sparse rules.

    Li, Zhao, Huang & Gong, "Learning small-size DNN with output-distribution-based
    criteria", Interspeech 2014 (teacher-student training of acoustic models on full
    senone posteriors).
    """
    n, c = logp.shape
    tail = np.full(n, -np.inf, dtype=np.float32)
    return SparseRows(values=logp.astype(np.float32), tail=tail, num_classes=c)


# name -> (function, parameter names, layout)
RULES: dict[str, tuple[Any, tuple[str, ...], Layout]] = {
    "topk": (topk, ("k",), "fixed"),
    "threshold": (threshold, ("p_min",), "variable"),
    "cumulative": (cumulative, ("mass",), "variable"),
    "sample": (sample, ("n",), "variable"),
    "full": (full, (), "dense"),
}


def _check_param(rule: str, key: str, value: Any) -> None:
    """``k`` and ``n`` are integers >= 1; ``p_min`` and ``mass`` numbers in (0, 1]."""
    if key in ("k", "n"):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ConfigError(f"rule {rule}: {key} must be an integer >= 1, got {value!r}")
    elif (
        isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < float(value) <= 1
    ):
        raise ConfigError(f"rule {rule}: {key} must be a number in (0, 1], got {value!r}")


@dataclass(frozen=True)
class Rule:
    """A selection rule as data: ``Rule("topk", {"k": 8})``."""

    name: str = "topk"  # top-k is the standard for stored ASR teacher targets
    params: dict[str, Any] = field(default_factory=lambda: {"k": 8})  # 8: ~0.9 mass, ~18 B

    def __post_init__(self) -> None:
        if self.name not in RULES:
            raise ConfigError(f"unknown selection rule {self.name!r}; known: {', '.join(RULES)}")
        want = set(RULES[self.name][1])
        if set(self.params) != want:
            raise ConfigError(
                f"rule {self.name} takes parameters {sorted(want)}, got {sorted(self.params)}"
            )
        for key, value in self.params.items():  # ranges here, before any store records them
            _check_param(self.name, key, value)

    @property
    def layout(self) -> Layout:
        return RULES[self.name][2]

    def width(self, num_classes: int) -> int | None:
        """Entries per row for fixed/dense layouts, None for variable width."""
        if self.layout == "fixed":
            return int(self.params["k"])
        return num_classes if self.layout == "dense" else None

    def apply(self, logp: np.ndarray, rng: np.random.Generator | int | None = None) -> SparseRows:
        """Run the rule on (N, C) log-probs."""
        fn = RULES[self.name][0]
        if self.name == "sample":
            return fn(logp, rng=rng, **self.params)
        return fn(logp, **self.params)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "params": dict(self.params)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Rule:
        return from_dict(cls, data, "rule")

    def __str__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.name}({args})"
