"""DDP for real: ``torchrun`` with 2 CPU processes runs ``kdpipe learn --targets`` unchanged."""

from __future__ import annotations

import pytest

from kdpipe.testing.corpora import make_feature_store
from kdpipe.testing.stores import corpus_store


@pytest.mark.slow
def test_torchrun_two_processes_from_a_store(tmp_path, torchrun_learn):
    fs = make_feature_store(tmp_path / "f.zarr", per_split={"train": 32, "dev": 6},
                            num_mel_bins=8)  # fmt: skip
    store = corpus_store(tmp_path / "t.zarr", fs, part_frames=300)
    card = torchrun_learn(tmp_path / "ddp", "--targets", store, "--corpus", fs.location,
                          "-k", "alpha=0.5", "-k", "block_frames=200")  # fmt: skip
    assert card.training["objective"] == "kd" and card.metrics["dev_acc"] > 0.4
