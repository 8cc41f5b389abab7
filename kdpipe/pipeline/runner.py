"""``kdpipe run``: the stages of a recipe in order, skipping what is done and unchanged.

Each execution of a stage (one per seed for seeded stages) has a fingerprint: its settings
as they will run (config files read) and the fingerprints of the stages it reads. A record
``WORKDIR/.stages/<stage>[@seed<N>].json`` says ``running`` or ``done`` with that
fingerprint. On a rerun a ``done`` record with the same fingerprint is skipped; a
``running`` one (the run was interrupted) resumes a learn stage from its ``last.pt`` and
redoes the others (synth, prepare and teach are minutes at most); anything else starts
afresh. A changed config therefore re-runs its stage and every stage downstream of it.

Output paths: ``WORKDIR/<stage>``, and ``WORKDIR/<stage>/seed<N>`` for seeded stages.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdpipe.errors import ConfigError
from kdpipe.pipeline.recipe import RECIPE_FILE, Recipe, Stage
from kdpipe.pipeline.stages import RUNNERS, StageCall, identity
from kdpipe.schema import fingerprint

RECORDS = ".stages"


@dataclass
class Execution:
    """One stage for one seed: where it writes and whether it must run."""

    stage: Stage
    seed: int | None
    out: Path
    fingerprint: str
    state: str  # done | resume | changed | missing | new

    @property
    def key(self) -> str:
        return self.stage.name if self.seed is None else f"{self.stage.name}@seed{self.seed}"


@dataclass
class RunReport:
    """What ``run_recipe`` did: per execution key, its state before and its summary."""

    recipe: Recipe
    workdir: Path
    plan: list[Execution]
    summaries: dict[str, dict[str, Any]] = field(default_factory=dict)
    ran: list[str] = field(default_factory=list)
    seconds: float = 0.0  # this invocation
    compute_seconds: float = 0.0  # every execution's wall time, skipped ones included


def output_path(workdir: Path, stage: Stage, seed: int | None) -> Path:
    return workdir / stage.name if seed is None else workdir / stage.name / f"seed{seed}"


def _ref_seed(recipe: Recipe, name: str, seed: int | None) -> int | None:
    """Which execution of stage ``name`` a stage run for ``seed`` reads: the same seed's if
    ``name`` is seeded, its only one otherwise."""
    return seed if recipe.stage(name).seeded else None


def _record_path(workdir: Path, key: str) -> Path:
    return workdir / RECORDS / f"{key}.json"


def read_record(workdir: Path, key: str) -> dict[str, Any] | None:
    p = _record_path(workdir, key)
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def _write_record(workdir: Path, key: str, data: dict[str, Any]) -> None:
    p = _record_path(workdir, key)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    tmp.replace(p)  # atomic: a record is whole or absent


def plan(recipe: Recipe, workdir: str | Path) -> list[Execution]:
    """Every execution in order with its fingerprint and state; validates every stage's
    settings (config files, keys) before anything runs."""
    workdir = Path(workdir)
    fps: dict[tuple[str, int | None], str] = {}
    out: list[Execution] = []
    for stage in recipe.stages:
        for seed in recipe.seeds if stage.seeded else (None,):
            placeholders = {ref: f"/@{ref}" for ref in stage.refs}  # paths out of the identity
            call = StageCall(stage.options, placeholders, Path("/@out"), seed,
                             recipe.directory, False, False)  # fmt: skip
            try:
                settings = identity(stage.kind, call)
            except ConfigError as error:  # name the recipe and the stage whose settings fail
                where = f"{recipe.directory / RECIPE_FILE}: stage {stage.name!r}"
                raise ConfigError(f"{where}: {error}") from None
            ident = {
                "kind": stage.kind,
                "seed": seed,
                "settings": settings,
                "inputs": {ref: fps[(ref, _ref_seed(recipe, ref, seed))] for ref in stage.refs},
            }
            stage_fp = fingerprint(ident)
            fps[(stage.name, seed)] = stage_fp
            execution = Execution(stage, seed, output_path(workdir, stage, seed), stage_fp, "new")
            record = read_record(workdir, execution.key)
            if record is not None:
                same = record.get("fingerprint") == stage_fp
                execution.state = (
                    "changed" if not same else ("done" if record["state"] == "done" else "resume")
                )
                if execution.state == "done" and not execution.out.exists():
                    execution.state = "missing"  # its output was deleted: make it again
            out.append(execution)
    return out


def run_recipe(
    recipe: Recipe,
    workdir: str | Path,
    *,
    progress: bool = True,
    announce: Callable[[int, int, Execution], None] | None = None,
    finished: Callable[[Execution, dict[str, Any], float], None] | None = None,
) -> RunReport:
    """Run what ``plan`` says is not done; returns every execution's summary.

    ``announce(i, n, execution)`` is called before each execution (done ones included),
    ``finished(execution, summary, seconds)`` after each one that ran.
    """
    # trainer imports torch; importing kdpipe.pipeline must not (reading a recipe needs none)
    from kdpipe.learn.trainer import LAST_STATE

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    steps = plan(recipe, workdir)
    report = RunReport(recipe, workdir, steps)
    outputs = {(step.stage.name, step.seed): step.out for step in steps}
    for step in steps:  # a stage output is replaced only if this runner recorded making it
        if step.state != "done" and step.out.exists() and read_record(workdir, step.key) is None:
            raise ConfigError(
                f"{step.out} exists but no run of this recipe made it (no record in "
                f"{workdir / '.stages'}): choose another --workdir or move it away"
            )
    for i, step in enumerate(steps):
        if announce is not None:
            announce(i, len(steps), step)
        if step.state == "done":
            record = read_record(workdir, step.key) or {}
            report.summaries[step.key] = record.get("summary", {})
            report.compute_seconds += float(record.get("wall_seconds", 0.0))
            continue
        interrupted_learn = step.state == "resume" and step.stage.kind == "learn"
        resume = interrupted_learn and (step.out / LAST_STATE).exists()
        if not resume and step.out.exists():
            shutil.rmtree(step.out)  # the runner's own (checked before the first stage)
        inputs = {
            ref: str(outputs[(ref, _ref_seed(recipe, ref, step.seed))]) for ref in step.stage.refs
        }
        call = StageCall(step.stage.options, inputs, step.out, step.seed, recipe.directory,
                         resume, progress)  # fmt: skip
        _write_record(workdir, step.key, {"state": "running", "fingerprint": step.fingerprint})
        step_started = time.perf_counter()
        summary = RUNNERS[step.stage.kind](call)
        summary.setdefault("seconds", time.perf_counter() - step_started)
        _write_record(workdir, step.key, {
            "state": "done", "fingerprint": step.fingerprint, "stage": step.stage.name,
            "kind": step.stage.kind, "seed": step.seed, "summary": summary,
            "wall_seconds": time.perf_counter() - step_started,
        })  # fmt: skip
        report.summaries[step.key] = summary
        report.ran.append(step.key)
        report.compute_seconds += time.perf_counter() - step_started
        if finished is not None:
            finished(step, summary, time.perf_counter() - step_started)
    report.seconds = time.perf_counter() - started
    return report
