"""Fixtures of the learn tests: ``kdpipe learn`` under ``torchrun`` (2 CPU processes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kdpipe.models import ModelCard, load_checkpoint

# A tiny DNN for 3 epochs: every DDP test trains the same student.
TINY_DDP = ["--student", "dnn", "--epochs", "3", "-m", "hidden_dim=16", "-m", "num_layers=1",
            "-s", "batch_frames=300", "-s", "lr=0.01", "-s", "num_threads=1"]  # fmt: skip


@pytest.fixture
def torchrun_learn():
    """``run(out, *args)``: ``kdpipe learn --out OUT ARGS`` (plus a tiny 3-epoch DNN) under
    ``torchrun --nproc-per-node 2`` (gloo); checks that it exits 0, that rank 0 alone wrote
    one metrics row per epoch and that the train loss fell. Returns the checkpoint's card."""

    def run(out: Path, *args: str) -> ModelCard:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
               "--standalone", "-m", "kdpipe", "learn", *args, "--out", str(out),
               *TINY_DDP]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
        assert r.returncode == 0, r.stderr[-3000:]
        rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        assert [row["epoch"] for row in rows] == [1, 2, 3]  # one writer: rank 0
        assert rows[-1]["train_loss"] < rows[0]["train_loss"]
        return load_checkpoint(out)[1]

    return run
