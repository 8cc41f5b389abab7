"""A tiny real recipe: synthesize, prepare, train, teach, distil (seconds per run)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

TINY = {
    "name": "tiny",
    "title": "tiny recipe",
    "vars": {"seeds": [0, 1]},
    "stages": [
        {"name": "corpus", "synth": {"task": "phones", "num_utts": 30, "num_voices": 10,
                                     "jobs": 1}},
        {"name": "feats", "prepare": {"corpus": "corpus", "jobs": 1}},
        {"name": "teacher", "learn": {"corpus": "feats", "config": "teacher.yaml"}},
        {"name": "targets", "teach": {"corpus": "feats", "model": "teacher",
                                      "ensemble": {"rule": {"name": "topk", "params": {"k": 4}}}}},
        {"name": "hard", "learn": {"corpus": "feats", "config": "student.yaml", "seeds": True}},
        {"name": "kd", "learn": {"corpus": "feats", "config": "student.yaml",
                                 "targets": ["targets"], "kd": {"alpha": 0.5}, "seeds": True}},
    ],
    "results": {
        "rows": [
            {"label": "teacher", "stage": "teacher"},
            {"label": "hard", "stage": "hard"},
            {"label": "kd", "stage": "kd", "store": "targets"},
        ],
        "claims": [{"text": "kd helps", "better": "kd", "than": "hard"}],
    },
}  # fmt: skip
LEARN = {"model": {"hidden_dim": 16, "num_layers": 1}, "train": {"epochs": 1, "num_threads": 1}}


@pytest.fixture
def tiny_recipe(tmp_path: Path) -> Path:
    d = tmp_path / "recipe"
    d.mkdir()
    (d / "pipeline.yaml").write_text(yaml.safe_dump(TINY, sort_keys=False))
    (d / "teacher.yaml").write_text(yaml.safe_dump({"student": "dnn", **LEARN}))
    (d / "student.yaml").write_text(yaml.safe_dump({"student": "dnn", **LEARN}))
    return d
