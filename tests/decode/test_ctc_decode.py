"""CTC decoding: greedy, prefix beam search (against a brute-force sum over all paths),
the token bigram, worker processes, Kaldi text, scoring, and one-line errors."""

from __future__ import annotations

import itertools
import math

import kaldialign
import numpy as np
import pytest

from kdpipe.decode.ctc import (
    CtcDecodeOptions,
    TokenBigram,
    decode_ctc,
    greedy,
    prefix_beam_scored,
    prefix_beam_search,
    write_hypotheses,
)
from kdpipe.errors import ConfigError
from kdpipe.metrics import total_errors


def log_softmax(x: np.ndarray) -> np.ndarray:
    return x - np.logaddexp.reduce(x, axis=1, keepdims=True)


def labellings(logp: np.ndarray, blank: int) -> dict[tuple[int, ...], float]:
    """log p(l | x) of every labelling l, by summing over all C^T paths (Graves 2006)."""
    frames, classes = logp.shape
    out: dict[tuple[int, ...], float] = {}
    for path in itertools.product(range(classes), repeat=frames):
        collapsed = [c for n, c in enumerate(path) if n == 0 or c != path[n - 1]]
        label = tuple(c for c in collapsed if c != blank)
        out[label] = np.logaddexp(out.get(label, -np.inf), logp[np.arange(frames), path].sum())
    return out


def lm_logprob(lm: TokenBigram, label: tuple[int, ...]) -> float:
    c = lm.num_labels
    path = [c, *label, c]
    return float(sum(lm.logprob[p, q] for p, q in itertools.pairwise(path)))


def test_greedy_merges_repeats_and_keeps_a_blank_separated_repeat():
    #            a  a  -  b  -  b  b  -  -  a
    frames = [1, 1, 0, 2, 0, 2, 2, 0, 0, 1]
    logp = np.log(np.full((len(frames), 3), 0.1))
    logp[np.arange(len(frames)), frames] = np.log(0.8)
    assert greedy(logp, blank=0) == [1, 2, 2, 1]
    assert greedy(logp[:, [1, 0, 2]], blank=1) == [0, 2, 2, 0]  # blank need not be 0
    assert greedy(np.zeros((0, 3)), 0) == [] and prefix_beam_search(np.zeros((0, 3)), 0) == []


def test_prefix_beam_finds_the_labelling_the_best_path_misses():
    # best path blank-blank (0.36), but "a" has a-a + a-blank + blank-a = 0.64
    logp = np.log(np.array([[0.6, 0.4], [0.6, 0.4]]))
    assert greedy(logp, 0) == []
    brute = labellings(logp, 0)
    assert max(brute, key=brute.__getitem__) == (1,)
    scored = prefix_beam_scored(logp, 0, beam=4)
    assert scored.tokens == [1]
    assert math.isclose(scored.acoustic, math.log(0.64)) and scored.score == scored.acoustic
    assert decode_ctc([logp], 0, CtcDecodeOptions("prefix_beam")) == [[1]]


@pytest.mark.parametrize("seed", range(6))
def test_a_wide_beam_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    frames, classes = int(rng.integers(2, 6)), int(rng.integers(2, 4))
    logp = log_softmax(rng.normal(0, 1.5, (frames, classes)))
    blank = int(rng.integers(classes))
    brute = labellings(logp, blank)
    best = max(brute, key=brute.__getitem__)
    scored = prefix_beam_scored(logp, blank, beam=400, prune=np.inf)
    assert tuple(scored.tokens) == best
    assert math.isclose(scored.acoustic, brute[best], abs_tol=1e-9)
    assert math.isclose(scored.score, brute[best], abs_tol=1e-9)  # lm_weight 0: the same
    # with an LM and a bonus, the search ranks by acoustic + weight * LM + bonus * length
    others = [s for s in rng.integers(classes, size=(8, 4)).tolist()]
    lm = TokenBigram.estimate([[c for c in s if c != blank] for s in others], classes, blank)
    total = {lab: a + 0.7 * lm_logprob(lm, lab) + 0.3 * len(lab) for lab, a in brute.items()}
    best_lm = max(total, key=total.__getitem__)
    with_lm = prefix_beam_scored(logp, blank, 400, lm, 0.7, 0.3, np.inf)
    assert tuple(with_lm.tokens) == best_lm
    assert math.isclose(with_lm.score, total[best_lm], abs_tol=1e-9)
    assert math.isclose(with_lm.acoustic, brute[best_lm], abs_tol=1e-9)


def test_the_lm_decides_between_nearly_tied_labellings():
    # three frames, acoustically "a" (1) barely ahead of "b" (2)
    logp = np.log(np.array([[0.3, 0.36, 0.34], [0.3, 0.36, 0.34], [0.3, 0.36, 0.34]]))
    assert prefix_beam_search(logp, 0) == [1]
    lm = TokenBigram.estimate([[2]] * 50 + [[1]], num_labels=3, blank=0)
    assert prefix_beam_search(logp, 0, lm=lm, lm_weight=1.0) == [2]
    opts = CtcDecodeOptions("prefix_beam", lm_weight=1.0)
    assert decode_ctc([logp], 0, opts, lm) == [[2]]


def test_the_token_bigram_is_normalised_and_smoothed():
    lm = TokenBigram.estimate([[1, 2, 1], [3], [1, 1], []], num_labels=5, blank=0)
    assert lm.logprob.shape == (6, 6) and lm.num_labels == 5
    prob = np.exp(lm.logprob)
    rows = [1, 2, 3, 4, 5]  # every label and <s> (row 5) as the previous token
    np.testing.assert_allclose(prob[rows].sum(axis=1), 1.0)
    assert np.all(prob[rows][:, [1, 2, 3, 4, 5]] > 0)  # unseen: 4 ever, 2 after 2, </s> after 2
    assert np.all(prob[0] == 0) and np.all(prob[:, 0] == 0)  # blank is no token
    assert prob[5, 1] > prob[5, 3] > prob[5, 4]  # <s> a twice, <s> c once, <s> d never
    assert prob[1, 2] > prob[1, 3] > 0  # seen bigram above an unseen one


def test_worker_processes_give_the_same_hypotheses():
    rng = np.random.default_rng(3)
    logps = [log_softmax(rng.normal(0, 3, (int(rng.integers(0, 30)), 6))) for _ in range(20)]
    for opts in (CtcDecodeOptions(), CtcDecodeOptions("prefix_beam", beam=4)):
        one = decode_ctc(logps, 0, opts)
        assert len(one) == 20 and any(one)
        if opts.method == "prefix_beam":
            assert decode_ctc(logps, 0, opts, jobs=2) == one


def test_hypotheses_read_back_as_kaldi_text(tmp_path):
    hyps = {"u2": ["a", "ü", "b"], "u1": [], "u3": ["<unk>"]}
    path = write_hypotheses(tmp_path / "dir" / "text", hyps)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines == ["u2 a ü b", "u1", "u3 <unk>"]  # the given order, not sorted
    assert {line.split()[0]: line.split()[1:] for line in lines} == hyps
    with pytest.raises(ConfigError, match=r"u1.*white space"):
        write_hypotheses(tmp_path / "bad", {"u1": ["a b"]})


def test_decoded_names_score_as_kaldialign_does():
    names = ["<b>", "h", "e", "l", "o"]
    #          h  -  e  l  -  l  o  o
    frames = [1, 0, 2, 3, 0, 3, 4, 4]
    logp = np.log(np.full((len(frames), 5), 0.05))
    logp[np.arange(len(frames)), frames] = np.log(0.8)
    hyp = [names[c] for c in decode_ctc([logp], 0, CtcDecodeOptions("prefix_beam"))[0]]
    assert "".join(hyp) == "hello"
    refs, hyps = [list("hallo"), list("hello")], [hyp, list("helo")]
    counts = total_errors(refs, hyps)
    expected = [kaldialign.edit_distance(r, h) for r, h in zip(refs, hyps, strict=True)]
    assert (counts.sub, counts.dels, counts.ins) == (1, 1, 0)
    assert counts.errors == sum(e["total"] for e in expected) and counts.ref_len == 10


def one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("logp", "blank", "match"),
    [
        (np.zeros((4,)), 0, "not \\(T, C\\)"),
        (np.zeros((2, 3, 4)), 0, "not \\(T, C\\)"),
        (np.zeros((4, 3)), 3, "blank 3 is not one of the 3 classes"),
        (np.array([[0.0, np.nan], [0.0, 0.0]]), 0, "frame 0 holds NaN"),
        (np.array([[0.0, 0.0], [np.inf, 0.0]]), 0, "frame 1 holds NaN or \\+inf"),
        (np.array([[0.0, -np.inf], [-np.inf, -np.inf]]), 0, "frame 1 is -inf for every class"),
    ],
)
def test_bad_posteriors_give_one_line(logp, blank, match):
    for decode in (greedy, prefix_beam_search):
        with pytest.raises(ConfigError, match=match) as excinfo:
            decode(logp, blank)
        one_line(excinfo)
    with pytest.raises(ConfigError, match=f"utterance 1: .*{match}"):
        decode_ctc([np.zeros((2, 4)), logp], blank, CtcDecodeOptions())


def test_minus_inf_entries_are_fine():
    logp = np.array([[0.0, -np.inf], [-np.inf, 0.0], [np.log(0.5), np.log(0.5)]])
    assert greedy(logp, 0) == [1] and prefix_beam_search(logp, 0) == [1]


def test_bad_options_and_lms_give_one_line():
    for kwargs, match in [
        ({"method": "viterbi"}, "method 'viterbi'"),
        ({"method": "prefix_beam", "beam": 0}, "beam must be an integer"),
        ({"method": "prefix_beam", "lm_weight": -1.0}, "lm_weight must be finite"),
        ({"method": "prefix_beam", "token_bonus": float("nan")}, "token_bonus finite"),
        ({"method": "prefix_beam", "prune": 0.0}, "prune must be > 0"),
        ({"lm_weight": 0.5}, "greedy decoding takes no lm_weight"),
    ]:
        with pytest.raises(ConfigError, match=match) as excinfo:
            CtcDecodeOptions(**kwargs)
        one_line(excinfo)
    logp = np.zeros((3, 4))
    lm = TokenBigram.estimate([[1, 2]], num_labels=3, blank=0)
    with pytest.raises(ConfigError, match=r"token LM of 3 labels .* posteriors of 4") as excinfo:
        prefix_beam_search(logp, 0, lm=lm, lm_weight=1.0)
    one_line(excinfo)
    with pytest.raises(ConfigError, match="utterance 0: token LM of 3 labels"):
        decode_ctc([logp], 0, CtcDecodeOptions("prefix_beam", lm_weight=1.0), lm)
    with pytest.raises(ConfigError, match="needs a token LM"):
        decode_ctc([logp], 0, CtcDecodeOptions("prefix_beam", lm_weight=1.0))
    with pytest.raises(ConfigError, match="jobs must be"):
        decode_ctc([logp], 0, CtcDecodeOptions(), jobs=0)
    for seqs, match in [([[1, 0]], "sequence 0 holds 0"), ([[1], [3]], "sequence 1 holds 3"),
                        ([[-1]], "holds -1"), ([], "no sequences")]:  # fmt: skip
        with pytest.raises(ConfigError, match=match) as excinfo:
            TokenBigram.estimate(seqs, num_labels=3, blank=0)
        one_line(excinfo)
