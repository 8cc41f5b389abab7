"""docs/learn.md: the user-loop example runs as written against a real store and corpus."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from kdpipe.testing.corpora import make_feature_store
from kdpipe.testing.stores import corpus_store

torch.set_num_threads(1)
DOC = Path(__file__).parents[2] / "docs" / "learn.md"


def test_own_loop_example_runs(tmp_path, monkeypatch):
    text = DOC.read_text()
    block = re.search(r"<!-- example: own-loop .*?-->\n```python\n(.*?)```", text, re.S)
    assert block is not None
    fs = make_feature_store(tmp_path / "feats.zarr", per_split={"train": 6, "dev": 2},
                            num_mel_bins=4)  # fmt: skip
    corpus_store(tmp_path / "targets.zarr", fs)
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(block.group(1), str(DOC), "exec"), scope)
    assert scope["epoch"] == 1 and torch.isfinite(scope["loss"]) and scope["counted"] > 0
