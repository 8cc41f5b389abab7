"""Hybrid phone-loop decoding: the graph, the search, the priors, the decoded PER."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from kdpipe.cli.main import app
from kdpipe.corpus.priors import label_priors, read_priors, write_priors
from kdpipe.decode import scoring
from kdpipe.decode.hybrid import PATIENCE, SCALES, DecodeOptions, decode_scores, pseudo_loglik
from kdpipe.decode.phone_loop import build_phone_loop, label_phones, phone_bigram, phone_sequences
from kdpipe.errors import ConfigError, LabelSetError
from kdpipe.learn.evaluate import evaluate_checkpoint
from kdpipe.metrics import unit_state
from kdpipe.testing.corpora import make_feature_store

torch.set_num_threads(1)


def peaked(seq: list[int], classes: int, p: float = 0.9) -> np.ndarray:
    """(T, C) log-posteriors putting ``p`` on each frame's label, the rest spread."""
    lp = np.full((len(seq), classes), np.log((1 - p) / (classes - 1)), np.float32)
    lp[np.arange(len(seq)), seq] = np.log(p)
    return lp


def names(graph, symbols):
    return [graph.symbols[s] for s in symbols]


def test_label_names_give_phone_and_state():
    assert unit_state("a") == ("a", 1)
    assert unit_state("a_2") == ("a", 2)
    assert unit_state("l-a+r_3") == ("a", 3)
    assert unit_state("a_2_5") == ("a", 2)  # an aligned tied state: phone, class, leaf
    assert unit_state("t_h") == ("t_h", 1)  # an underscore in a phone name is no state


def test_a_tiny_phone_loop_decodes_to_the_best_path():
    loop = build_phone_loop(["sil", "a", "b"])
    frames = [0, 0, 1, 1, 1, 2, 2, 0]
    hyp = decode_scores(loop.fst, pseudo_loglik(peaked(frames, 3), np.zeros(3), 1.0),
                        DecodeOptions(acoustic_scale=1.0))  # fmt: skip
    assert names(loop, hyp.symbols) == ["sil", "a", "b", "sil"] and hyp.reached_final
    # three states a phone: a_1 a_2 a_3 must be passed in order; a jump back is a new phone
    labels = [f"{p}_{k}" for p in ("sil", "a", "b") for k in (1, 2, 3)]
    loop3 = build_phone_loop(labels)
    frames3 = [0, 1, 2, 3, 4, 4, 5, 3, 4, 5, 6, 7, 8]  # sil, a, a again, b
    hyp3 = decode_scores(loop3.fst, pseudo_loglik(peaked(frames3, 9), np.zeros(9), 1.0),
                         DecodeOptions(acoustic_scale=1.0))  # fmt: skip
    assert names(loop3, hyp3.symbols) == ["sil", "a", "a", "b"]
    assert decode_scores(loop.fst, np.zeros((0, 3), np.float32), DecodeOptions()).symbols == []


def test_the_bigram_decides_where_the_acoustics_do_not():
    labels = ["sil", "a", "b"]
    loop0 = build_phone_loop(labels)
    frames = peaked([0, 1, 1, 0], 3)
    frames[1:3] = np.log([0.1, 0.45, 0.45])  # a or b: a tie
    phones = {p: i for i, p in enumerate(loop0.symbols)}
    seen = [[phones["sil"], phones["b"], phones["sil"]]] * 20  # training: always sil b sil
    loop = build_phone_loop(labels, phone_bigram(seen, len(loop0.symbols)))
    hyp = decode_scores(loop.fst, pseudo_loglik(frames, np.zeros(3), 1.0),
                        DecodeOptions(acoustic_scale=1.0))  # fmt: skip
    assert names(loop, hyp.symbols) == ["sil", "b", "sil"]
    assert phone_sequences([np.array([0, 0, 2, 2, 1])], label_phones(labels)[1]) == [
        [phones["sil"], phones["b"], phones["a"]]
    ]


def test_posteriors_are_divided_by_the_priors(tmp_path):
    logp = np.log(np.array([[0.5, 0.3, 0.2]], np.float32))
    log_prior = np.log(np.array([0.25, 0.25, 0.5]))
    np.testing.assert_allclose(pseudo_loglik(logp, log_prior, 0.5),
                               0.5 * np.log([[2.0, 1.2, 0.4]]), rtol=1e-6)  # fmt: skip
    with pytest.raises(ConfigError, match="3 classes of posteriors but 2 priors"):
        pseudo_loglik(logp, log_prior[:2], 1.0)
    fs = make_feature_store(tmp_path / "f.zarr", labels=("sil", "a", "b"), num_mel_bins=4)
    priors = label_priors(fs)
    counts = sum(np.bincount(fs.frame_labels(int(i)), minlength=3) for i in fs.indices("train"))
    np.testing.assert_allclose(priors, counts / counts.sum())
    write_priors(tmp_path / "priors.vec", counts)  # counts: normalised on reading
    np.testing.assert_allclose(read_priors(tmp_path / "priors.vec", 3), np.log(priors))
    with pytest.raises(LabelSetError, match="3 priors; the label set has 4"):
        read_priors(tmp_path / "priors.vec", 4)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, train_small_dnn):
    d = tmp_path_factory.mktemp("dec")
    fs = make_feature_store(d / "f.zarr", per_split={"train": 24, "dev": 6, "test": 6},
                            num_mel_bins=8, frames=(30, 60))  # fmt: skip
    return fs, train_small_dnn(fs, d / "m")


def test_a_trained_model_decodes_and_is_scored(trained, tmp_path):
    fs, model = trained
    report = evaluate_checkpoint(model, fs.location, "test", tmp_path / "ev",
                                 decode=DecodeOptions())  # fmt: skip
    decoded = report.decoded
    assert decoded is not None and decoded.tuned_on == "dev" and "1" in decoded.sweep
    best = min(decoded.sweep, key=lambda s: (decoded.sweep[s], float(s)))  # ties: the smaller
    assert decoded.acoustic_scale == float(best)
    visited = sorted(decoded.sweep, key=float, reverse=True)  # large to small, then stopped
    assert visited == [f"{s:g}" for s in sorted(SCALES, reverse=True)][: len(visited)]
    if len(visited) < len(SCALES):  # stopped: the last PATIENCE visited are worse than best
        assert all(decoded.sweep[s] > decoded.sweep[best] for s in visited[-PATIENCE:])
    assert decoded.utterances == 6 and decoded.counts.ref_len > 0
    assert 0 <= decoded.rate < 1  # a model better than chance: below 100%
    hyp = (tmp_path / "ev" / "hyp.txt").read_text().splitlines()
    assert len(hyp) == 6 and all(line.split()[0] in fs.ids for line in hyp)
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["decoded_per"] == decoded.rate and metrics["decode"]["tuned_on"] == "dev"
    given = evaluate_checkpoint(
        model, fs.location, "test", decode=DecodeOptions(acoustic_scale=0.3)
    )
    assert given.decoded is not None and given.decoded.tuned_on is None
    with pytest.raises(ConfigError, match="not on the scored split"):
        evaluate_checkpoint(model, fs.location, "dev", decode=DecodeOptions())


def test_eval_cli_prints_the_decoded_per(trained):
    fs, model = trained
    r = CliRunner().invoke(app, ["eval", "--model", str(model), "--corpus", fs.location,
                                 "--decode", "--acoustic-scale", "0.5"])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "decoded_per" in r.output and "collapsed_per" in r.output
    bad = CliRunner().invoke(app, ["eval", "--model", str(model), "--corpus", fs.location,
                                   "--decode", "--acoustic-scale", "-1"])  # fmt: skip
    assert bad.exit_code == 1 and "--acoustic-scale must be > 0, got -1" in bad.output


@pytest.mark.parametrize(
    ("rates", "patience", "visited", "best"),
    [
        # falls to 0.3, then two worse in a row: 0.1 and 0.05 (the slow ones) never decoded
        (
            {1.0: 0.6, 0.7: 0.5, 0.5: 0.4, 0.3: 0.3, 0.2: 0.35, 0.1: 0.5, 0.05: 0.2},
            2,
            ["1", "0.7", "0.5", "0.3", "0.2", "0.1"],
            0.3,
        ),
        # one worse scale, then a better one: the sweep goes on and finds it
        (
            {1.0: 0.6, 0.7: 0.65, 0.5: 0.4, 0.3: 0.5, 0.2: 0.6, 0.1: 0.1, 0.05: 0.1},
            2,
            ["1", "0.7", "0.5", "0.3", "0.2"],
            0.5,
        ),
        # None: every scale; a tie goes to the smaller scale
        (
            {1.0: 0.6, 0.7: 0.65, 0.5: 0.4, 0.3: 0.5, 0.2: 0.6, 0.1: 0.1, 0.05: 0.1},
            None,
            ["1", "0.7", "0.5", "0.3", "0.2", "0.1", "0.05"],
            0.05,
        ),
    ],
)
def test_the_sweep_runs_down_the_scales_and_stops_after_patience_worse(
    monkeypatch, rates, patience, visited, best
):
    decoded: list[float] = []

    def fake_errors(graph, log_prior, logps, refs, ids, opts, decoder):
        decoded.append(opts.acoustic_scale)
        return type("R", (), {"rate": rates[opts.acoustic_scale]})()

    monkeypatch.setattr(scoring, "decoded_errors", fake_errors)
    scale, sweep = scoring.tune_scale(None, None, [], [], [], DecodeOptions(),
                                      patience=patience)  # fmt: skip
    assert list(sweep) == visited and [f"{s:g}" for s in decoded] == visited
    assert scale == best
    with pytest.raises(ConfigError, match="patience >= 1"):
        scoring.tune_scale(None, None, [], [], [], DecodeOptions(), patience=0)
    with pytest.raises(ConfigError, match="needs scales"):
        scoring.tune_scale(None, None, [], [], [], DecodeOptions(), scales=())
