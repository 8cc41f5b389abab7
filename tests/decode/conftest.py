"""What the decoding tests share: a small frame model trained on a store for a few steps."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kdpipe.cli.main import app
from kdpipe.corpus.featstore import FeatureStore


def _train(store: FeatureStore, out: Path) -> Path:
    """A 1 x 32 DNN trained 3 epochs on ``store`` (through the CLI), saved in ``out``."""
    r = CliRunner().invoke(app, ["learn", "--corpus", store.location, "--student", "dnn",
                                 "--out", str(out), "--epochs", "3", "-m", "hidden_dim=32",
                                 "-m", "num_layers=1", "-s", "lr=0.01"])  # fmt: skip
    assert r.exit_code == 0, r.output
    return out


@pytest.fixture(scope="session")
def train_small_dnn() -> Callable[[FeatureStore, Path], Path]:
    return _train
