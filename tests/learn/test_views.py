"""Input views (crop windows) in learn and eval: cropped data, training, scoring, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from kdpipe.cli.main import app
from kdpipe.corpus.views import ViewConfig, crop_windows, view_from_options
from kdpipe.errors import ConfigError
from kdpipe.labels import LabelSet
from kdpipe.learn.data import LabelledData
from kdpipe.learn.evaluate import evaluate_checkpoint, predict
from kdpipe.learn.supervised import SupervisedRun, train_supervised
from kdpipe.learn.train_config import TrainConfig
from kdpipe.models import build_model, make_card, save_checkpoint
from kdpipe.testing.corpora import make_feature_store

torch.set_num_threads(1)
DNN = {"hidden_dim": 8, "num_layers": 1, "left_context": 1, "right_context": 1}
RANDOM = ViewConfig(length_ms=150, random=True, seed=3)  # 15 frames; utterances have >= 20


@pytest.fixture(scope="module")
def frame_store(tmp_path_factory):
    loc = tmp_path_factory.mktemp("v") / "frame.zarr"
    return make_feature_store(loc, per_split={"train": 8, "dev": 3, "test": 4}, num_mel_bins=6)


@pytest.fixture(scope="module")
def clip_store():
    return make_feature_store(task="clip", per_split={"train": 6, "dev": 3}, num_mel_bins=6)


@pytest.mark.parametrize("view", [RANDOM, ViewConfig(length_ms=120, offset_ms=40)])
def test_cropped_frame_data_are_slices_of_the_whole(frame_store, view):
    whole = LabelledData.from_store(frame_store, "train")
    cropped = LabelledData.from_store(frame_store, "train", view)
    idx = frame_store.indices("train")
    win = crop_windows(view, whole.ids, frame_store.num_frames[idx], 10.0)  # teach's windows
    assert cropped.ids == whole.ids and len(set(map(tuple, win))) > (1 if view.random else 0)
    for k, (a, b) in enumerate(win):
        np.testing.assert_array_equal(cropped.feats[k], whole.feats[k][a:b])  # CMVN, then cut
        np.testing.assert_array_equal(cropped.labels[k], whole.labels[k][a:b])
    assert (cropped.lengths == round(view.length_ms / 10)).all()


def test_cropped_clip_data_keep_their_labels(clip_store):
    whole = LabelledData.from_store(clip_store, "train")
    cropped = LabelledData.from_store(clip_store, "train", RANDOM)
    win = crop_windows(RANDOM, whole.ids, clip_store.num_frames[clip_store.indices("train")], 10)
    np.testing.assert_array_equal(cropped.labels, whole.labels)
    for k, (a, b) in enumerate(win):
        np.testing.assert_array_equal(cropped.feats[k], whole.feats[k][a:b])


def test_a_window_longer_than_an_utterance_is_refused(frame_store):
    with pytest.raises(ConfigError, match=r"longer than utterance train-u\d"):
        LabelledData.from_store(frame_store, "train", ViewConfig(length_ms=5000))


def test_supervised_run_trains_and_validates_on_crops(frame_store, tmp_path, monkeypatch):
    import kdpipe.learn.session as session

    seen = {}
    real_fit = session.fit

    def spy(model, source, dev_data, *a, **k):
        seen["train"], seen["dev"] = source.lengths, dev_data.lengths
        return real_fit(model, source, dev_data, *a, **k)

    monkeypatch.setattr(session, "fit", spy)
    cfg = TrainConfig(epochs=1, batch_frames=200, patience=0)
    run = SupervisedRun(frame_store.location, "dnn", DNN, cfg, view=RANDOM)
    train_supervised(run, tmp_path / "m", progress=False)
    assert (seen["train"] == 15).all() and len(seen["train"]) == 8
    assert (seen["dev"] == 15).all() and len(seen["dev"]) == 3
    recorded = json.loads((tmp_path / "m" / "run.json").read_text())
    assert recorded["view"] == RANDOM.to_dict() and recorded["init"] is None


def random_checkpoint(path, store):
    torch.manual_seed(0)
    model = build_model("dnn", store.dim, len(store.labels), DNN)
    card = make_card(model, labels=LabelSet(store.labels.names), features=store.config)
    save_checkpoint(path, model, card)
    return model.eval()


def test_evaluate_scores_the_crops(frame_store, tmp_path):
    model = random_checkpoint(tmp_path / "ck", frame_store)
    view = ViewConfig(length_ms=100, offset_ms=50)  # frames [5, 15)
    plain = evaluate_checkpoint(tmp_path / "ck", frame_store.location, "test", device="cpu")
    rep = evaluate_checkpoint(tmp_path / "ck", frame_store.location, "test", device="cpu",
                              view=view, out=tmp_path / "ev")  # fmt: skip
    assert rep.cross_entropy != pytest.approx(plain.cross_entropy)
    whole = LabelledData.from_store(frame_store, "test")
    by_hand = LabelledData(whole.ids, [f[5:15] for f in whole.feats],
                           [y[5:15] for y in whole.labels], "frame", whole.num_classes)  # fmt: skip
    ref = predict(model, by_hand)
    assert rep.cross_entropy == pytest.approx(ref.loss, rel=1e-6)
    assert rep.accuracy == pytest.approx(ref.accuracy) and rep.confusion.sum() == 4 * 10
    saved = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert saved["view"] == view.to_dict() and "view" not in plain.to_dict()


def test_view_options_merge_over_the_config():
    assert view_from_options(None) is None
    v = view_from_options({"length_ms": 200, "random": True}, offset_ms=10.0, seed=4)
    assert v == ViewConfig(length_ms=200, offset_ms=10.0, random=True, seed=4)
    assert view_from_options({"length_ms": 200, "random": True}, random=False).random is False
    with pytest.raises(ConfigError, match="without a length"):
        view_from_options(None, offset_ms=10.0)
    with pytest.raises(ConfigError, match="unknown key"):
        view_from_options({"length": 100})


def test_cli_view_options_reach_the_run(frame_store, tmp_path):
    runner = CliRunner()
    cfg = tmp_path / "learn.yaml"
    cfg.write_text(yaml.safe_dump({"student": "dnn", "model": DNN, "view": {"length_ms": 150}}))
    out = tmp_path / "m"
    flags = ["--epochs", "1", "-s", "batch_frames=200", "--view-random", "--view-seed", "3"]
    where = ["--corpus", frame_store.location, "--out", str(out), "--config", str(cfg)]
    args = ["learn", *where, *flags]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert json.loads((out / "run.json").read_text())["view"] == RANDOM.to_dict()
    ev = ["eval", "--model", str(out), "--corpus", frame_store.location, "--json"]
    r = runner.invoke(app, [*ev, "--view-ms", "100", "--view-offset-ms", "50"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["view"] == {"length_ms": 100.0, "offset_ms": 50.0,
                                            "random": False, "seed": 0}  # fmt: skip
    r = runner.invoke(app, [*ev, "--view-offset-ms", "50"])
    assert r.exit_code == 1 and "without a length" in r.output
    r = runner.invoke(app, [*ev, "--view-ms", "9000"])
    assert r.exit_code == 1 and "longer than utterance" in r.output
