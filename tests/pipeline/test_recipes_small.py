"""Every shipped recipe runs end to end at ``--size small`` (the smoke tests CI runs)."""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kdpipe.pipeline import load_recipe, run_recipe, write_results

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted(p.parent.name for p in (ROOT / "pipelines").glob("*/pipeline.yaml"))


def _regimes(name: str) -> list[str]:
    """The regimes a recipe defines, besides its own variables ("")."""
    data = yaml.safe_load((ROOT / "pipelines" / name / "pipeline.yaml").read_text())
    return ["", *(data.get("regimes") or {})]


@pytest.mark.parametrize(
    ("name", "regime"),
    # rnn_to_dnn's own regime runs as a user types it (test_run_command_small)
    [(n, r) for n in RECIPES for r in _regimes(n) if n != "rnn_to_dnn" or r],
)
def test_recipe_small(name, regime, tmp_path):
    recipe = load_recipe(ROOT / "pipelines" / name, "small", regime=regime)
    report = run_recipe(recipe, tmp_path / name, progress=False)
    assert report.ran == [ex.key for ex in report.plan]  # everything ran, nothing failed
    _, js = write_results(report, f"kdpipe run pipelines/{name} --size small")
    res = json.loads(js.read_text())
    rows = {row["stage"]: row for row in res["rows"]}
    for row in res["rows"]:
        # one score per seed, whatever the score (at small size a teacher can be at chance)
        acc, stage = row["accuracy"], recipe.stage(row["stage"])
        assert len(acc) == (len(recipe.seeds) if stage.seeded else 1), row["label"]
        assert all(0 <= a <= 100 for a in acc), row["label"]
        assert row["accuracy_mean"] == pytest.approx(statistics.fmean(acc))
        if len(acc) > 1:
            assert row["accuracy_std"] == pytest.approx(statistics.stdev(acc)), row["label"]
        else:
            assert row["accuracy_std"] is None, row["label"]
    phones = any(st.kind == "synth" and st.options.get("task") == "phones" for st in recipe.stages)
    decoded = [row for row in res["rows"] if phones and recipe.stage(row["stage"]).kind == "learn"]
    # every frame-level learn stage decodes (eval: {decode: true}): phones, and words with
    # the lexicon that synth writes beside the corpus
    # (small sizes decode words in dark_knowledge_lstm only: the word sweep is slow)
    for row in decoded:
        words = recipe.stage(row["stage"]).options["eval"]["decode"] is True
        assert row.get("decoded_per_mean") is not None, row["label"]
        assert (row.get("wer_mean") is not None) == words, row["label"]
    ctc = [row.get("objective") == "ctc" for row in res["rows"]]
    if decoded:
        md = (tmp_path / name / "results.md").read_text()
        # a CTC model has no frame labels to collapse: the decoded PER only
        rates = ("Decoded PER",) + (("Collapsed PER",) if not all(ctc) else ())
        assert all(f"{rate} (%)" in md for rate in rates)
        assert ("Token accuracy (%)" in md) == all(ctc)
        assert ("WER (%)" in md) == (name == "dark_knowledge_lstm")
    if regime == "aligned":  # the papers' labels: every learnt model also against the truth
        assert res["regime"] == "aligned"
        for row in decoded:  # one epoch on 60 sentences: any score, but a score
            assert 0 <= row["truth_accuracy_mean"] <= 100, (row["label"], row)
            assert 0 < row["label_error_mean"] < 100, (row["label"], row)
        md = (tmp_path / name / "results.md").read_text()
        assert "True-phone acc. (%)" in md and "(aligned, small)" in md
    for claim in res["claims"]:
        # the verdict follows from the table's numbers (results.md: "checked on the numbers
        # above"): A's mean minus B's, with a standard error where both have several seeds
        a, b = rows[claim["better"]], rows[claim["than"]]
        assert claim["better_accuracy"] == pytest.approx(a["accuracy_mean"])
        assert claim["than_accuracy"] == pytest.approx(b["accuracy_mean"])
        diff = a["accuracy_mean"] - b["accuracy_mean"]
        assert claim["difference"] == pytest.approx(diff)
        assert claim["holds"] is (diff > 0), claim["text"]
        na, nb = len(a["accuracy"]), len(b["accuracy"])
        if na > 1 and nb > 1:
            se = math.sqrt(a["accuracy_std"] ** 2 / na + b["accuracy_std"] ** 2 / nb)
            assert claim["standard_error"] == pytest.approx(se)
            assert claim["within_noise"] is (abs(diff) <= 2 * se)
        else:
            assert claim["standard_error"] is None and claim["within_noise"] is False


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
