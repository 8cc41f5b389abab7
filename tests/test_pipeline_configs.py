"""Every config file shipped under pipelines/ is valid: the documented examples run."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdpipe.learn.train_config import TrainConfig
from kdpipe.models import build_model
from kdpipe.schema import load_yaml

ROOT = Path(__file__).resolve().parent.parent
BASELINES = sorted((ROOT / "pipelines" / "baselines").glob("*.yaml"))


def test_there_are_baseline_configs():
    assert len(BASELINES) >= 4


@pytest.mark.parametrize("path", BASELINES, ids=lambda p: p.stem)
def test_baseline_config_builds(path):
    cfg = load_yaml(path)
    assert set(cfg) <= {"student", "model", "train"}
    TrainConfig.from_dict(cfg.get("train"))
    model = build_model(cfg["student"], 40, 35, cfg.get("model"))
    assert sum(p.numel() for p in model.parameters()) > 0
