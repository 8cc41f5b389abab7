"""Starting a run from a checkpoint (``init``): fine-tuning, refusals, KD, the CLI, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from kdpipe.cli.main import app
from kdpipe.corpus.views import ViewConfig
from kdpipe.errors import ConfigError, ModelError
from kdpipe.learn.kd import KdRun, train_kd
from kdpipe.learn.supervised import SupervisedRun, train_supervised
from kdpipe.learn.train_config import TrainConfig
from kdpipe.models import read_card
from kdpipe.testing.corpora import make_feature_store
from kdpipe.testing.stores import corpus_store
from kdpipe.testing.teachers import checkpoint_weights

torch.set_num_threads(1)
DNN = {"hidden_dim": 16, "num_layers": 1, "left_context": 1, "right_context": 1}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A frame corpus and a dnn trained on it for one epoch."""
    d = tmp_path_factory.mktemp("init")
    fs = make_feature_store(d / "f.zarr", per_split={"train": 8, "dev": 3}, num_mel_bins=6)
    first = d / "first"
    train_supervised(run(fs.location, epochs=1, lr=5e-3), first, progress=False)
    return {"corpus": fs.location, "first": first, "fs": fs, "dir": d}


def run(corpus, student="dnn", config=None, epochs=1, lr=1e-9, **kw):
    cfg = TrainConfig(epochs=epochs, batch_frames=200, lr=lr, patience=0)
    return SupervisedRun(corpus, student, config or DNN, cfg, **kw)


def max_diff(a: dict, b: dict) -> float:
    """Largest change of a trained parameter (batch-norm statistics move at any lr)."""
    keys = [k for k in a if not k.endswith(("running_mean", "running_var", "batches_tracked"))]
    return max(float((a[k] - b[k]).abs().max()) for k in keys)


def test_fine_tuning_starts_from_the_checkpoint(world, tmp_path):
    first = checkpoint_weights(world["first"])
    train_supervised(run(world["corpus"], init=str(world["first"])), tmp_path / "b",
                     progress=False)  # fmt: skip
    tuned = checkpoint_weights(tmp_path / "b")
    assert max_diff(tuned, first) < 1e-6  # lr 1e-9: still the first's
    steps = "mlp.2.num_batches_tracked"  # batch-norm statistics carry on from the first's
    assert int(tuned[steps]) == 2 * int(first[steps]) > 0
    train_supervised(run(world["corpus"]), tmp_path / "c", progress=False)
    assert max_diff(checkpoint_weights(tmp_path / "c"), first) > 1e-3  # the seeded init instead
    card = read_card(tmp_path / "b")
    assert card.training["init"] == str(world["first"])


def test_resume_of_a_fine_tuning_run_is_exact(world, tmp_path, monkeypatch):
    import kdpipe.learn.trainer as trainer

    tune = run(world["corpus"], epochs=2, lr=1e-3, init=str(world["first"]))
    train_supervised(tune, tmp_path / "a", progress=False)
    real, calls = trainer.predict, {"n": 0}

    def stop_after_one(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(trainer, "predict", stop_after_one)
    with pytest.raises(KeyboardInterrupt):
        train_supervised(tune, tmp_path / "b", progress=False)
    monkeypatch.setattr(trainer, "predict", real)
    train_supervised(tune, tmp_path / "b", resume=True, progress=False)  # last.pt wins
    a, b = checkpoint_weights(tmp_path / "a"), checkpoint_weights(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    ("student", "config", "labels", "message"),
    [
        ("lstm", {"hidden_dim": 16, "num_layers": 1}, None,
         "is a 'dnn' model but the student is 'lstm'"),
        ("dnn", {**DNN, "hidden_dim": 8}, None,
         "model config differs from the student's: hidden_dim 16 vs 8"),
        ("dnn", DNN, ("sil", "x", "y", "z"), "label 1 is 'a' vs 'x'"),
        ("dnn", DNN, ("sil", "a", "b"), "4 vs 3 labels"),
        ("dnn", DNN, "cmvn none", "differing settings: cmvn 'utterance' vs 'none'"),
    ],
)  # fmt: skip
def test_mismatches_are_refused_before_training(world, tmp_path, student, config, labels,
                                                message):  # fmt: skip
    corpus = world["corpus"]
    if labels == "cmvn none":  # same labels and number of features, other features
        corpus = make_feature_store(tmp_path / "o.zarr", num_mel_bins=6, cmvn="none").location
    elif labels is not None:
        corpus = make_feature_store(tmp_path / "o.zarr", labels=labels, num_mel_bins=6).location
    r = run(corpus, student, config, init=str(world["first"]))
    with pytest.raises(ModelError, match=message) as e:
        train_supervised(r, tmp_path / "out", progress=False)
    assert str(world["first"]) in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "out").exists()  # nothing claimed, nothing trained


def test_init_cannot_be_the_output(world, tmp_path):
    train_supervised(run(world["corpus"], lr=1e-3), tmp_path / "a", progress=False)
    with pytest.raises(ConfigError, match="is the input"):
        train_supervised(run(world["corpus"], init=str(tmp_path / "a")), tmp_path / "a",
                         overwrite=True, progress=False)  # fmt: skip
    assert (tmp_path / "a" / "model.safetensors").is_file()
    corpus = world["corpus"]  # --out onto (or into) what the run reads: refused, kept
    for out in (Path(corpus), Path(corpus) / "inner"):
        with pytest.raises(ConfigError, match="the input"):
            train_supervised(run(corpus), out, overwrite=True, progress=False)
    assert (Path(corpus) / "zarr.json").is_file() and not (Path(corpus) / "inner").exists()


def test_custom_student_init_needs_no_extra_trust(world, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "models"))
    name = "custom_students:TinyStudent"
    train_supervised(run(world["corpus"], name, {"hidden": 8}, lr=5e-3), tmp_path / "a",
                     progress=False)  # fmt: skip
    train_supervised(run(world["corpus"], name, {"hidden": 8}, init=str(tmp_path / "a")),
                     tmp_path / "b", progress=False)  # fmt: skip
    assert max_diff(checkpoint_weights(tmp_path / "b"), checkpoint_weights(tmp_path / "a")) < 1e-6


def test_kd_run_with_init_and_view(world, tmp_path, monkeypatch):
    import kdpipe.learn.session as session

    store = corpus_store(tmp_path / "t.zarr", world["fs"])
    seen = {}
    real_fit = session.fit

    def spy(model, source, dev_data, *a, **k):
        seen["dev"] = dev_data.lengths
        seen["start"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return real_fit(model, source, dev_data, *a, **k)

    monkeypatch.setattr(session, "fit", spy)
    view = ViewConfig(length_ms=120, random=True)
    kd = KdRun(targets=((store, 1.0),), corpus=world["corpus"], student="dnn", model_config=DNN,
               train=TrainConfig(epochs=1, batch_frames=200, lr=1e-3, patience=0),
               view=view, init=str(world["first"]))  # fmt: skip
    train_kd(kd, tmp_path / "s", progress=False)
    assert (seen["dev"] == 12).all() and len(seen["dev"]) == 3
    assert max_diff(seen["start"], checkpoint_weights(world["first"])) == 0
    card = read_card(tmp_path / "s")
    assert card.training["view"] == view.to_dict()
    assert card.training["init"] == str(world["first"])


def test_cli_init(world, tmp_path):
    out = tmp_path / "m"
    args = ["learn", "--corpus", world["corpus"], "--student", "dnn", "--out", str(out),
            "--epochs", "1", "-s", "lr=1e-9", "-s", "batch_frames=200",
            *[x for k, v in DNN.items() for x in ("-m", f"{k}={v}")]]  # fmt: skip
    r = CliRunner().invoke(app, [*args, "--init", str(world["first"])])
    assert r.exit_code == 0, r.output
    assert json.loads((out / "run.json").read_text())["init"] == str(world["first"])
    assert max_diff(checkpoint_weights(out), checkpoint_weights(world["first"])) < 1e-6
    cfg = tmp_path / "learn.yaml"
    cfg.write_text(f"init: {world['first']}\n")
    r = CliRunner().invoke(app, [*args, "--config", str(cfg), "--overwrite", "-m", "hidden_dim=4"])
    assert r.exit_code == 1 and "hidden_dim 16 vs 4" in r.output
