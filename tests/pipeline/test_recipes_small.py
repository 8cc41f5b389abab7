"""Every shipped recipe runs end to end at ``--size small`` (the smoke tests CI runs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kdpipe.pipeline import load_recipe, run_recipe, write_results

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted(p.parent.name for p in (ROOT / "pipelines").glob("*/pipeline.yaml"))


@pytest.mark.parametrize("name", [n for n in RECIPES if n != "rnn_to_dnn"])
def test_recipe_small(name, tmp_path):
    recipe = load_recipe(ROOT / "pipelines" / name, "small")
    report = run_recipe(recipe, tmp_path / name, progress=False)
    assert report.ran == [ex.key for ex in report.plan]  # everything ran, nothing failed
    _, js = write_results(report, f"kdpipe run pipelines/{name} --size small")
    res = json.loads(js.read_text())
    for row in res["rows"]:
        assert row["accuracy"], f"{name}: no score for {row['label']}"
        assert 0 <= row["accuracy_mean"] <= 100
    for claim in res["claims"]:
        assert claim["holds"] in (True, False)


def test_run_command_small(tmp_path):
    """The documented command, as a user types it."""
    work = tmp_path / "w"
    cmd = [sys.executable, "-m", "kdpipe", "run", str(ROOT / "pipelines" / "rnn_to_dnn"),
           "--size", "small", "--workdir", str(work), "--no-progress"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "[12/12] student_kd_unlabelled@seed0 (learn): running" in out.stdout
    md = (work / "results.md").read_text()
    assert "| A. DNN student, hard labels |" in md
    assert "kdpipe run" in md and "--size small" in md
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0 and again.stdout.count("done, skipped") == 12
