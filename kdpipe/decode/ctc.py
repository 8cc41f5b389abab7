"""Decoding CTC outputs: greedy (best path) and prefix beam search, optionally with a token
bigram LM; hypotheses written as Kaldi ``text``.

Legend: T frames, C labels (blank included), B prefixes in the beam, K candidate tokens a
frame. ``logp`` is an utterance's (T, C) log-posteriors ``log y_c^t``; blank is one of its
labels. Scoring the hypotheses (CER / WER / PER) is ``kdpipe.metrics.total_errors``
(kaldialign), the scorer hybrid decoding uses.

CTC (Graves et al. 2006, "Connectionist temporal classification: labelling unsegmented
sequence data with recurrent neural networks") scores a labelling l by summing over every
frame path pi that collapses to it (``B``: merge repeats, then drop blanks)::

    p(l | x) = sum_{pi in B^-1(l)} prod_t y_{pi_t}^t

Greedy decoding takes the best path ``B(argmax_c y_c^t for each t)``, not the best
labelling. The prefix beam search (Hannun et al. 2014, "First-pass large vocabulary
continuous speech recognition using bi-directional recurrent DNNs", arXiv:1408.2873)
keeps, for each prefix l in the beam, the mass of its paths ending in blank ``p_b`` and
in a label ``p_nb``, and at frame t::

    p_b^t(l)     = (p_b^{t-1}(l) + p_nb^{t-1}(l)) * y_blank^t
    p_nb^t(l)    = p_nb^{t-1}(l) * y_{end(l)}^t                  (the last label repeated)
    p_nb^t(l+c) += (p_b^{t-1}(l) + [c != end(l)] p_nb^{t-1}(l)) * y_c^t

(all in the log domain here). Prefixes are ranked by
``log(p_b + p_nb) + lm_weight * log P_LM(l) + token_bonus * |l|``, and the final pick
adds ``lm_weight * log P_LM(</s> | end(l))``. With a beam wider than the number of
prefixes and no pruning the search is exact: the best labelling and its ``p(l | x)``.
"""

from __future__ import annotations

import math
import multiprocessing
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kdpipe.decode.jobs import TASK_UTTERANCES
from kdpipe.errors import ConfigError
from kdpipe.metrics import collapse

METHODS = ("greedy", "prefix_beam")
BEAM = 8  # CTC posteriors are peaked, so a few prefixes hold nearly all the mass
PRUNE = 10.0  # a token e^-10 (~5e-5) times less likely than the frame's best is skipped:
# it cannot lift a prefix into a beam of a few (pyctcdecode prunes its beams at -10 too)


@dataclass(frozen=True)
class CtcDecodeOptions:
    """How ``decode_ctc`` searches; validated on construction."""

    method: str = "greedy"  # the cheap one: no search, the best path's labels
    beam: int = BEAM  # prefixes kept per frame (prefix_beam); see BEAM
    lm_weight: float = 0.0  # token LM weight; 0: no LM, the acoustically best labelling
    token_bonus: float = 0.0  # log bonus per emitted token (offsets an LM's deletions); 0: none
    prune: float = PRUNE  # per-frame token pruning below best - prune (log); see PRUNE

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"ctc decode: method {self.method!r} is not one of {METHODS}")
        if isinstance(self.beam, bool) or not isinstance(self.beam, int) or self.beam < 1:
            raise ConfigError(f"ctc decode: beam must be an integer >= 1, not {self.beam!r}")
        _check_weights(self.lm_weight, self.token_bonus, self.prune)
        if self.method == "greedy" and (self.lm_weight != 0 or self.token_bonus != 0):
            raise ConfigError("ctc decode: greedy decoding takes no lm_weight or token_bonus")


@dataclass(frozen=True)
class TokenBigram:
    """A token bigram LM with sentence start and end, interpolated Witten-Bell smoothed.

    ``logprob[p, q]`` is ``log P(q | p)``; row C is ``<s>`` as the previous token, column C
    is ``</s>``; blank's row and column are -inf (CTC's blank is no token). With V = C
    predictable tokens (the C - 1 labels and ``</s>``), N tokens counted (``</s>``
    included), ``n(w)`` and ``n(p, w)`` the unigram and bigram counts, ``T`` the distinct
    tokens seen and ``T(p)`` the distinct successors of p (Witten & Bell 1991; Chen &
    Goodman 1998, section 2.4)::

        P(w)     = (n(w) + T / V) / (N + T)
        P(w | p) = (n(p, w) + T(p) P(w)) / (n(p) + T(p))    (P(w) where p was never seen)

    so every token, seen after p or not, has a non-zero probability, and each row sums to 1
    over the labels and ``</s>``.
    """

    logprob: np.ndarray  # (C + 1, C + 1) log P(next | prev)
    blank: int

    def __post_init__(self) -> None:
        shape = np.shape(self.logprob)
        if len(shape) != 2 or shape[0] != shape[1] or shape[0] < 3:
            raise ConfigError(f"token bigram: logprob of shape {shape}, not (C + 1, C + 1), C >= 2")
        if not 0 <= self.blank < shape[0] - 1:
            raise ConfigError(
                f"token bigram: blank {self.blank} is not one of {shape[0] - 1} labels"
            )

    @property
    def num_labels(self) -> int:
        """C, the labels of the model it scores (blank included)."""
        return int(self.logprob.shape[0] - 1)

    @classmethod
    def estimate(
        cls, sequences: Iterable[Sequence[int] | np.ndarray], num_labels: int, blank: int
    ) -> TokenBigram:
        """The bigram of ``sequences`` (label indices, no blank) over ``num_labels`` labels."""
        if num_labels < 2 or not 0 <= blank < num_labels:
            raise ConfigError(
                f"token bigram: {num_labels} labels cannot hold blank {blank} and a token"
            )
        c = num_labels  # index C: <s> as a row, </s> as a column
        counts = np.zeros((c + 1, c + 1), dtype=np.float64)  # (C + 1, C + 1) n(prev, next)
        for n, seq in enumerate(sequences):
            tokens = np.asarray(seq, dtype=np.int64).reshape(-1)  # (L,)
            bad = (tokens < 0) | (tokens >= c) | (tokens == blank)
            if bad.any():
                token = int(tokens[np.argmax(bad)])
                raise ConfigError(f"token bigram: sequence {n} holds {token}, blank or not a label")
            path = np.concatenate([[c], tokens, [c]])  # <s> l_1 .. l_L </s>
            np.add.at(counts, (path[:-1], path[1:]), 1.0)
        total = counts.sum()
        if total == 0:
            raise ConfigError("token bigram: no sequences to estimate from")
        allowed = np.ones(c + 1, dtype=bool)  # (C + 1,) the predictable tokens: labels, </s>
        allowed[blank] = False
        unigram = counts.sum(axis=0)  # (C + 1,) n(w)
        types = np.count_nonzero(unigram)
        p_uni = np.where(allowed, (unigram + types / allowed.sum()) / (total + types), 0.0)
        history = counts.sum(axis=1, keepdims=True)  # (C + 1, 1) n(p)
        successors = np.count_nonzero(counts, axis=1)[:, None]  # (C + 1, 1) T(p)
        with np.errstate(invalid="ignore", divide="ignore"):
            prob = (counts + successors * p_uni) / (history + successors)  # (C + 1, C + 1)
            prob = np.where(history > 0, prob, p_uni[None, :])
            logprob = np.log(prob)
        logprob[blank, :] = -np.inf  # blank is never a previous token
        return cls(logprob, blank)


@dataclass(frozen=True)
class ScoredHypothesis:
    """A prefix beam search's best labelling and its scores."""

    tokens: list[int]  # label indices, blanks dropped
    acoustic: float  # log p(tokens | x) over the paths the beam kept (exact if none pruned)
    score: float  # acoustic + lm_weight * log P_LM(tokens </s>) + token_bonus * len(tokens)


def _check_weights(lm_weight: float, token_bonus: float, prune: float) -> None:
    if not (math.isfinite(lm_weight) and lm_weight >= 0) or not math.isfinite(token_bonus):
        raise ConfigError(
            f"ctc decode: lm_weight must be finite and >= 0 ({lm_weight}), "
            f"token_bonus finite ({token_bonus})"
        )
    if not prune > 0:  # inf: no pruning
        raise ConfigError(f"ctc decode: prune must be > 0 (inf: none), not {prune}")


def _checked(logp: np.ndarray, blank: int, where: str = "ctc decode") -> np.ndarray:
    """``logp`` as (T, C) float64 log-posteriors, or a one-line ``ConfigError``."""
    logp = np.asarray(logp)
    if logp.ndim != 2 or not np.issubdtype(logp.dtype, np.number):
        raise ConfigError(f"{where}: log-posteriors of shape {logp.shape}, not (T, C)")
    if isinstance(blank, bool) or not isinstance(blank, (int, np.integer)):
        raise ConfigError(f"{where}: blank must be a label index, not {blank!r}")
    if not 0 <= blank < logp.shape[1]:
        raise ConfigError(f"{where}: blank {blank} is not one of the {logp.shape[1]} classes")
    logp = logp.astype(np.float64, copy=False)  # (T, C)
    bad = np.isnan(logp) | (logp == np.inf)
    if bad.any():
        t = int(np.argmax(bad.any(axis=1)))
        raise ConfigError(f"{where}: frame {t} holds NaN or +inf log-posteriors")
    empty = np.all(logp == -np.inf, axis=1)  # (T,)
    if empty.any():
        raise ConfigError(f"{where}: frame {int(np.argmax(empty))} is -inf for every class")
    return logp


def _check_lm(lm: TokenBigram | None, lm_weight: float, classes: int, blank: int) -> None:
    if lm_weight > 0 and lm is None:
        raise ConfigError("ctc decode: an lm_weight > 0 needs a token LM")
    if lm is not None and (lm.num_labels != classes or lm.blank != blank):
        raise ConfigError(
            f"ctc decode: token LM of {lm.num_labels} labels (blank {lm.blank}), "
            f"posteriors of {classes} (blank {blank})"
        )


def greedy(logp: np.ndarray, blank: int) -> list[int]:
    """The best path of ``logp`` (T, C): each frame's most likely class (the first on a
    tie), repeats merged, blanks dropped (a blank between two equal labels keeps both)."""
    return _greedy(_checked(logp, blank), blank)


def _greedy(logp: np.ndarray, blank: int) -> list[int]:
    return path_tokens(np.argmax(logp, axis=1), blank)  # from the (T,) best path


def path_tokens(path: np.ndarray, blank: int) -> list[int]:
    """The labelling of a path (T,) of class ids: repeats merged, blanks dropped."""
    return [int(c) for c in collapse(np.asarray(path)) if c != blank]


def prefix_beam_search(
    logp: np.ndarray,
    blank: int,
    beam: int = BEAM,
    lm: TokenBigram | None = None,
    lm_weight: float = 0.0,
    token_bonus: float = 0.0,
    prune: float = PRUNE,
) -> list[int]:
    """The best labelling of ``logp`` (T, C) by prefix beam search (``prefix_beam_scored``)."""
    return prefix_beam_scored(logp, blank, beam, lm, lm_weight, token_bonus, prune).tokens


def prefix_beam_scored(
    logp: np.ndarray,
    blank: int,
    beam: int = BEAM,
    lm: TokenBigram | None = None,
    lm_weight: float = 0.0,
    token_bonus: float = 0.0,
    prune: float = PRUNE,
) -> ScoredHypothesis:
    """The prefix beam search of the module docstring over ``logp`` (T, C), keeping
    ``beam`` prefixes; at each frame only the ``beam`` most likely non-blank tokens within
    ``prune`` of the frame's best extend a prefix. ``lm`` (weighted by ``lm_weight``) and
    ``token_bonus`` enter the ranking. An empty utterance (T = 0) gives the empty
    labelling."""
    CtcDecodeOptions("prefix_beam", beam, lm_weight, token_bonus, prune)  # validates them
    logp = _checked(logp, blank)
    _check_lm(lm, lm_weight, logp.shape[1], blank)
    return _search(logp, blank, beam, lm, lm_weight, token_bonus, prune)


def _candidates(row: np.ndarray, blank: int, beam: int, prune: float) -> np.ndarray:
    """(K,) the non-blank classes of a (C,) frame within ``prune`` of its best, the ``beam``
    most likely at most."""
    keep = np.flatnonzero((row >= row.max() - prune) & (row > -np.inf))
    keep = keep[keep != blank]
    if len(keep) > beam:
        keep = keep[np.argsort(-row[keep], kind="stable")[:beam]]
    return keep


def _search(
    logp: np.ndarray,
    blank: int,
    beam: int,
    lm: TokenBigram | None,
    lm_weight: float,
    token_bonus: float,
    prune: float,
) -> ScoredHypothesis:
    frames, c = logp.shape
    use_lm = lm is not None and lm_weight > 0
    # (C + 1, C + 1) what emitting q after p adds to a prefix's score; row C: after <s>
    step = np.full((c + 1, c + 1), token_bonus)
    if use_lm:
        assert lm is not None
        step = lm_weight * lm.logprob + token_bonus
    # (T, C + 1): column C, -inf, is the "last label" of the empty prefix
    padded = np.concatenate([logp, np.full((frames, 1), -np.inf)], axis=1)
    prefixes: list[tuple[int, ...]] = [()]
    pb = np.zeros(1)  # (B,) log mass of the paths ending in blank
    pnb = np.full(1, -np.inf)  # (B,) log mass of the paths ending in the prefix's last label
    lm_score = np.zeros(1)  # (B,) lm_weight * log P_LM(prefix) + token_bonus * |prefix|
    last = np.full(1, c)  # (B,) each prefix's last label; C: empty
    for t in range(frames):
        row = padded[t]  # (C + 1,)
        total = np.logaddexp(pb, pnb)  # (B,)
        new_pb = total + row[blank]  # (B,)
        new_pnb = pnb + row[last]  # (B,) the last label repeated: no new token
        cand = _candidates(row[:c], blank, beam, prune)  # (K,)
        k = len(cand)
        # (B, K) extending prefix i by cand[k]: after a blank only if cand[k] is its last label
        ext = np.where(cand[None, :] == last[:, None], pb[:, None], total[:, None])
        ext = ext + row[cand][None, :]
        if k:
            # an extension that is already in the beam adds to that prefix's p_nb
            index = {p: i for i, p in enumerate(prefixes)}
            position = {int(q): j for j, q in enumerate(cand)}
            for n, p in enumerate(prefixes):
                if p and p[-1] in position and (i := index.get(p[:-1])) is not None:
                    j = position[p[-1]]
                    new_pnb[n] = np.logaddexp(new_pnb[n], ext[i, j])
                    ext[i, j] = -np.inf
        ext_lm = lm_score[:, None] + step[last[:, None], cand[None, :]]  # (B, K)
        scores = np.concatenate([np.logaddexp(new_pb, new_pnb) + lm_score, (ext + ext_lm).ravel()])
        order = np.argsort(-scores, kind="stable")[:beam]  # (<= beam,) ties: older prefixes
        order = order[scores[order] > -np.inf]
        if not len(order):
            raise ConfigError(f"ctc decode: no prefix survives frame {t} (the LM forbids all)")
        old, new = order[order < len(prefixes)], order[order >= len(prefixes)] - len(prefixes)
        parent, token = np.divmod(new, max(k, 1))  # (N,) the prefix each new one extends
        prefixes = [prefixes[i] for i in old] + [
            (*prefixes[i], int(cand[j])) for i, j in zip(parent, token, strict=True)
        ]
        pb = np.concatenate([new_pb[old], np.full(len(new), -np.inf)])
        pnb = np.concatenate([new_pnb[old], ext[parent, token]])
        lm_score = np.concatenate([lm_score[old], ext_lm[parent, token]])
        last = np.concatenate([last[old], cand[token]])
    acoustic = np.logaddexp(pb, pnb)  # (B,)
    final = acoustic + lm_score
    if use_lm:
        assert lm is not None
        final = final + lm_weight * lm.logprob[last, c]  # </s>
    best = int(np.argmax(final))
    return ScoredHypothesis(list(prefixes[best]), float(acoustic[best]), float(final[best]))


def _decode_chunk(
    logps: Sequence[np.ndarray], blank: int, opts: CtcDecodeOptions, lm: TokenBigram | None
) -> list[list[int]]:
    """Checked utterances decoded in this process (a worker's task, module level for spawn)."""
    if opts.method == "greedy":
        return [_greedy(logp, blank) for logp in logps]
    return [
        _search(logp, blank, opts.beam, lm, opts.lm_weight, opts.token_bonus, opts.prune).tokens
        for logp in logps
    ]


def decode_ctc(
    logps: Sequence[np.ndarray],
    blank: int,
    opts: CtcDecodeOptions,
    lm: TokenBigram | None = None,
    jobs: int = 1,
) -> list[list[int]]:
    """Each utterance's (T_i, C) log-posteriors decoded by ``opts.method``, in order; with
    ``jobs`` > 1 in spawned worker processes, ``TASK_UTTERANCES`` utterances a task."""
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ConfigError(f"ctc decode: jobs must be an integer >= 1, not {jobs!r}")
    checked = [_checked(logp, blank, f"ctc decode: utterance {n}") for n, logp in enumerate(logps)]
    for n, logp in enumerate(checked):
        try:
            _check_lm(lm, opts.lm_weight, logp.shape[1], blank)
        except ConfigError as e:
            raise ConfigError(
                f"ctc decode: utterance {n}: {str(e).removeprefix('ctc decode: ')}"
            ) from None
    chunks = [checked[i : i + TASK_UTTERANCES] for i in range(0, len(checked), TASK_UTTERANCES)]
    if jobs == 1 or len(chunks) <= 1:  # one task: no worker to start
        return [hyp for chunk in chunks for hyp in _decode_chunk(chunk, blank, opts, lm)]
    context = multiprocessing.get_context("spawn")  # never fork a parent's threads
    with ProcessPoolExecutor(min(jobs, len(chunks)), context) as pool:
        futures = [pool.submit(_decode_chunk, chunk, blank, opts, lm) for chunk in chunks]
        return [hyp for future in futures for hyp in future.result()]


def write_hypotheses(path: str | Path, hypotheses: Mapping[str, Sequence[str]]) -> Path:
    """Kaldi ``text``: ``<utt> tok tok ...`` a line (just ``<utt>`` for an empty
    hypothesis), utterances in the given order, UTF-8; the path."""
    lines = []
    for utt, tokens in hypotheses.items():
        for name in (utt, *tokens):
            if not name or len(name.split()) != 1 or name != name.strip():
                raise ConfigError(
                    f"ctc hypotheses: utterance {utt!r}: {name!r} is empty or holds white space"
                )
        lines.append(" ".join((utt, *tokens)) + "\n")
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("".join(lines), encoding="utf-8")
    return p
