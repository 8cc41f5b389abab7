"""``learn --teacher-online``: the teacher run at every step gives the targets a store of
the same teacher holds, trains a student, and refuses what it cannot pair."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from kdpipe.cli.main import app
from kdpipe.errors import ConfigError, FingerprintMismatch, LabelSetError, ModelError
from kdpipe.learn.data import LabelledData
from kdpipe.learn.online import OnlineTeacher
from kdpipe.learn.runs import build_run, train_run
from kdpipe.learn.stream import TargetStream
from kdpipe.models import load_checkpoint, read_card
from kdpipe.testing.corpora import make_feature_store, make_word_store

torch.set_num_threads(1)
TRAIN = {"epochs": 3, "lr": 0.01, "batch_frames": 800, "patience": 0}
DNN = {"hidden_dim": 32, "num_layers": 1, "left_context": 1, "right_context": 1}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A word store (6 phone classes) and a DNN teacher at subsampling 2."""
    d = tmp_path_factory.mktemp("online")
    store = make_word_store(d / "feats.zarr", words={"ab": ("a", "b"), "cd": ("c", "d"),
                                                      "e": ("e",)})  # fmt: skip
    run = build_run({}, corpus=store.location, student="dnn", model={**DNN, "subsampling": 2},
                    train=TRAIN)  # fmt: skip
    train_run(run, d / "teacher", progress=False)
    return store, d / "teacher"


def online(store, teacher, out, topk=3, **kw):
    model = teacher if isinstance(teacher, list) else str(teacher)
    run = build_run({}, corpus=store.location, student="dnn", model=DNN, train=TRAIN,
                    kd={"alpha": 0.5}, teacher_online={"model": model, "topk": topk},
                    **kw)  # fmt: skip
    return train_run(run, out, progress=False)


def test_online_targets_are_the_stores_of_the_same_teacher(setup, tmp_path):
    """Top-3 of the teacher run in the loop equals `teach --topk 3 --values float16` read
    through TargetStream, class for class, at the student's rate (teacher at s=2, student
    at s=1: each teacher row serves two student frames)."""
    store, teacher = setup
    r = CliRunner().invoke(app, ["teach", "--model", str(teacher), "--corpus", store.location,
                                 "--out", str(tmp_path / "t.zarr"), "--topk", "3", "--values",
                                 "float16", "--no-progress"])  # fmt: skip
    assert r.exit_code == 0, r.output
    stream = TargetStream([str(tmp_path / "t.zarr")], store.location, "train",
                          batch_frames=10**6, subsampling=1)  # fmt: skip
    stream.set_epoch(0)
    (stored,) = list(stream)
    model, card = load_checkpoint(teacher)
    assert card.subsampling == 2
    data = LabelledData.from_store(store, "train")
    where = {utt: i for i, utt in enumerate(data.ids)}
    batch = data.batch(np.array([where[utt] for utt in stream.describe(stored.index)]))
    torch.testing.assert_close(batch.x, stored.x)
    live = OnlineTeacher([model], [2], 3).targets(batch, batch.x.shape[1], 1)
    mask = stored.targets.valid
    assert torch.equal(live.valid & mask, mask) and int(mask.sum()) > 100
    assert torch.equal(live.idx[mask], stored.targets.idx[mask])
    torch.testing.assert_close(live.logp[mask], stored.targets.logp[mask], atol=2e-3, rtol=1e-3)
    torch.testing.assert_close(live.tail[mask], stored.targets.tail[mask], atol=2e-2, rtol=1e-2)


def test_online_distillation_trains_and_records_its_teacher(setup, tmp_path):
    store, teacher = setup
    result = online(store, teacher, tmp_path / "s")
    rows = [
        json.loads(line) for line in (tmp_path / "s" / "metrics.jsonl").read_text().splitlines()
    ]
    assert rows[-1]["train_loss"] < rows[0]["train_loss"] and result.best_dev_acc > 0.3
    card = read_card(tmp_path / "s")
    assert card.training["objective"] == "kd-online"
    assert card.training["teachers"] == [read_card(teacher).weights_sha256]
    assert card.training["teacher_online"] == {"model": str(teacher), "topk": 3}
    # the whole posterior (topk null) trains too
    online(store, teacher, tmp_path / "full", topk=None)
    assert read_card(tmp_path / "full").training["teacher_online"]["topk"] is None


def test_an_ensemble_in_the_loop_averages_its_teachers_probabilities(setup, tmp_path):
    """Two teachers at different rates (s=2 and s=1): the targets are the mean of their
    probabilities at the student's frames (teach's mean-prob), and a student trains on it."""
    store, teacher = setup
    other = tmp_path / "t1"
    train_run(build_run({}, corpus=store.location, student="dnn", model=DNN,
                        train={**TRAIN, "epochs": 1}), other, progress=False)  # fmt: skip
    (a, _), (b, _) = load_checkpoint(teacher), load_checkpoint(other)
    batch = LabelledData.from_store(store, "dev").batch(np.arange(3))
    t = batch.x.shape[1]
    got = OnlineTeacher([a, b], [2, 1], None).targets(batch, t, 1)
    with torch.no_grad():
        pa = torch.softmax(a(batch.x, batch.lengths)[0], -1)[:, torch.arange(t) // 2]
        pb = torch.softmax(b(batch.x, batch.lengths)[0], -1)
    mask = got.valid
    torch.testing.assert_close(got.logp[mask].exp(), ((pa + pb) / 2)[mask])
    result = online(store, [str(teacher), str(other)], tmp_path / "s", topk=2)
    assert result.best_dev_acc > 0
    assert read_card(tmp_path / "s").training["teacher_online"]["model"] == [str(teacher),
                                                                            str(other)]  # fmt: skip


def test_what_online_distillation_refuses(setup, tmp_path):
    store, teacher = setup
    with pytest.raises(FingerprintMismatch, match="subsamples by 3, the teacher by 2"):
        run = build_run({}, corpus=store.location, student="dnn",
                        model={**DNN, "subsampling": 3}, train=TRAIN,
                        teacher_online={"model": str(teacher)})  # fmt: skip
        train_run(run, tmp_path / "a", progress=False)
    other = make_feature_store(tmp_path / "o.zarr", labels=("sil", "x", "y"), num_mel_bins=8)
    with pytest.raises(ModelError, match="label set"):
        online(other, teacher, tmp_path / "b")
    with pytest.raises(ConfigError, match="without a store"):
        build_run({}, corpus=store.location, student="dnn", targets=[("x.zarr", 1.0)],
                  teacher_online={"model": str(teacher)})  # fmt: skip
    with pytest.raises(ConfigError, match="topk must be an integer >= 1"):
        online(store, teacher, tmp_path / "c", topk=0)
    assert not any((tmp_path / name).exists() for name in ("a", "b", "c"))
    r = CliRunner().invoke(app, ["learn", "--corpus", store.location, "--student", "dnn",
                                 "--online-topk", "4", "--out", str(tmp_path / "d")])  # fmt: skip
    assert r.exit_code == 1 and "setting of --teacher-online" in r.output


def test_a_ctc_teacher_is_not_run_in_the_loop(tmp_path):
    store = make_word_store(tmp_path / "feats.zarr", per_split={"train": 4, "dev": 2})
    run = build_run({}, corpus=store.location, student="dnn", model=DNN,
                    train={**TRAIN, "epochs": 1}, loss="ctc", ctc={"units": "phones"})  # fmt: skip
    train_run(run, tmp_path / "ctc", progress=False)
    with pytest.raises((ModelError, LabelSetError), match="CTC model"):
        online(store, tmp_path / "ctc", tmp_path / "s")


def test_cli_teacher_online(setup, tmp_path):
    store, teacher = setup
    r = CliRunner().invoke(app, ["learn", "--corpus", store.location, "--student", "dnn",
                                 "-m", "hidden_dim=16", "-m", "num_layers=1", "--epochs", "1",
                                 "--teacher-online", str(teacher), "--online-topk", "0",
                                 "--alpha", "0.7", "--out", str(tmp_path / "s")])  # fmt: skip
    assert r.exit_code == 0, r.output
    card = read_card(tmp_path / "s")
    assert card.training["teacher_online"]["topk"] is None
    assert card.training["kd"]["alpha"] == 0.7
