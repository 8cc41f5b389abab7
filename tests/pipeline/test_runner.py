"""The runner on a real tiny recipe: results, skipping, re-running what changed, resuming."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from kdpipe.pipeline import load_recipe, plan, run_recipe, write_results
from kdpipe.pipeline import stages as stages_mod

pytestmark = pytest.mark.slow


def states(recipe, work) -> dict[str, str]:
    return {ex.key: ex.state for ex in plan(recipe, work)}


def test_run_skip_change_and_results(tiny_recipe, tmp_path):
    work = tmp_path / "work"
    r = load_recipe(tiny_recipe)
    first = run_recipe(r, work, progress=False)
    keys = ["corpus", "feats", "teacher", "targets", "hard@seed0", "hard@seed1",
            "kd@seed0", "kd@seed1"]  # fmt: skip
    assert first.ran == keys
    assert (work / "kd" / "seed1" / "model.safetensors").is_file()
    assert (work / "kd" / "seed1" / "eval.json").is_file()
    md, js = write_results(first, "kdpipe run tiny")
    res = json.loads(js.read_text())
    rows = {row["stage"]: row for row in res["rows"]}
    assert len(rows["hard"]["accuracy"]) == 2 and len(rows["teacher"]["accuracy"]) == 1
    assert 0 <= rows["kd"]["accuracy_mean"] <= 100 and rows["kd"]["bytes_per_frame"] > 0
    assert rows["teacher"]["per_mean"] is not None and rows["hard"]["parameters"] > 0
    assert res["claims"][0]["holds"] in (True, False)
    assert "| kd |" in md.read_text() and "kd helps" in md.read_text()

    second = run_recipe(r, work, progress=False)
    assert second.ran == [] and second.summaries == first.summaries

    # An edited student config re-runs the students and nothing upstream of them.
    cfg = yaml.safe_load((tiny_recipe / "student.yaml").read_text())
    cfg["model"]["hidden_dim"] = 12
    (tiny_recipe / "student.yaml").write_text(yaml.safe_dump(cfg))
    r2 = load_recipe(tiny_recipe)
    assert states(r2, work) == {
        "corpus": "done", "feats": "done", "teacher": "done", "targets": "done",
        "hard@seed0": "changed", "hard@seed1": "changed", "kd@seed0": "changed",
        "kd@seed1": "changed",
    }  # fmt: skip
    # ... and so does a changed upstream setting for everything downstream of it.
    r3 = load_recipe(tiny_recipe, seeds=[0])
    assert set(states(r3, work).values()) <= {"done", "changed"}
    import shutil

    shutil.rmtree(work / "teacher")
    assert states(r, work)["teacher"] == "missing"


def test_interrupted_run_resumes(tiny_recipe, tmp_path, monkeypatch):
    work = tmp_path / "work"
    r = load_recipe(tiny_recipe)
    real = stages_mod.RUNNERS["learn"]

    def failing(call):
        if call.out.name == "seed1" and call.out.parent.name == "hard":
            raise KeyboardInterrupt
        return real(call)

    monkeypatch.setitem(stages_mod.RUNNERS, "learn", failing)
    with pytest.raises(KeyboardInterrupt):
        run_recipe(r, work, progress=False)
    assert states(r, work)["hard@seed1"] == "resume"
    monkeypatch.setitem(stages_mod.RUNNERS, "learn", real)
    again = run_recipe(r, work, progress=False)
    assert again.ran == ["hard@seed1", "kd@seed0", "kd@seed1"]


def test_killed_cli_run_resumes_from_the_last_finished_stage(tiny_recipe, tmp_path):
    work = tmp_path / "work"
    cmd = [sys.executable, "-m", "kdpipe", "run", str(tiny_recipe), "--workdir", str(work),
           "--no-progress"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    log = tmp_path / "first.log"
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    record = work / ".stages" / "teacher.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if record.is_file() and json.loads(record.read_text())["state"] == "done":
            break
        time.sleep(0.05)
    assert proc.poll() is None, log.read_text()  # still running: killed mid-recipe
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())
    for key in ("corpus", "feats", "teacher"):
        assert f"{key} (" in text and f"] {key} " in text
    assert "teacher (learn): done, skipped" in text
    assert "kd@seed1 (learn): running" in text or "kd@seed1 (learn): interrupted" in text
    assert (work / "results.md").is_file()


def test_claim_verdicts_and_noise():
    """A claim's verdict from numbers: holds, does not hold, or within two standard errors."""
    from types import SimpleNamespace

    from kdpipe.pipeline.results import collect, to_markdown
    from kdpipe.pipeline.runner import RunReport

    def ex(stage, seed):
        return SimpleNamespace(
            stage=SimpleNamespace(name=stage, kind="learn"), key=f"{stage}@{seed}"
        )

    scores = {"a": [0.70, 0.71, 0.72], "b": [0.60, 0.61, 0.62], "c": [0.705, 0.715, 0.71]}
    plan_ = [ex(s, i) for s in scores for i in range(3)]
    summaries = {f"{s}@{i}": {"accuracy": v[i]} for s, v in scores.items() for i in range(3)}
    wers = {"a": [0.30, 0.31, 0.32], "b": [0.40, 0.41, 0.42], "c": [0.20, 0.21, 0.22]}
    for stage, values in wers.items():  # decoded: word error rates, lower is better
        for i, value in enumerate(values):
            summaries[f"{stage}@{i}"]["decoded_wer"] = value
    recipe = SimpleNamespace(
        name="r", title="t", paper="", claim="", size="full", regime="", seeds=(0, 1, 2),
        rows=(), claims=(
            {"text": "a>b", "better": "a", "than": "b"},
            {"text": "b>a", "better": "b", "than": "a"},
            {"text": "a>c", "better": "a", "than": "c"},
        ),
    )  # fmt: skip
    res = collect(RunReport(recipe, None, plan_, summaries))
    verdicts = [(c["holds"], c["within_noise"]) for c in res["claims"]]
    assert verdicts == [(True, False), (False, False), (False, True)]
    assert abs(res["claims"][0]["relative_error_reduction"] - (39 - 29) / 39) < 1e-9
    md = to_markdown(res)
    assert "a>b: **holds**" in md and "b>a: **does not hold**" in md
    assert "a>c: **within seed noise**" in md
    # the papers' measure beside accuracy: a beats b on WER too; a loses to c on WER
    wer = [c["wer"] for c in res["claims"]]
    assert [(w["holds"], w["within_noise"]) for w in wer] == [(True, False), (False, False),
                                                              (False, False)]  # fmt: skip
    assert abs(wer[0]["relative_error_reduction"] - (41 - 31) / 41) < 1e-9
    assert abs(wer[0]["difference"] - (31 - 41)) < 1e-9
    assert "a>b: **holds** (a 71.0 vs b 61.0: +10.0 +- 0.8 points" in md
    assert "; on WER: **holds** (31.0 vs 41.0: -10.0 +- 0.8 points" in md
    assert "a>c: **within seed noise**" in md and "on WER: **does not hold** (31.0 vs 21.0" in md
    assert "decoded_per" not in res["claims"][0]  # not decoded in phones: no verdict


def test_a_workdir_folder_the_runner_did_not_make_is_never_deleted(tiny_recipe, tmp_path):
    from kdpipe.errors import ConfigError

    work = tmp_path / "work"
    mine = work / "feats"  # e.g. --workdir data, where the user keeps data/feats
    mine.mkdir(parents=True)
    (mine / "my.zarr").write_text("keep me")
    with pytest.raises(ConfigError, match="no run of this recipe made it"):
        run_recipe(load_recipe(tiny_recipe), work, progress=False)
    assert (mine / "my.zarr").read_text() == "keep me"
    assert not (work / "corpus").exists()  # refused before the first stage ran
