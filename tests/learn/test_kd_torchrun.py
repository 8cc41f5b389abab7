"""DDP for real: ``torchrun`` with 2 CPU processes runs ``kdpipe learn --targets`` unchanged."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from test_kd_support import write_store

from kdpipe.models import load_checkpoint
from kdpipe.testing.corpora import make_feature_store


@pytest.mark.slow
def test_torchrun_two_processes_from_a_store(tmp_path):
    fs = make_feature_store(tmp_path / "f.zarr", per_split={"train": 32, "dev": 6},
                            num_mel_bins=8)  # fmt: skip
    store = write_store(tmp_path / "t.zarr", fs, part_frames=300)
    out = tmp_path / "ddp"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
        "--standalone", "-m", "kdpipe", "learn", "--targets", store,
        "--corpus", fs.location, "--student", "dnn", "--out", str(out), "--epochs", "3",
        "-m", "hidden_dim=16", "-m", "num_layers=1", "-k", "alpha=0.5", "-k", "block_frames=200",
        "-s", "batch_frames=300", "-s", "lr=0.01", "-s", "num_threads=1",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2, 3]  # one writer: rank 0
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    _, card = load_checkpoint(out)
    assert card.training["objective"] == "kd" and card.metrics["dev_acc"] > 0.4
