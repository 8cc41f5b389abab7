"""What each kind of stage does: one library call each (synth, prepare, learn, teach).

Every function takes the stage's options (variables substituted), the paths of the stages
it reads, its output path and the seed, and returns a JSON-able summary that the runner
records and the results table reads (``accuracy`` for learn and teach stages).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdpipe.errors import ConfigError
from kdpipe.schema import load_yaml

EVAL_FILE = "eval.json"  # a learn stage's test scores, beside its checkpoint


@dataclass(frozen=True)
class StageCall:
    """One execution of a stage: for one seed (or none), with its inputs resolved."""

    options: dict[str, Any]
    inputs: dict[str, str]  # stage name -> output path, for the stages it reads
    out: Path
    seed: int | None
    directory: Path  # the recipe's folder: config files are relative to it
    resume: bool  # continue an interrupted run of the same stage (learn only)
    progress: bool


def config_file(call: StageCall, key: str = "config") -> dict[str, Any]:
    """The YAML file an option names (relative to the recipe), parsed; {} when absent."""
    name = call.options.get(key)
    if name is None:
        return {}
    data = load_yaml(call.directory / str(name))
    if not isinstance(data, dict):
        raise ConfigError(f"{call.directory / str(name)}: expected a mapping")
    return data


def synth_config(options: dict[str, Any]) -> Any:
    """The synth config a ``synth`` stage asks for (validated: bad fields fail at load)."""
    from kdpipe.corpus.synth import KeywordSynthConfig, PhoneSynthConfig

    opts = {k: v for k, v in options.items() if k not in ("task", "size", "jobs")}
    classes = {"keywords": KeywordSynthConfig, "phones": PhoneSynthConfig}
    task = options.get("task")
    if task not in classes:
        raise ConfigError(f"synth: task must be keywords or phones, got {task!r}")
    for k, v in opts.items():
        if isinstance(v, list):
            opts[k] = tuple(v)
    return classes[task].for_size(str(options.get("size", "small")), **opts)


def run_synth(call: StageCall) -> dict[str, Any]:
    from kdpipe.corpus.synth import synth_keywords, synth_phones

    cfg = synth_config(call.options)
    make = synth_keywords if call.options["task"] == "keywords" else synth_phones
    s = make(call.out, cfg, jobs=call.options.get("jobs"), progress=call.progress, overwrite=True)
    return {"utterances": s.utterances, "speakers": s.speakers, "seconds": s.seconds}


def run_prepare(call: StageCall) -> dict[str, Any]:
    from kdpipe.corpus.features import FbankConfig
    from kdpipe.corpus.prepare import prepare_corpus

    o = call.options
    s = prepare_corpus(
        call.inputs[o["corpus"]],
        call.out,
        features=FbankConfig.from_dict(o.get("features") or {}),
        jobs=o.get("jobs"),
        skip_bad=bool(o.get("skip_bad", False)),
        progress=call.progress,
        overwrite=True,
    )
    return {"utterances": s.num_utterances, "frames": s.num_frames, "seconds": s.seconds}


def learn_run(call: StageCall) -> Any:
    """The ``SupervisedRun``/``KdRun`` a learn stage asks for (its identity: fingerprinted)."""
    from kdpipe.learn.runs import build_run, parse_targets

    o = call.options
    train = dict(o.get("train") or {})
    if call.seed is not None:
        train["seed"] = call.seed
    targets = []  # {stage, weight, split} -> the {path, weight, split} of a learn config
    for t in o.get("targets") or []:
        t = dict(t) if isinstance(t, dict) else {"stage": t}
        if "stage" not in t or set(t) - {"stage", "weight", "split"}:
            raise ConfigError(f"targets: keys are stage, weight, split; got {sorted(t)}")
        t["path"] = call.inputs[str(t.pop("stage"))]
        targets.append(t)
    return build_run(
        config_file(call),
        corpus=call.inputs[o["corpus"]],
        student=o.get("student"),
        model=o.get("model"),
        train=train,
        kd=o.get("kd"),
        targets=parse_targets(targets, "targets") or None,
        view=o.get("view"),
        init=call.inputs[o["init"]] if o.get("init") else None,
        train_split=str(o.get("train_split", "train")),
        dev_split=str(o.get("dev_split", "dev")),
        where=f"learn stage ({o.get('config') or 'inline'})",
    )


def score(model: str | Path, corpus: str, split: str, view: dict[str, Any] | None) -> dict:
    """Test scores of checkpoint ``model``: accuracy (and PER for frames), parameters."""
    from kdpipe.corpus.views import ViewConfig
    from kdpipe.learn.evaluate import evaluate_checkpoint
    from kdpipe.models.checkpoint import read_card
    from kdpipe.models.registry import is_custom

    view_cfg = None if view is None else ViewConfig.from_dict(view)
    card = read_card(model)
    trust = is_custom(card.architecture)  # the recipe named this code itself
    report = evaluate_checkpoint(model, corpus, split=split, view=view_cfg, device="auto",
                                 trust_custom_code=trust)  # fmt: skip
    return {
        **report.to_dict(),
        "accuracy": report.accuracy,
        "parameters": int(card.training.get("parameters", 0)),
    }


def run_learn(call: StageCall) -> dict[str, Any]:
    """Train, then score the best checkpoint on ``eval.split`` (default test) of the corpus,
    through the training view unless ``eval.view`` says otherwise."""
    import json

    from kdpipe.learn.runs import train_run

    run = learn_run(call)
    result = train_run(
        run, call.out, resume=call.resume, overwrite=not call.resume, progress=call.progress
    )
    ev = dict(call.options.get("eval") or {})
    if set(ev) - {"split", "view"}:
        raise ConfigError(f"eval: keys are split and view; got {sorted(ev)}")
    view = ev.get("view", run.view.to_dict() if run.view is not None else None)
    summary = {
        **score(call.out, run.corpus, str(ev.get("split", "test")), view),
        "best_dev_accuracy": result.best_dev_acc,
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "seconds": result.seconds,
    }
    (call.out / EVAL_FILE).write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def run_eval(call: StageCall) -> dict[str, Any]:
    """Score a learn stage's checkpoint on another split or view (no output but the record)."""
    o = call.options
    call.out.mkdir(parents=True, exist_ok=True)
    return score(call.inputs[o["model"]], call.inputs[o["corpus"]], str(o.get("split", "test")),
                 o.get("view"))  # fmt: skip


def ensemble(call: StageCall) -> Any:
    """The ``EnsembleConfig`` a teach stage asks for: ``model: STAGE`` or ``members:`` (each
    ``{model: STAGE, ...}`` with the member keys of ensemble.yaml), plus ``ensemble:`` (the
    other keys of ensemble.yaml: combine, rule, values, view, ...)."""
    from kdpipe.teach.ensemble_yaml import ensemble_from_dict

    o = call.options
    members = o.get("members") or [{"model": o["model"]}]
    data = dict(o.get("ensemble") or {})
    if "members" in data:
        raise ConfigError("teach: give members beside ensemble:, not inside it")
    data["members"] = [
        {**{k: v for k, v in m.items() if k != "model"}, "checkpoint": call.inputs[m["model"]]}
        for m in members
    ]
    return ensemble_from_dict(data, "teach stage")


def run_teach(call: StageCall) -> dict[str, Any]:
    from kdpipe.teach.run import teach

    split = str(call.options.get("split", "train"))
    s = teach(
        ensemble(call),
        call.inputs[call.options["corpus"]],
        call.out,
        split=None if split == "all" else split,
        overwrite=True,
        batch_frames=int(call.options.get("batch_frames", 20000)),
        device="auto",
        progress=call.progress,
    )
    return s.to_dict()


RUNNERS: dict[str, Callable[[StageCall], dict[str, Any]]] = {
    "synth": run_synth,
    "prepare": run_prepare,
    "learn": run_learn,
    "teach": run_teach,
    "eval": run_eval,
}


def identity(kind: str, call: StageCall) -> Any:
    """What a stage's fingerprint covers besides its inputs' fingerprints: the settings as
    they will run (config files read, defaults filled in), so an edit re-runs the stage."""
    if kind == "synth":
        return synth_config(call.options).to_dict()
    if kind == "learn":
        return {"run": learn_run(call).to_dict(), "eval": call.options.get("eval")}
    if kind == "teach":
        return {
            "ensemble": ensemble(call).to_dict(),
            "split": call.options.get("split", "train"),
            "batch_frames": call.options.get("batch_frames", 20000),
        }
    return {k: v for k, v in call.options.items() if k != "jobs"}
