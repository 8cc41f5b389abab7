"""What each kind of stage does: one library call each (synth, align, prepare, learn, teach,
eval).

Every function takes the stage's options (variables substituted), the paths of the stages
it reads, its output path and the seed, and returns a JSON-able summary that the runner
records and the results table reads (``accuracy`` for learn and teach stages).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kdpipe.align.align_config import AlignConfig
from kdpipe.align.data_dir import align_data, state_phone
from kdpipe.align.truth import model_truth, read_reference, read_table
from kdpipe.corpus.features import FbankConfig
from kdpipe.corpus.prepare import prepare_corpus
from kdpipe.corpus.synth import KeywordSynthConfig, PhoneSynthConfig, synth_keywords, synth_phones
from kdpipe.corpus.views import ViewConfig
from kdpipe.errors import ConfigError
from kdpipe.models.checkpoint import read_card
from kdpipe.models.registry import is_custom
from kdpipe.schema import load_yaml
from kdpipe.teach.ensemble_yaml import EnsembleConfig, ensemble_from_dict

if TYPE_CHECKING:
    from kdpipe.learn.runs import KdRun, OnlineRun, SupervisedRun

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


def synth_config(options: dict[str, Any]) -> KeywordSynthConfig | PhoneSynthConfig:
    """The synth config a ``synth`` stage asks for (validated: bad fields fail at load)."""
    settings = {k: v for k, v in options.items() if k not in ("task", "size", "jobs")}
    classes: dict[str, type[KeywordSynthConfig] | type[PhoneSynthConfig]] = {
        "keywords": KeywordSynthConfig,
        "phones": PhoneSynthConfig,
    }
    task = options.get("task")
    if task not in classes:
        raise ConfigError(f"synth: task must be keywords or phones, got {task!r}")
    for key, value in settings.items():
        if isinstance(value, list):
            settings[key] = tuple(value)
    return classes[task].for_size(str(options.get("size", "small")), **settings)


def run_synth(call: StageCall) -> dict[str, Any]:
    cfg = synth_config(call.options)
    jobs = call.options.get("jobs")
    if isinstance(cfg, KeywordSynthConfig):
        summary = synth_keywords(call.out, cfg, jobs=jobs, progress=call.progress, overwrite=True)
    else:
        summary = synth_phones(call.out, cfg, jobs=jobs, progress=call.progress, overwrite=True)
    return {"utterances": summary.utterances, "speakers": summary.speakers,
            "seconds": summary.seconds}  # fmt: skip


def align_config(call: StageCall) -> AlignConfig:
    """The ``AlignConfig`` an align stage asks for: its ``config`` file (docs/align.md),
    ``num_leaves`` on top."""
    settings = config_file(call)
    if call.options.get("num_leaves") is not None:
        settings["num_leaves"] = call.options["num_leaves"]
    return AlignConfig.from_dict(settings)


def run_align(call: StageCall) -> dict[str, Any]:
    """``kdpipe corpus align`` of the corpus stage's output: tied-state frame labels from a
    GMM-HMM, as the papers' labels were made. The lexicon is ``lexicon`` (relative to the
    recipe), else the one the corpus holds (``synth`` writes lexicon.txt), with ``g2p``."""
    options = call.options
    src = Path(call.inputs[options["corpus"]])
    lexicon = call.directory / str(options["lexicon"]) if options.get("lexicon") else None
    if lexicon is None and (src / "lexicon.txt").is_file():
        lexicon = src / "lexicon.txt"
    summary = align_data(src, call.out, config=align_config(call), lexicon=lexicon,
                         g2p=options.get("g2p"), jobs=int(options.get("jobs") or DECODE_JOBS),
                         skip_bad=bool(options.get("skip_bad", False)), overwrite=True)  # fmt: skip
    return {"utterances": summary.aligned, "tied_states": summary.num_states,
            "left_out": len(summary.skipped), "seconds": summary.seconds,
            **(summary.agreement or {})}  # fmt: skip


def run_prepare(call: StageCall) -> dict[str, Any]:
    options = call.options
    summary = prepare_corpus(
        call.inputs[options["corpus"]],
        call.out,
        features=FbankConfig.from_dict(options.get("features") or {}),
        jobs=options.get("jobs"),
        skip_bad=bool(options.get("skip_bad", False)),
        progress=call.progress,
        overwrite=True,
    )
    return {"utterances": summary.num_utterances, "frames": summary.num_frames,
            "seconds": summary.seconds}  # fmt: skip


def learn_run(call: StageCall) -> SupervisedRun | KdRun | OnlineRun:
    """The ``SupervisedRun``/``KdRun`` a learn stage asks for (its identity: fingerprinted)."""
    # learn.runs imports torch; importing kdpipe.pipeline must not (reading a recipe needs none)
    from kdpipe.learn.runs import build_run, parse_targets

    options = call.options
    train = dict(options.get("train") or {})
    if call.seed is not None:
        train["seed"] = call.seed
    targets = []  # {stage, weight, split} -> the {path, weight, split} of a learn config
    for given in options.get("targets") or []:
        target = dict(given) if isinstance(given, dict) else {"stage": given}
        if "stage" not in target or set(target) - {"stage", "weight", "split"}:
            raise ConfigError(f"targets: keys are stage, weight, split; got {sorted(target)}")
        target["path"] = call.inputs[str(target.pop("stage"))]
        targets.append(target)
    return build_run(
        config_file(call),
        corpus=call.inputs[options["corpus"]],
        student=options.get("student"),
        model=options.get("model"),
        train=train,
        kd=options.get("kd"),
        targets=parse_targets(targets, "targets") or None,
        view=options.get("view"),
        init=call.inputs[options["init"]] if options.get("init") else None,
        train_split=str(options.get("train_split", "train")),
        dev_split=str(options.get("dev_split", "dev")),
        where=f"learn stage ({options.get('config') or 'inline'})",
        loss=options.get("loss"),
        ctc=options.get("ctc"),
    )


DECODE_JOBS = min(os.cpu_count() or 1, 4)  # decoding workers: the machine's cores, a few


def score(
    model: str | Path,
    corpus: str,
    split: str,
    view: dict[str, Any] | None,
    decode: Any = False,
    truth: str | None = None,
) -> dict:
    """Test scores of checkpoint ``model``: accuracy (and the collapsed PER for frames),
    parameters; with ``decode``, the decoded PER (phone loop, acoustic scale tuned on dev)
    and, where the corpus has transcripts and a lexicon beside it, the decoded WER
    (``decode: phones``: the phone loop only); with ``truth`` (the output of a ``synth
    phones --labels aligned`` stage, for a corpus prepared from an ``align`` stage), the
    accuracy of the model's phones against the true phones (``truth_scores``)."""
    # evaluate imports torch; importing kdpipe.pipeline must not (reading a recipe needs none)
    from kdpipe.decode.hybrid import DecodeOptions
    from kdpipe.learn.ctc_eval import evaluate_model

    if decode not in (True, False, "phones"):
        raise ConfigError(f"eval: decode must be true, false or phones, got {decode!r}")
    view_cfg = None if view is None else ViewConfig.from_dict(view)
    card = read_card(model)
    trust = is_custom(card.architecture)  # the recipe named this code itself
    # a CTC model decodes as it was trained to (its card's ctc.decode), whatever ``decode``
    report = evaluate_model(model, corpus, split=split, view=view_cfg, device="auto",
                            trust_custom_code=trust,
                            decode=DecodeOptions() if decode else None,
                            words=False if decode == "phones" else None,
                            jobs=DECODE_JOBS)  # fmt: skip
    scores = {
        **report.to_dict(),
        "accuracy": report.accuracy,
        "parameters": int(card.training.get("parameters", 0)),
    }
    if truth is not None:
        scores.update(truth_scores(report, corpus, split, truth))
    return scores


def truth_scores(report: Any, corpus: str, split: str, truth: str) -> dict[str, float]:
    """``model_truth`` of an evaluated frame model: its argmax tied states as phones, the
    alignment it learnt from (``phone_ali.txt`` of the aligned data dir the corpus was
    prepared from) and the true phones the synth stage kept (``reference/``)."""
    from kdpipe.corpus.featstore import FeatureStore  # zarr: light importers need none

    reference = read_reference(truth)
    if reference is None:
        raise ConfigError(f"eval: truth {truth} holds no reference/ (synth --labels aligned)")
    source = Path(str(FeatureStore.open(corpus).attrs.get("source", "")))
    table = source / split / "phone_ali.txt"
    if not table.is_file() or not getattr(report, "predictions", None):
        raise ConfigError(
            f"eval: truth needs a frame model on a corpus prepared from an align stage (no {table})"
        )
    phones = np.array([state_phone(name) for name in report.labels])
    predicted = {utt: phones[hyp] for utt, hyp in report.predictions.items()}
    return model_truth(predicted, read_table(table), reference)


def run_learn(call: StageCall) -> dict[str, Any]:
    """Train, then score the best checkpoint on ``eval.split`` (default test) of the corpus,
    through the training view unless ``eval.view`` says otherwise."""
    # learn.runs imports torch; importing kdpipe.pipeline must not (reading a recipe needs none)
    from kdpipe.learn.runs import train_run

    run = learn_run(call)
    result = train_run(
        run, call.out, resume=call.resume, overwrite=not call.resume, progress=call.progress
    )
    evaluation = dict(call.options.get("eval") or {})
    if set(evaluation) - {"split", "view", "decode", "truth"}:
        raise ConfigError(f"eval: keys are split, view, decode, truth; got {sorted(evaluation)}")
    view = evaluation.get("view", run.view.to_dict() if run.view is not None else None)
    split = str(evaluation.get("split", "test"))
    truth = call.inputs[str(evaluation["truth"])] if evaluation.get("truth") else None
    summary = {
        **score(call.out, run.corpus, split, view, evaluation.get("decode", False), truth),
        "best_dev_accuracy": result.best_dev_acc,
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "seconds": result.seconds,
    }
    (call.out / EVAL_FILE).write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def run_eval(call: StageCall) -> dict[str, Any]:
    """Score a learn stage's checkpoint on another split or view (no output but the record)."""
    options = call.options
    call.out.mkdir(parents=True, exist_ok=True)
    truth = call.inputs[str(options["truth"])] if options.get("truth") else None
    return score(call.inputs[options["model"]], call.inputs[options["corpus"]],
                 str(options.get("split", "test")), options.get("view"),
                 options.get("decode", False), truth)  # fmt: skip


def ensemble(call: StageCall) -> EnsembleConfig:
    """The ``EnsembleConfig`` a teach stage asks for: ``model: STAGE`` or ``members:`` (each
    ``{model: STAGE, ...}`` with the member keys of ensemble.yaml), plus ``ensemble:`` (the
    other keys of ensemble.yaml: combine, rule, values, view, ...)."""
    options = call.options
    members = options.get("members") or [{"model": options["model"]}]
    data = dict(options.get("ensemble") or {})
    if "members" in data:
        raise ConfigError("teach: give members beside ensemble:, not inside it")
    data["members"] = [
        {
            **{key: value for key, value in member.items() if key != "model"},
            "checkpoint": call.inputs[member["model"]],
        }
        for member in members
    ]
    return ensemble_from_dict(data, "teach stage")


def run_teach(call: StageCall) -> dict[str, Any]:
    # teach.run imports torch; importing kdpipe.pipeline must not (reading a recipe needs none)
    from kdpipe.teach.run import teach

    split = str(call.options.get("split", "train"))
    summary = teach(
        ensemble(call),
        call.inputs[call.options["corpus"]],
        call.out,
        split=None if split == "all" else split,
        overwrite=True,
        batch_frames=int(call.options.get("batch_frames", 20000)),
        device="auto",
        progress=call.progress,
    )
    return summary.to_dict()


RUNNERS: dict[str, Callable[[StageCall], dict[str, Any]]] = {
    "synth": run_synth,
    "align": run_align,
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
    if kind == "align":
        kept = ("lexicon", "g2p", "skip_bad")  # jobs change how, not what
        return {"config": align_config(call).to_dict(),
                **{k: v for k, v in call.options.items() if k in kept}}  # fmt: skip
    if kind == "learn":
        evaluation = call.options.get("eval")
        if isinstance(evaluation, dict):  # a key set to null (truth: null) is no setting
            evaluation = {k: v for k, v in evaluation.items() if v is not None}
        return {"run": learn_run(call).to_dict(), "eval": evaluation}
    if kind == "teach":
        return {
            "ensemble": ensemble(call).to_dict(),
            "split": call.options.get("split", "train"),
            "batch_frames": call.options.get("batch_frames", 20000),
        }
    return {k: v for k, v in call.options.items() if k != "jobs"}
