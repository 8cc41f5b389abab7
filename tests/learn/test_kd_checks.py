"""Bad input for ``learn --targets``: every store/corpus/student mismatch is one clear error."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from kdpipe.cli.main import app
from kdpipe.errors import (
    ConfigError,
    FingerprintMismatch,
    LabelSetError,
    ModelError,
    StoreError,
    StoreIntegrityError,
)
from kdpipe.essence import Rule
from kdpipe.learn.kd import KdRun, train_kd
from kdpipe.learn.kd_config import KdConfig
from kdpipe.learn.train_config import TrainConfig
from kdpipe.models import load_checkpoint
from kdpipe.testing.corpora import make_feature_store
from kdpipe.testing.stores import corpus_store

torch.set_num_threads(1)
DNN = {"hidden_dim": 8, "num_layers": 1, "left_context": 0, "right_context": 0}


@pytest.fixture(scope="module")
def fs(tmp_path_factory):
    d = tmp_path_factory.mktemp("chk")
    return make_feature_store(d / "f.zarr", per_split={"train": 6, "dev": 2}, num_mel_bins=4)


def go(fs, store, tmp_path, student="dnn", model=None, **kd):
    run = KdRun(
        targets=((store, 1.0),),
        corpus=fs.location,
        student=student,
        model_config=DNN if model is None else model,
        train=TrainConfig(epochs=1, batch_frames=400),
        kd=KdConfig(**kd),
    )
    return train_kd(run, tmp_path / "out", progress=False)


def test_label_set_mismatch(fs, tmp_path):
    store = corpus_store(tmp_path / "t.zarr", fs, labels=("sil", "x", "b", "c"))
    with pytest.raises(LabelSetError, match="label 1 is 'x' vs 'a'"):
        go(fs, store, tmp_path)


def test_feature_fingerprint_mismatch(fs, tmp_path):
    other = make_feature_store(tmp_path / "g.zarr", per_split={"train": 6, "dev": 2},
                               num_mel_bins=4, cmvn="none")  # fmt: skip
    store = corpus_store(tmp_path / "t.zarr", other)
    with pytest.raises(FingerprintMismatch, match="differing settings: cmvn 'none' vs 'utterance'"):
        go(fs, store, tmp_path)


def test_frame_shift_mismatch(fs, tmp_path):
    store = corpus_store(tmp_path / "t.zarr", fs, frame_shift_ms=30.0)
    with pytest.raises(FingerprintMismatch, match="teacher frame shift 30 ms"):
        go(fs, store, tmp_path)


def test_subsampling_that_does_not_nest(fs, tmp_path):
    store = corpus_store(tmp_path / "t.zarr", fs, subsampling=3)
    tdnn = {"hidden_dim": 4, "kernel_sizes": [3], "dilations": [1], "subsampling": 2}
    with pytest.raises(FingerprintMismatch, match="student subsamples by 2, the teacher by 3"):
        go(fs, store, tmp_path, "tdnn", tdnn)
    go(fs, store, tmp_path, "tdnn", {**tdnn, "subsampling": 3})  # equal rates train


def test_store_failing_verification(fs, tmp_path):
    store = corpus_store(tmp_path / "t.zarr", fs)
    chunk = next((tmp_path / "t.zarr" / "parts").glob("*/frame/values/c/0/0"))
    data = bytearray(chunk.read_bytes())
    data[-6] ^= 0xFF
    chunk.write_bytes(bytes(data))
    with pytest.raises(StoreIntegrityError, match=r"fails verification: .*frame/values"):
        go(fs, store, tmp_path)


def test_empty_intersection(fs, tmp_path):
    store = corpus_store(tmp_path / "t.zarr", fs, splits=("dev",))
    with pytest.raises(StoreError, match="no targets for any of the 6 utterances of split 'train'"):
        go(fs, store, tmp_path)


def test_partial_store_needs_allow_partial(fs, tmp_path):
    store = corpus_store(tmp_path / "t.zarr", fs, skip=("train-u0", "train-u3"))
    with pytest.raises(StoreError, match=r"covers 4 of the 6 .* \(2 missing, e.g. train-u0\)"):
        go(fs, store, tmp_path)
    go(fs, store, tmp_path, allow_partial=True)
    _, card = load_checkpoint(tmp_path / "out")
    assert card.training["utterances"] == 4


def test_frame_counts_disagree(fs, tmp_path):
    store = corpus_store(tmp_path / "t.zarr", fs, windows={"train-u2": (3, 12)},
                         record_windows=False)  # fmt: skip
    with pytest.raises(StoreError, match=r"train-u2 has 9 teacher frames but \d+ input frames"):
        go(fs, store, tmp_path)


def test_sampled_targets_need_temperature_one(fs, tmp_path):
    store = corpus_store(tmp_path / "t.zarr", fs, rule=Rule("sample", {"n": 8}))
    with pytest.raises(ConfigError, match=r"sampled targets .* temperature 1"):
        go(fs, store, tmp_path, temperature=2.0)
    go(fs, store, tmp_path)


def test_level_mismatch(tmp_path):
    clip = make_feature_store(tmp_path / "c.zarr", task="clip", per_split={"train": 4, "dev": 2},
                              num_mel_bins=4)  # fmt: skip
    store = corpus_store(tmp_path / "t.zarr", clip, hard=False)
    with pytest.raises(ModelError, match="holds frame-level targets; the student is utterance"):
        go(clip, store, tmp_path, "dnn_pool", {"hidden_dim": 4})


def test_cli_reports_one_line(fs, tmp_path):
    store = corpus_store(tmp_path / "t.zarr", fs, splits=("dev",))
    r = CliRunner().invoke(app, ["learn", "--targets", store, "--corpus", fs.location,
                                 "--student", "dnn", "--out", str(tmp_path / "o")])  # fmt: skip
    assert r.exit_code == 1 and "no targets for any" in r.output
    assert "Traceback" not in r.output
    r = CliRunner().invoke(app, ["learn", "--corpus", fs.location, "--student", "dnn",
                                 "--out", str(tmp_path / "p"), "--alpha", "0.5"])  # fmt: skip
    assert r.exit_code == 1 and "without --targets" in r.output
