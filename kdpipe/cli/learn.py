"""``kdpipe learn``: train a model (a teacher, a baseline or a student) and ``kdpipe eval``."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Annotated, Any

import typer

from kdpipe.cli._common import check_number, console, report_errors
from kdpipe.errors import ConfigError

_NON_FINITE = {"nan": math.nan, "inf": math.inf, "+inf": math.inf, "-inf": -math.inf}


def parse_overrides(items: list[str] | None, what: str) -> dict[str, Any]:
    """``["hidden=256", "dropout=0.1"]`` -> ``{"hidden": 256, "dropout": 0.1}`` (YAML values;
    ``nan`` and ``inf`` are numbers, so the config's range check names them)."""
    from kdpipe.schema import parse_yaml  # imported when a command runs: --help stays fast

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{what}: expected KEY=VALUE, got {item!r}")
        parsed = parse_yaml(value, f"{what} {item}")
        if isinstance(parsed, str) and re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+", parsed):
            parsed = float(parsed)  # YAML 1.1 reads 1e-9 (no dot) as a string
        elif isinstance(parsed, str) and parsed.strip().lower() in _NON_FINITE:
            parsed = _NON_FINITE[parsed.strip().lower()]
        out[key.strip()] = parsed
    return out


def _targets(items: list[str], weights: list[float] | None) -> list[tuple] | None:
    """Stores and weights from --targets/--weight; None: take the config's ``targets``."""
    if not items:
        if weights:
            raise ConfigError("--weight given without --targets")
        return None
    given = list(weights or [])
    if given and len(given) != len(items):
        raise ConfigError(f"--weight given {len(given)} times for {len(items)} --targets")
    for value in given:
        check_number(value, "--weight", low=0, low_open=True)
    return [(store, float(given[i]) if given else 1.0) for i, store in enumerate(items)]


def _check_view(view_ms: float | None, offset_ms: float | None, seed: int | None) -> None:
    check_number(view_ms, "--view-ms", low=0, low_open=True)
    check_number(offset_ms, "--view-offset-ms", low=0)
    check_number(seed, "--view-seed", low=0)


ViewMs = Annotated[
    float | None, typer.Option(help="Crop each utterance to a window of this many ms (view).")
]
ViewOffsetMs = Annotated[
    float | None, typer.Option(help="Start of the view window in ms (without --view-random).")
]
ViewRandom = Annotated[
    bool | None,
    typer.Option(
        "--view-random/--no-view-random",
        help="Draw each view's start per utterance from (--view-seed, utterance id).",
    ),
]
ViewSeed = Annotated[int | None, typer.Option(help="Seed of the random view starts.")]


def learn(
    corpus: Annotated[Path, typer.Option(help="Feature store made by `kdpipe corpus prepare`.")],
    out: Annotated[Path, typer.Option(help="Output directory: the checkpoint and its logs.")],
    student: Annotated[
        str | None,
        typer.Option(
            help="Model: dnn, lstm, blstm, tdnn, cnn, dnn_pool, lstm_pool "
            "or package.module:Class. Default: from --config."
        ),
    ] = None,
    targets: Annotated[
        list[str] | None,
        typer.Option(
            help="Target store (local or URL) to distil from instead of hard labels; repeat "
            "to mix stores."
        ),
    ] = None,
    weight: Annotated[
        list[float] | None, typer.Option(help="Loss weight of each --targets store (repeat).")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            help="YAML with optional keys student, model, train, kd, targets, view, init."
        ),
    ] = None,
    model: Annotated[
        list[str] | None, typer.Option("--model", "-m", help="Model setting KEY=VALUE (repeat).")
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", "-s", help="Training setting KEY=VALUE (repeat).")
    ] = None,
    kd: Annotated[
        list[str] | None,
        typer.Option(
            "--kd", "-k", help="Distillation setting KEY=VALUE (repeat; see docs/learn.md)."
        ),
    ] = None,
    temperature: Annotated[float | None, typer.Option(help="Override kd.temperature.")] = None,
    alpha: Annotated[
        float | None, typer.Option(help="Override kd.alpha (weight of the teacher term).")
    ] = None,
    schedule: Annotated[
        str | None, typer.Option(help="Override kd.schedule: constant, anneal or pretrain.")
    ] = None,
    allow_partial: Annotated[
        bool, typer.Option(help="Train on the utterances a store covers when it misses some.")
    ] = False,
    epochs: Annotated[int | None, typer.Option(help="Override train.epochs.")] = None,
    seed: Annotated[int | None, typer.Option(help="Override train.seed.")] = None,
    train_split: Annotated[
        str, typer.Option(help="Split to train on; a subset such as train[:10%] too.")
    ] = "train",
    dev_split: Annotated[str, typer.Option(help="Split for early stopping.")] = "dev",
    view_ms: ViewMs = None,
    view_offset_ms: ViewOffsetMs = None,
    view_random: ViewRandom = None,
    view_seed: ViewSeed = None,
    init: Annotated[
        Path | None,
        typer.Option(help="Start from this checkpoint's weights (same student, config, labels)."),
    ] = None,
    loss: Annotated[
        str | None,
        typer.Option(
            help="ce (frame or clip labels) or ctc (the transcripts' tokens). Default: from "
            "--config, else ce."
        ),
    ] = None,
    units: Annotated[
        str | None,
        typer.Option(help="--loss ctc: the tokens: phones, chars or bpe:N (sentencepiece)."),
    ] = None,
    lexicon: Annotated[
        Path | None,
        typer.Option(help="--loss ctc with phones: the lexicon (default: beside the corpus)."),
    ] = None,
    teacher_online: Annotated[
        list[Path] | None,
        typer.Option(
            help="Distil from this teacher checkpoint run at every step (no store; repeat "
            "for an ensemble's mean; docs/learn.md)."
        ),
    ] = None,
    online_topk: Annotated[
        int | None,
        typer.Option(help="--teacher-online: classes kept per frame (0: all; default 8)."),
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace a run already in --out.")] = False,
) -> None:
    """Train on hard labels (frame alignments or clip labels) of a feature store, or with
    --loss ctc on the tokens of its transcripts, or, with --targets, distil from teacher
    targets stored by `kdpipe teach` (with --loss ctc: frame KL plus CTC).

    Runs under `torchrun --nproc-per-node N -m kdpipe learn ...` unchanged (DDP).
    """
    from kdpipe.corpus.views import view_from_options
    from kdpipe.learn.runs import build_run, train_run
    from kdpipe.schema import load_yaml

    check_number(epochs, "--epochs", low=1)
    check_number(seed, "--seed", low=0)
    check_number(temperature, "--temperature", low=0, low_open=True)
    check_number(alpha, "--alpha", low=0, high=1)
    _check_view(view_ms, view_offset_ms, view_seed)
    file: dict[str, Any] = {}
    if config is not None:
        file = load_yaml(config) or {}
        if not isinstance(file, dict):
            raise ConfigError(f"{config}: expected a mapping of learn settings")
    train_cfg = parse_overrides(set_, "--set")
    if epochs is not None:
        train_cfg["epochs"] = epochs
    if seed is not None:
        train_cfg["seed"] = seed
    kd_cfg = parse_overrides(kd, "--kd")
    for key, value in (("temperature", temperature), ("alpha", alpha), ("schedule", schedule)):
        if value is not None:
            kd_cfg[key] = value
    if allow_partial:
        kd_cfg["allow_partial"] = True
    online: dict[str, Any] = {}
    if teacher_online:
        online["model"] = [str(path) for path in teacher_online]
    if online_topk is not None:
        check_number(online_topk, "--online-topk", low=0)
        if not teacher_online and not file.get("teacher_online"):
            raise ConfigError("--online-topk is a setting of --teacher-online")
        online["topk"] = online_topk or None
    has_teacher = targets or file.get("targets") or online or file.get("teacher_online")
    if (kd_cfg or file.get("kd")) and not has_teacher:
        raise ConfigError("distillation settings given without --targets or --teacher-online")
    view = view_from_options(file.get("view"), view_ms, view_offset_ms, view_random, view_seed)
    ctc: dict[str, Any] = {}
    if units is not None:
        ctc["units"] = units
    if lexicon is not None:
        ctc["lexicon"] = str(lexicon)
    if ctc and (loss or file.get("loss")) != "ctc":
        raise ConfigError("--units and --lexicon are settings of --loss ctc")
    run = build_run(
        file,
        corpus=str(corpus),
        student=student,
        model=parse_overrides(model, "--model"),
        train=train_cfg,
        kd=kd_cfg,
        targets=_targets(targets or [], weight),
        view=None if view is None else view.to_dict(),
        init=None if init is None else str(init),
        train_split=train_split,
        dev_split=dev_split,
        where=str(config) if config is not None else "learn",
        loss=loss,
        ctc=ctc,
        teacher_online=online,
    )
    result = train_run(run, out, resume=resume, overwrite=overwrite)
    name = run.student
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for all
        what = "token accuracy (1 - TER)" if run.ctc is not None else "accuracy"
        console.print(
            f"[bold]{name}[/]: best dev {what} {result.best_dev_acc:.4f} at epoch "
            f"{result.best_epoch} ({result.epochs_run} epochs, {result.seconds:.0f} s) -> {out}"
        )


def evaluate(
    model: Annotated[
        list[Path],
        typer.Option(help="Checkpoint directory (model.safetensors + card); repeat to compare."),
    ],
    corpus: Annotated[Path, typer.Option(help="Feature store to score on.")],
    split: Annotated[
        str, typer.Option(help="Split to score; a subset such as test[:50%] too.")
    ] = "test",
    out: Annotated[
        Path | None,
        typer.Option(help="Write metrics.json, confusion.csv/png here (one subdir per model)."),
    ] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    trust_custom_code: Annotated[
        bool, typer.Option(help="Allow a checkpoint of a package.module:Class model.")
    ] = False,
    view_ms: ViewMs = None,
    view_offset_ms: ViewOffsetMs = None,
    view_random: ViewRandom = None,
    view_seed: ViewSeed = None,
    decode: Annotated[
        bool,
        typer.Option(
            "--decode",
            help="Also decode through a phone loop (priors and phone bigram from the train "
            "split) for the decoded phone error rate, and through a word graph for the WER "
            "when the corpus has transcripts and a lexicon.",
        ),
    ] = False,
    words: Annotated[
        bool | None,
        typer.Option(
            "--words/--no-words",
            help="--decode: insist on / skip the word error rate (default: when a lexicon "
            "is given or lies beside the corpus).",
        ),
    ] = None,
    lexicon: Annotated[
        Path | None,
        typer.Option(help="--decode: the word graph's lexicon (Kaldi lexicon.txt, CMUdict)."),
    ] = None,
    lm: Annotated[
        Path | None,
        typer.Option(help="--decode: an ARPA word LM; default: a bigram of the train transcripts."),
    ] = None,
    jobs: Annotated[int, typer.Option(help="--decode: decoding worker processes.")] = 1,
    acoustic_scale: Annotated[
        float | None,
        typer.Option(
            help="--decode: the acoustic scale of the pseudo log-likelihoods; default: the "
            "best of a sweep on the dev split."
        ),
    ] = None,
    beam: Annotated[float, typer.Option(help="--decode: the search beam.")] = 13.0,
    ctc_decode: Annotated[
        str | None,
        typer.Option(help="CTC models: greedy or prefix_beam (default: as trained)."),
    ] = None,
    ctc_beam: Annotated[int, typer.Option(help="CTC prefix_beam: prefixes kept.")] = 8,
    lm_weight: Annotated[
        float,
        typer.Option(help="CTC prefix_beam: weight of a token bigram of the train transcripts."),
    ] = 0.0,
) -> None:
    """Score checkpoints: accuracy, cross-entropy, error rates, confusion matrix.

    --split takes a subset too (test[:50%]); --view-ms scores crop windows (as teach cuts);
    --decode adds the decoded phone error rate (`decoded_per`) and, with words, the word
    error rate (`decoded_wer`); `collapsed_per` is the argmax collapsed without a decoder.
    """
    from rich.table import Table

    from kdpipe.corpus.views import view_from_options
    from kdpipe.decode.ctc import CtcDecodeOptions
    from kdpipe.decode.hybrid import DecodeOptions
    from kdpipe.learn.ctc_eval import evaluate_model

    _check_view(view_ms, view_offset_ms, view_seed)
    check_number(ctc_beam, "--ctc-beam", low=1)
    check_number(lm_weight, "--lm-weight", low=0)
    if lm_weight > 0 and ctc_decode != "prefix_beam":
        raise ConfigError("--lm-weight needs --ctc-decode prefix_beam")
    ctc_options = None
    if ctc_decode is not None:
        ctc_options = CtcDecodeOptions(method=ctc_decode, beam=ctc_beam, lm_weight=lm_weight)
    check_number(jobs, "--jobs", low=1)
    check_number(acoustic_scale, "--acoustic-scale", low=0, low_open=True)
    check_number(beam, "--beam", low=0, low_open=True)
    view = view_from_options(None, view_ms, view_offset_ms, view_random, view_seed)
    options = DecodeOptions(acoustic_scale=acoustic_scale, beam=beam) if decode else None
    reports = []
    for checkpoint in model:
        where = None if out is None else (out if len(model) == 1 else out / checkpoint.name)
        report = evaluate_model(
            checkpoint, corpus, split, where, trust_custom_code=trust_custom_code, view=view,
            decode=options, words=words, lexicon=lexicon, lm=lm, jobs=jobs, progress=not json_,
            ctc_options=ctc_options,
        )  # fmt: skip
        reports.append(report.to_dict())
    if json_:
        typer.echo(json.dumps(reports[0] if len(reports) == 1 else reports))
        return
    crop = "" if view is None else f" view {view.length_ms:g} ms"
    table = Table(title=f"{corpus} [{split}]{crop}")
    table.add_column("metric")
    for checkpoint in model:
        table.add_column(checkpoint.name, justify="right")
    skip = ("model", "corpus", "split", "view", "decode", "decode_words")
    keys = list(dict.fromkeys(key for report in reports for key in report if key not in skip))
    for key in keys:
        cells = [report.get(key, "") for report in reports]
        table.add_row(key, *(f"{v:.4f}" if isinstance(v, float) else str(v) for v in cells))
    console.print(table)


learn = report_errors(learn)
evaluate = report_errors(evaluate)
