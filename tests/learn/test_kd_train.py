"""``learn --targets`` end to end: a tiny teacher, a store written from it, students."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from kdpipe.cli.main import app
from kdpipe.errors import ConfigError
from kdpipe.learn.kd import KdRun, train_kd
from kdpipe.learn.kd_config import KdConfig
from kdpipe.learn.supervised import SupervisedRun, train_supervised
from kdpipe.learn.train_config import TrainConfig
from kdpipe.models import load_checkpoint
from kdpipe.testing.corpora import make_feature_store
from kdpipe.testing.stores import corpus_store
from kdpipe.testing.teachers import assert_same_weights

torch.set_num_threads(1)
SMALL = {
    "dnn": {"hidden_dim": 16, "num_layers": 1, "left_context": 1, "right_context": 1},
    "lstm": {"hidden_dim": 8, "num_layers": 1},
    "blstm": {"hidden_dim": 8, "num_layers": 1},
    "tdnn": {"hidden_dim": 8, "kernel_sizes": [3, 3], "dilations": [1, 2]},
    "cnn": {"channels": [2, 4]},
    "dnn_pool": {"hidden_dim": 8},
    "lstm_pool": {"hidden_dim": 8, "num_layers": 1},
}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A frame corpus, a teacher trained on it, and its top-2 store of the train split."""
    d = tmp_path_factory.mktemp("kd")
    fs = make_feature_store(d / "f.zarr", per_split={"train": 16, "dev": 4, "test": 2},
                            num_mel_bins=8)  # fmt: skip
    cfg = TrainConfig(epochs=4, batch_frames=400, lr=1e-2, patience=0)
    teach = SupervisedRun(str(d / "f.zarr"), "dnn", SMALL["dnn"], cfg)
    train_supervised(teach, d / "teacher", progress=False)
    model, _ = load_checkpoint(d / "teacher")
    model.eval()
    store = corpus_store(d / "t.zarr", fs, model=model)
    dev_store = corpus_store(d / "dev.zarr", fs, model=model, splits=("dev",))
    return {"corpus": str(d / "f.zarr"), "store": store, "dev_store": dev_store}


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("clip")
    fs = make_feature_store(d / "c.zarr", task="clip", per_split={"train": 8, "dev": 4},
                            num_mel_bins=8)  # fmt: skip
    return {"corpus": str(d / "c.zarr"), "store": corpus_store(d / "t.zarr", fs, level="utt")}


def kd_run(w, student="dnn", epochs=1, targets=None, model_config=None, kd=None, **train):
    cfg = TrainConfig(epochs=epochs, batch_frames=400, lr=1e-2, patience=0, **train)
    return KdRun(
        targets=tuple(targets or [(w["store"], 1.0)]),
        corpus=w["corpus"],
        student=student,
        model_config=SMALL[student] if model_config is None else model_config,
        train=cfg,
        kd=KdConfig(**(kd or {})),
    )


def test_student_learns_from_the_teacher(world, tmp_path):
    r = train_kd(kd_run(world, "dnn", epochs=5), tmp_path, progress=False)
    losses = [h["train_loss"] for h in r.history]
    assert losses[-1] < losses[0]
    assert r.best_dev_acc > 0.6  # 4 classes: chance is 0.25 (the teacher: ~0.88)
    _, card = load_checkpoint(tmp_path)
    assert card.training["objective"] == "kd"
    assert card.training["stores"][0]["rule"] == {"name": "topk", "params": {"k": 2}}


@pytest.mark.parametrize("student", ["tdnn", "blstm"])
def test_other_frame_students(world, tmp_path, student):
    r = train_kd(kd_run(world, student, kd={"alpha": 0.5, "temperature": 2.0}), tmp_path,
                 progress=False)  # fmt: skip
    assert r.epochs_run == 1 and (tmp_path / "model.safetensors").is_file()


@pytest.mark.parametrize("student", ["cnn", "dnn_pool", "lstm_pool"])
def test_clip_students(clips, tmp_path, student):
    r = train_kd(kd_run(clips, student, epochs=2, kd={"alpha": 0.7}), tmp_path, progress=False)
    assert len(r.history) == 2 and 0 <= r.best_dev_acc <= 1


def test_custom_student_with_other_subsampling(world, tmp_path, monkeypatch):
    """A user's ``module:Class`` subsampling by 2 from a teacher at the full frame rate."""
    import pathlib

    monkeypatch.syspath_prepend(str(pathlib.Path(__file__).parents[1] / "models"))
    run = kd_run(world, "custom_students:TinyStudent", epochs=2, model_config={"hidden": 8})
    r = train_kd(run, tmp_path, progress=False)
    assert r.history[-1]["train_loss"] < r.history[0]["train_loss"]


def test_schedules_change_the_objective(world, tmp_path):
    """Pretrain: soft only (KL near 0 for a teacher copy) then hard labels (CE)."""
    run = kd_run(world, "dnn", epochs=2, kd={"schedule": "pretrain", "soft_epochs": 1})
    rows = train_kd(run, tmp_path, progress=False).history
    assert rows[0]["train_loss"] < rows[1]["train_loss"]  # a KL vs a cross-entropy


def test_resume_mid_epoch_equals_uninterrupted(world, tmp_path):
    import kdpipe.learn.trainer as trainer

    run = kd_run(world, "lstm", epochs=2, save_every=2, spec_augment=True)
    run = KdRun(**{**run.__dict__, "train": TrainConfig(**{**run.train.to_dict(),
                                                           "batch_frames": 150})})  # fmt: skip
    train_kd(run, tmp_path / "a", progress=False)
    real = trainer.lr_at

    def crash(progress, *a, **k):  # dies half-way through the second epoch
        if progress >= 1.5:
            raise KeyboardInterrupt
        return real(progress, *a, **k)

    with pytest.MonkeyPatch.context() as mp, pytest.raises(KeyboardInterrupt):
        mp.setattr(trainer, "lr_at", crash)
        train_kd(run, tmp_path / "b", progress=False)
    state = torch.load(tmp_path / "b" / "last.pt", weights_only=True)["state"]
    assert state["step"] > 0  # interrupted mid-epoch, after a mid-epoch save
    train_kd(run, tmp_path / "b", resume=True, progress=False)
    assert_same_weights(tmp_path / "a", tmp_path / "b")

    def strip(path):
        rows = [json.loads(x) for x in path.read_text().splitlines()]
        return [{k: v for k, v in r.items() if k not in ("seconds", "frames_per_s")} for r in rows]

    assert strip(tmp_path / "a" / "metrics.jsonl") == strip(tmp_path / "b" / "metrics.jsonl")


def test_cli_learn_targets_with_yaml(world, tmp_path):
    cfg = tmp_path / "kd.yaml"
    cfg.write_text(
        "student: dnn\nmodel: {hidden_dim: 8, num_layers: 1}\n"
        "train: {epochs: 2, batch_frames: 400}\n"
        "kd: {temperature: 2.0, schedule: anneal, alpha: 1.0, alpha_end: 0.2, tail: uniform}\n"
        f"targets: [{world['store']}, {{path: {world['dev_store']}, weight: 0.5, split: dev}}]\n"
    )
    out = tmp_path / "s"
    args = ["learn", "--corpus", world["corpus"], "--out", str(out), "--config", str(cfg)]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "best dev accuracy" in r.output
    _, card = load_checkpoint(out)
    assert card.training["kd"]["schedule"] == "anneal" and card.training["kd"]["tail"] == "uniform"
    assert card.training["utterances"] == 16 + 4  # train, plus the dev set mixed in
    args = ["learn", "--targets", world["store"], "--corpus", world["corpus"], "--out", str(out)]
    r = CliRunner().invoke(app, [*args, "-k", "temp=2", "--student", "dnn", "--overwrite"])
    assert r.exit_code == 1 and "unknown key(s) 'temp'" in r.output


def test_out_onto_a_target_store_it_reads_is_refused_and_the_store_kept(world):
    store = Path(world["store"])
    before = sorted(p.name for p in (store / "parts").iterdir())
    with pytest.raises(ConfigError, match="the input"):
        train_kd(kd_run(world), store, overwrite=True, progress=False)
    assert sorted(p.name for p in (store / "parts").iterdir()) == before
