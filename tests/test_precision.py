"""bf16 autocast: the same code the GPU runs, on the CPU device. Training at bf16 learns,
keeps float32 weights and differs from fp32 (autocast really ran); teach at bf16 records
its precision and stores nearly the fp32 targets."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from kdpipe.errors import ConfigError
from kdpipe.essence import Rule
from kdpipe.learn.supervised import SupervisedRun, train_supervised
from kdpipe.learn.train_config import TrainConfig
from kdpipe.models import load_checkpoint
from kdpipe.precision import autocast
from kdpipe.store.reader import StoreReader
from kdpipe.teach import single_teacher, teach
from kdpipe.teach.ensemble_yaml import ensemble_from_dict
from kdpipe.testing.corpora import make_feature_store
from kdpipe.testing.teachers import make_teacher, teacher_corpus

torch.set_num_threads(1)


def test_autocast_runs_matrix_products_in_bf16_only_when_asked():
    layer, x = torch.nn.Linear(4, 3), torch.randn(2, 4)
    with autocast(torch.device("cpu"), "bf16"):
        assert layer(x).dtype == torch.bfloat16
    with autocast(torch.device("cpu"), "fp32"):
        assert layer(x).dtype == torch.float32


def test_a_precision_outside_the_list_is_one_line():
    with pytest.raises(ConfigError, match="train: precision must be one of"):
        TrainConfig(precision="fp8")
    with pytest.raises(ConfigError, match="ensemble: precision must be one of"):
        ensemble_from_dict({"members": ["x"], "precision": "half"}, "ensemble")


@pytest.mark.parametrize("student", ["dnn", "lstm"])
def test_bf16_training_learns_with_float32_weights(tmp_path, student):
    corpus = make_feature_store(tmp_path / "fs.zarr", per_split={"train": 16, "dev": 4},
                                num_mel_bins=8)  # fmt: skip
    model = {"dnn": {"hidden_dim": 32, "num_layers": 2}, "lstm": {"hidden_dim": 16}}[student]
    results = {}
    for precision in ("fp32", "bf16"):
        cfg = TrainConfig(epochs=4, batch_frames=400, lr=5e-3, patience=0, precision=precision)
        out = tmp_path / precision
        results[precision] = train_supervised(
            SupervisedRun(str(corpus.location), student, model, cfg), out, progress=False
        )
    bf16 = [h["train_loss"] for h in results["bf16"].history]
    fp32 = [h["train_loss"] for h in results["fp32"].history]
    assert all(np.isfinite(bf16)) and bf16[-1] < bf16[0]
    assert bf16 != fp32  # the products really ran in bf16
    assert bf16[0] == pytest.approx(fp32[0], rel=0.05)
    net, card = load_checkpoint(tmp_path / "bf16")
    assert all(p.dtype == torch.float32 for p in net.parameters())
    assert card.training["train"]["precision"] == "bf16"


def test_bf16_teach_records_its_precision_and_nearly_the_fp32_targets(tmp_path):
    fs = teacher_corpus(tmp_path / "fs.zarr")
    ckpt = make_teacher(tmp_path / "t", fs, "lstm")
    stores = {}
    for precision in ("fp32", "bf16"):
        ens = replace(single_teacher(ckpt, Rule("topk", {"k": 3})), precision=precision)
        teach(ens, fs.location, tmp_path / f"{precision}.zarr", progress=False)
        stores[precision] = StoreReader(tmp_path / f"{precision}.zarr")
    assert stores["bf16"].meta.extra["teach"]["precision"] == "bf16"
    assert "precision" not in stores["fp32"].meta.extra["teach"]  # as older stores: fp32
    uid = fs.ids[0]
    a, b = stores["fp32"].get(uid).frame, stores["bf16"].get(uid).frame
    assert (a.indices[:, 0] == b.indices[:, 0]).mean() >= 0.9
    assert not np.array_equal(a.values, b.values)  # the forward really ran in bf16
    np.testing.assert_allclose(a.logprobs()[:, 0], b.logprobs()[:, 0], atol=0.25)
