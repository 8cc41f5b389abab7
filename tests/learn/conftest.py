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
TINY_DDP = ["--epochs", "3", "-m", "hidden_dim=16", "-m", "num_layers=1",
            "-s", "batch_frames=300", "-s", "lr=0.01", "-s", "num_threads=1"]  # fmt: skip

# ``kdpipe`` with every rank stopping dead (no cleanup, like a kill) at the first step whose
# epoch progress reaches argv[1]; the barrier first lets rank 0 finish its mid-epoch save.
STOPPING = """\
import os, sys
import torch.distributed as torch_dist
import kdpipe.learn.trainer as trainer
from kdpipe.cli.main import main
stop_at, real = float(sys.argv.pop(1)), trainer.lr_at
def lr_at(progress, *args, **kwargs):
    if progress >= stop_at:
        torch_dist.barrier()
        os._exit(3)
    return real(progress, *args, **kwargs)
trainer.lr_at = lr_at
main()
"""


@pytest.fixture
def torchrun_learn():
    """``run(out, *args, student="dnn")``: ``kdpipe learn --out OUT ARGS`` (plus a tiny
    3-epoch model) under ``torchrun --nproc-per-node 2`` (gloo); checks that it exits 0,
    that rank 0 alone wrote one metrics row per epoch and that the train loss fell. Returns
    the checkpoint's card. ``stop_at=P``: every rank stops dead at epoch progress P (e.g.
    1.5: half-way through the second epoch); checks that it failed and returns None."""

    def run(
        out: Path, *args: str, student: str = "dnn", stop_at: float | None = None
    ) -> ModelCard | None:
        entry = ["-m", "kdpipe"]
        if stop_at is not None:
            script = out.parent / "stopping_kdpipe.py"
            script.write_text(STOPPING)
            entry = [str(script), str(stop_at)]
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
               "--standalone", *entry, "learn", *args, "--out", str(out),
               "--student", student, *TINY_DDP]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
        if stop_at is not None:
            assert r.returncode != 0, r.stderr[-3000:]
            return None
        assert r.returncode == 0, r.stderr[-3000:]
        rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        assert [row["epoch"] for row in rows] == [1, 2, 3]  # one writer: rank 0
        assert rows[-1]["train_loss"] < rows[0]["train_loss"]
        return load_checkpoint(out)[1]

    return run
