"""DDP for real: ``torchrun`` with 2 CPU processes runs ``kdpipe learn --targets`` unchanged,
on stores in one part (what ``teach`` writes for a small corpus), and resumes mid-epoch."""

from __future__ import annotations

import json

import pytest
import torch

from kdpipe.store import StoreReader
from kdpipe.testing.corpora import make_feature_store
from kdpipe.testing.stores import corpus_store
from kdpipe.testing.teachers import assert_same_weights

ONE_PART = 1 << 20  # frames per part: the whole store in one part, hence in one block


@pytest.mark.slow
def test_torchrun_two_processes_from_a_frame_store_in_one_part(tmp_path, torchrun_learn):
    fs = make_feature_store(tmp_path / "f.zarr", per_split={"train": 32, "dev": 6},
                            num_mel_bins=8)  # fmt: skip
    store = corpus_store(tmp_path / "t.zarr", fs, part_frames=ONE_PART)
    assert len(StoreReader(store).parts) == 1
    card = torchrun_learn(tmp_path / "ddp", "--targets", store, "--corpus", fs.location,
                          "-k", "alpha=0.5")  # fmt: skip
    assert card is not None and card.training["objective"] == "kd"
    assert card.metrics["dev_acc"] > 0.4


@pytest.mark.slow
def test_torchrun_clip_store_in_one_part_resumes_mid_epoch_exactly(tmp_path, torchrun_learn):
    """Uninterrupted, and stopped dead half-way through epoch 2 then ``--resume``d: the
    same weights, bit for bit, and the same metrics."""
    fs = make_feature_store(tmp_path / "c.zarr", task="clip", per_split={"train": 32, "dev": 6},
                            num_mel_bins=8)  # fmt: skip
    store = corpus_store(tmp_path / "t.zarr", fs, level="utt", part_frames=ONE_PART)
    assert len(StoreReader(store).parts) == 1
    args = ("--targets", store, "--corpus", fs.location, "-s", "save_every=1")
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    card = torchrun_learn(whole, *args, student="dnn_pool")
    assert card is not None and card.training["utterances"] == 32
    torchrun_learn(cut, *args, student="dnn_pool", stop_at=1.5)
    state = torch.load(cut / "last.pt", weights_only=True)["state"]
    assert state["epoch"] == 1 and state["step"] > 0  # stopped mid-epoch, after a save
    log = cut / "metrics.jsonl"
    first = json.loads(log.read_text())
    log.write_text(json.dumps({**first, "seconds": -1.0}) + "\n")  # a retrain would drop it
    torchrun_learn(cut, *args, "--resume", student="dnn_pool")
    assert json.loads(log.read_text().splitlines()[0])["seconds"] == -1.0  # resumed
    assert_same_weights(whole, cut)  # the best epoch's checkpoint
    last = [torch.load(out / "last.pt", weights_only=True)["model"] for out in (whole, cut)]
    assert all(torch.equal(last[0][k], last[1][k]) for k in last[0])  # and the final weights

    def rows(out):
        lines = (out / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(x).items() if k not in ("seconds", "frames_per_s")}
                for x in lines]  # fmt: skip

    assert rows(whole) == rows(cut)
