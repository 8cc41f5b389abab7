"""Word graphs (lexicon + n-gram LM through kaldilm), decoding in worker processes, and the
decoded word error rate."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from kdpipe.cli.main import app
from kdpipe.corpus.lexicon import Lexicon, lexicon_beside
from kdpipe.decode.hybrid import DecodeOptions, decode_scores, pseudo_loglik
from kdpipe.decode.jobs import Decoder
from kdpipe.decode.ngram import arpa_words, bigram_arpa, grammar_fst
from kdpipe.decode.phone_loop import build_phone_loop
from kdpipe.decode.scoring import decoded_errors
from kdpipe.decode.word_graph import build_word_graph
from kdpipe.errors import ConfigError
from kdpipe.learn.evaluate import evaluate_checkpoint
from kdpipe.metrics import error_counts
from kdpipe.testing.corpora import PRONS, make_word_store

torch.set_num_threads(1)
LABELS = ["sil", "a", "b", "c"]
LEXICON = Lexicon({word: (pron,) for word, pron in PRONS.items()}, tuple(LABELS))


def peaked(seq: list[int], classes: int, p: float = 0.9) -> np.ndarray:
    lp = np.full((len(seq), classes), np.log((1 - p) / (classes - 1)), np.float32)
    lp[np.arange(len(seq)), seq] = np.log(p)
    return lp


def frames_of(phones: str, each: int = 3) -> list[int]:
    return [LABELS.index(p) for p in phones.split() for _ in range(each)]


def best_words(graph, frames: list[int] | np.ndarray) -> list[str]:
    logp = frames if isinstance(frames, np.ndarray) else peaked(frames, len(LABELS))
    hyp = decode_scores(graph.fst, pseudo_loglik(logp, np.zeros(len(LABELS)), 1.0),
                        DecodeOptions(acoustic_scale=1.0))  # fmt: skip
    assert hyp.reached_final
    return graph.tokens(hyp.symbols)


def parse_arpa(text: str) -> tuple[dict[str, tuple[float, float]], dict[tuple[str, str], float]]:
    uni, bi, section = {}, {}, None
    for line in text.splitlines():
        if line.startswith("\\"):
            section = line
        elif line.strip() and section == "\\1-grams:":
            f = line.split()
            uni[f[1]] = (float(f[0]), float(f[2]) if len(f) > 2 else 0.0)
        elif line.strip() and section == "\\2-grams:":
            f = line.split()
            bi[(f[1], f[2])] = float(f[0])
    return uni, bi


def test_the_estimated_bigram_is_a_proper_backoff_lm():
    sentences = [["ab", "ba"], ["ab", "c"], ["c"], ["ab", "ba", "c"]]
    uni, bi = parse_arpa(bigram_arpa(sentences, PRONS))
    assert set(uni) == {*PRONS, "<s>", "</s>"} and uni["<s>"][0] == -99.0
    assert ("ab", "ba") in bi and ("ba", "ab") not in bi
    for history in ["<s>", *PRONS]:  # every history's distribution sums to one
        backoff = 10 ** uni[history][1]
        total = 0.0
        for word in [*PRONS, "</s>"]:
            seen = bi.get((history, word))
            total += 10**seen if seen is not None else backoff * 10 ** uni[word][0]
        assert math.isclose(total, 1.0, rel_tol=1e-4), history
    assert 10 ** bi[("ab", "ba")] > 10 ** uni["ba"][0]  # seen twice after ab: more likely
    with pytest.raises(ConfigError, match="training word 'dog' is not in the lexicon"):
        bigram_arpa([["ab", "dog"]], PRONS)


def test_a_tiny_word_graph_decodes_to_the_best_words():
    graph = build_word_graph(LABELS, LEXICON, sentences=[["ab", "ba"], ["cab"], ["c", "ab"]])
    assert graph.unit == "word" and set(PRONS) <= set(graph.symbols)
    assert best_words(graph, frames_of("sil a b b a sil")) == ["ab", "ba"]
    assert best_words(graph, frames_of("c a b sil c")) == ["cab", "c"]
    assert best_words(graph, frames_of("sil c sil a b")) == ["c", "ab"]


def test_the_lm_decides_where_the_acoustics_do_not():
    # "c a b" is "cab" or "c" + "ab": training saw only "c ab", so the bigram picks it
    logp = peaked(frames_of("c a b"), len(LABELS))
    graph = build_word_graph(LABELS, LEXICON, sentences=[["c", "ab"]] * 20)
    assert best_words(graph, logp) == ["c", "ab"]
    graph = build_word_graph(LABELS, LEXICON, sentences=[["cab"]] * 20)
    assert best_words(graph, logp) == ["cab"]


def test_a_users_arpa_is_read_through_kaldilm(tmp_path):
    arpa = tmp_path / "lm.arpa"
    arpa.write_text(bigram_arpa([["cab"]] * 20, PRONS))
    assert arpa_words(arpa) == {*PRONS, "<s>", "</s>"}
    graph = build_word_graph(LABELS, LEXICON, arpa)
    assert best_words(graph, peaked(frames_of("c a b"), len(LABELS))) == ["cab"]


def test_bad_lms_and_lexicons_are_one_line_errors(tmp_path):
    words = ["<eps>", *sorted(PRONS), "#0", "<s>", "</s>"]
    with pytest.raises(ConfigError, match="LM not found"):
        grammar_fst(tmp_path / "none.arpa", words)
    (tmp_path / "x.arpa").write_text("hello\n")
    with pytest.raises(ConfigError, match="not an ARPA file"):
        grammar_fst(tmp_path / "x.arpa", words)
    (tmp_path / "oov.arpa").write_text(bigram_arpa([["ab", "dog"]], [*PRONS, "dog"]))
    with pytest.raises(ConfigError, match=r"1 word\(s\) not in the lexicon, e.g. 'dog'"):
        grammar_fst(tmp_path / "oov.arpa", words)
    broken = bigram_arpa([["ab"]], PRONS).replace("\\end\\", "")  # kaldi's parser aborts
    (tmp_path / "broken.arpa").write_text(broken)
    with pytest.raises(ConfigError, match="kaldilm cannot read it"):
        grammar_fst(tmp_path / "broken.arpa", words)
    graph = build_word_graph(LABELS, LEXICON, sentences=[["ab"]])
    with pytest.raises(ConfigError, match="no utterances to decode"):
        decoded_errors(graph, np.zeros(4), [], [], [], DecodeOptions(acoustic_scale=1.0))
    with pytest.raises(ConfigError, match="4 classes of posteriors but 3 priors"):
        decoded_errors(graph, np.zeros(3), [peaked([1, 2], 4)], [["ab"]], ["u"],
                       DecodeOptions(acoustic_scale=1.0))  # fmt: skip
    with pytest.raises(ConfigError, match="lexicon's phone 'd' has no HMM among the model's 4"):
        build_word_graph(LABELS, Lexicon({"d": (("d",),)}, ("sil", "d")), sentences=[["d"]])


def test_worker_processes_decode_what_this_process_does():
    rng = np.random.default_rng(0)
    logps = [np.log(rng.dirichlet(np.ones(4), size=int(n))).astype(np.float32)
             for n in rng.integers(5, 40, size=20)]  # fmt: skip
    graph = build_phone_loop(LABELS)
    opts = DecodeOptions(acoustic_scale=0.7)
    log_prior = np.log(np.full(4, 0.25))
    alone = Decoder(graph.fst).best_paths(logps, log_prior, opts)
    with Decoder(graph.fst, jobs=2, progress=False) as decoder:
        pooled = decoder.best_paths(logps, log_prior, opts)
        again = decoder.best_paths(logps[:3], log_prior, opts)  # the pool serves many calls
    assert [h.symbols for h in pooled] == [h.symbols for h in alone]
    assert [h.symbols for h in again] == [h.symbols for h in alone[:3]]
    assert any(h.symbols for h in alone)


def test_decoded_errors_are_kaldialigns_counts_and_lost_searches_are_deletions():
    graph = build_word_graph(LABELS, LEXICON, sentences=[["ab", "ba"]])
    logps = [peaked(frames_of("sil a b b a sil"), 4), peaked(frames_of("c a b"), 4)]
    refs = [["ab", "ba", "c"], ["dog", "cab"]]  # 'dog' is out of the vocabulary
    result = decoded_errors(graph, np.zeros(4), logps, refs, ["u1", "u2"],
                            DecodeOptions(acoustic_scale=1.0))  # fmt: skip
    expected = error_counts(refs[0], result.hypotheses["u1"]) + error_counts(
        refs[1], result.hypotheses["u2"]
    )
    assert result.counts == expected and result.out_of_vocabulary == 1
    assert result.hypotheses["u1"] == ["ab", "ba"] and result.counts.ref_len == 5
    # two frames, and silence has three states and the one word three phones: no path
    # can finish
    labels = ["sil_1", "sil_2", "sil_3", "a", "b", "c"]
    stuck = build_word_graph(labels, Lexicon({"cab": (("c", "a", "b"),)}, tuple(LABELS)),
                             sentences=[["cab"]])  # fmt: skip
    lost = decoded_errors(stuck, np.zeros(6), [peaked([5, 3], 6)], [["cab"]], ["u"],
                          DecodeOptions(acoustic_scale=1.0))  # fmt: skip
    assert lost.not_final == 1 and lost.counts.dels == 1 and lost.hypotheses["u"] == []


@pytest.fixture(scope="module")
def trained(tmp_path_factory, train_small_dnn):
    d = tmp_path_factory.mktemp("words")
    fs = make_word_store(d / "corpus" / "f.zarr")
    return fs, train_small_dnn(fs, d / "m")


def test_a_trained_model_is_scored_in_words_with_the_lexicon_beside_it(trained, tmp_path):
    fs, model = trained
    assert lexicon_beside(fs.attrs["source"]) is not None
    report = evaluate_checkpoint(model, fs.location, "test", tmp_path / "ev",
                                 decode=DecodeOptions(), jobs=2)  # fmt: skip
    words = report.decoded_words
    assert words is not None and words.unit == "word" and words.tuned_on == "dev"
    texts = dict(zip(fs.ids, fs.texts, strict=True))
    assert words.counts.ref_len == sum(len(texts[u].split()) for u in words.hypotheses)
    assert 0 <= words.rate < 1 and report.decoded is not None
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["decoded_wer"] == words.rate and metrics["decode_words"]["unit"] == "word"
    assert "collapsed_per" in metrics and "phone_error_rate" not in metrics
    lines = (tmp_path / "ev" / "hyp_words.txt").read_text().splitlines()
    assert len(lines) == 6 and all(set(line.split()[1:]) <= set(PRONS) for line in lines)
    phones_only = evaluate_checkpoint(model, fs.location, "test", words=False,
                                      decode=DecodeOptions(acoustic_scale=0.5))  # fmt: skip
    assert phones_only.decoded_words is None and phones_only.decoded is not None


def test_word_decoding_without_what_it_needs_is_a_one_line_error(trained, tmp_path):
    fs, model = trained
    r = CliRunner().invoke(app, ["eval", "--model", str(model), "--corpus", fs.location,
                                 "--decode", "--lexicon", str(tmp_path / "none.txt")])  # fmt: skip
    assert r.exit_code == 1 and "not found" in r.output and "Traceback" not in r.output
    bad = tmp_path / "lexicon.txt"
    bad.write_text("ab a b\nba b a\ncab c a b\n")  # lacks "c", a training word
    r = CliRunner().invoke(app, ["eval", "--model", str(model), "--corpus", fs.location,
                                 "--decode", "--lexicon", str(bad)])  # fmt: skip
    assert r.exit_code == 1 and "training word 'c' is not in the lexicon" in r.output
    r = CliRunner().invoke(app, ["eval", "--model", str(model), "--corpus", fs.location,
                                 "--decode", "--words", "--view-ms", "100"])  # fmt: skip
    assert r.exit_code == 1 and "a crop window has no words to score" in r.output
    r = CliRunner().invoke(app, ["eval", "--model", str(model), "--corpus", fs.location,
                                 "--decode", "--acoustic-scale", "0.5", "--jobs", "2"])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert re.search(r"decoded_wer\s+\S+", r.output) and "decoded_per" in r.output


def test_a_recipe_eval_decodes_phones_only_when_told(trained):
    from kdpipe.pipeline.stages import score

    fs, model = trained
    both = score(model, fs.location, "test", None, True)
    phones = score(model, fs.location, "test", None, "phones")
    assert "decoded_wer" in both and "decoded_per" in both
    assert "decoded_wer" not in phones and phones["decoded_per"] == both["decoded_per"]
    with pytest.raises(ConfigError, match="decode must be true, false or phones, got 'words'"):
        score(model, fs.location, "test", None, "words")
