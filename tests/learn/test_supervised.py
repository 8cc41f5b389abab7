"""Supervised training end to end on tiny fake feature stores: the trainer, resume, eval."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from kdpipe.cli.main import app
from kdpipe.errors import LabelSetError, ModelError, TrainingError
from kdpipe.learn.evaluate import evaluate_checkpoint
from kdpipe.learn.supervised import SupervisedRun, train_supervised
from kdpipe.learn.train_config import TrainConfig
from kdpipe.models import load_checkpoint
from kdpipe.testing.corpora import make_feature_store
from kdpipe.testing.teachers import assert_same_weights

torch.set_num_threads(1)
SMALL = {
    "dnn": {"hidden_dim": 32, "num_layers": 2, "left_context": 2, "right_context": 2},
    "lstm": {"hidden_dim": 16, "num_layers": 1},
    "tdnn": {"hidden_dim": 16, "kernel_sizes": [3, 3], "dilations": [1, 2]},
    "cnn": {"channels": [4, 8]},
}


@pytest.fixture(scope="module")
def frame_store(tmp_path_factory):
    loc = tmp_path_factory.mktemp("fs") / "frame.zarr"
    make_feature_store(loc, per_split={"train": 24, "dev": 6, "test": 6}, num_mel_bins=8)
    return str(loc)


@pytest.fixture(scope="module")
def clip_store(tmp_path_factory):
    loc = tmp_path_factory.mktemp("fs") / "clip.zarr"
    make_feature_store(
        loc, task="clip", per_split={"train": 24, "dev": 8, "test": 8}, num_mel_bins=8
    )
    return str(loc)


def run(corpus, student, epochs=3, **train):
    cfg = TrainConfig(epochs=epochs, batch_frames=400, lr=5e-3, patience=0, **train)
    return SupervisedRun(corpus, student, SMALL[student], cfg)


@pytest.mark.parametrize("student", ["dnn", "lstm", "tdnn"])
def test_frame_models_learn(frame_store, tmp_path, student):
    r = train_supervised(run(frame_store, student, epochs=10), tmp_path, progress=False)
    losses = [h["train_loss"] for h in r.history]
    assert losses[-1] < losses[0]
    assert r.best_dev_acc > 0.5  # 4 well-separated classes; chance is 0.25
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "curves.png").is_file()
    _, card = load_checkpoint(tmp_path)
    assert card.metrics["dev_acc"] == pytest.approx(r.best_dev_acc)
    assert card.training["objective"] == "hard"


def test_clip_model_learns_and_evaluates(clip_store, tmp_path):
    r = train_supervised(run(clip_store, "cnn", epochs=6), tmp_path / "m", progress=False)
    assert r.history[-1]["train_loss"] < r.history[0]["train_loss"]
    rep = evaluate_checkpoint(tmp_path / "m", clip_store, "test", out=tmp_path / "ev")
    assert rep.level == "utt" and rep.utterances == 8
    assert rep.confusion.sum() == 8 and rep.collapsed_per is None
    saved = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert saved["clip_accuracy"] == pytest.approx(rep.accuracy)
    assert (tmp_path / "ev" / "confusion.png").is_file()


def test_resume_equals_uninterrupted(frame_store, tmp_path):
    full = run(frame_store, "lstm", epochs=3, spec_augment=True)
    train_supervised(full, tmp_path / "a", progress=False)
    part = run(frame_store, "lstm", epochs=3, spec_augment=True)
    # interrupt after epoch 2: train 2 epochs of the same 3-epoch run, then resume
    import kdpipe.learn.trainer as trainer

    real = trainer.predict
    calls = {"n": 0}

    def stop_after_two(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    with pytest.MonkeyPatch.context() as mp, pytest.raises(KeyboardInterrupt):
        mp.setattr(trainer, "predict", stop_after_two)
        train_supervised(part, tmp_path / "b", progress=False)
    assert len((tmp_path / "b" / "metrics.jsonl").read_text().splitlines()) == 2
    train_supervised(part, tmp_path / "b", resume=True, progress=False)
    assert_same_weights(tmp_path / "a", tmp_path / "b")
    rows_a = (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()
    rows_b = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()

    def strip(row):
        return {k: v for k, v in json.loads(row).items() if k not in ("seconds", "frames_per_s")}

    assert [strip(r) for r in rows_a] == [strip(r) for r in rows_b]


def test_refuses_to_mix_runs(frame_store, tmp_path):
    train_supervised(run(frame_store, "dnn", epochs=1), tmp_path, progress=False)
    with pytest.raises(TrainingError, match="already holds a training run"):
        train_supervised(run(frame_store, "dnn", epochs=1), tmp_path, progress=False)
    with pytest.raises(TrainingError, match="differs in model_config, student"):
        train_supervised(run(frame_store, "tdnn", epochs=1), tmp_path, resume=True)


def test_level_and_label_mismatches_are_clear(frame_store, clip_store, tmp_path):
    with pytest.raises(ModelError, match=r"utterance-level model but .* frame task"):
        train_supervised(run(frame_store, "cnn", epochs=1), tmp_path / "x", progress=False)
    train_supervised(run(frame_store, "dnn", epochs=1), tmp_path / "m", progress=False)
    other = make_feature_store(
        tmp_path / "other.zarr", labels=("sil", "x", "y", "z"), num_mel_bins=8
    )
    with pytest.raises(LabelSetError, match="label 1 is 'a' vs 'x'"):
        evaluate_checkpoint(tmp_path / "m", other.location, "test")


def test_nan_loss_names_the_batch(tmp_path):
    loc = tmp_path / "nan.zarr"
    store = make_feature_store(loc, num_mel_bins=8, cmvn="none")
    import zarr

    feats = zarr.open_array(str(loc / "feats"), mode="r+")
    feats[0, 0] = np.nan
    with pytest.raises(TrainingError, match="loss is nan at epoch 1"):
        train_supervised(run(store.location, "dnn", epochs=1), tmp_path / "m", progress=False)


def test_cli_learn_and_eval(frame_store, tmp_path):
    runner = CliRunner()
    out = tmp_path / "m"
    args = [
        "learn",
        "--corpus",
        frame_store,
        "--student",
        "dnn",
        "--out",
        str(out),
        "--epochs",
        "2",
        "-m",
        "hidden_dim=16",
        "-s",
        "batch_frames=400",
    ]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "best dev accuracy" in r.output
    r = runner.invoke(app, ["eval", "--model", str(out), "--corpus", frame_store, "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert 0 <= d["frame_accuracy"] <= 1 and d["collapsed_per"] >= 0
    r = runner.invoke(app, ["learn", "--corpus", frame_store, "--out", str(tmp_path / "n")])
    assert r.exit_code == 1 and "no student" in r.output
    r = runner.invoke(app, [*args[:-2], "-s", "epoch=3", "--overwrite"])
    assert r.exit_code == 1 and "unknown key(s) 'epoch'" in r.output
    r = runner.invoke(app, ["eval", "--model", str(tmp_path / "nope"), "--corpus", frame_store])
    assert r.exit_code == 1 and "not found" in r.output
