"""DDP for real: ``torchrun`` with 2 CPU processes (gloo) runs the same ``kdpipe learn``."""

from __future__ import annotations

from kdpipe.testing.corpora import make_feature_store


def test_torchrun_two_processes(tmp_path, torchrun_learn):
    loc = tmp_path / "f.zarr"
    make_feature_store(loc, per_split={"train": 32, "dev": 6, "test": 4}, num_mel_bins=8)
    card = torchrun_learn(tmp_path / "ddp", "--corpus", str(loc))
    assert card.metrics["dev_acc"] > 0.4
