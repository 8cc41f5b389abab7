"""``kdpipe learn``: train a model (a teacher, a baseline or a student) and ``kdpipe eval``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from kdpipe.cli._common import console, report_errors


def parse_overrides(items: list[str] | None, what: str) -> dict[str, Any]:
    """``["hidden=256", "dropout=0.1"]`` -> ``{"hidden": 256, "dropout": 0.1}`` (YAML values)."""
    import yaml

    from kdpipe.errors import ConfigError

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{what}: expected KEY=VALUE, got {item!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


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
    config: Annotated[
        Path | None, typer.Option(help="YAML with optional keys student, model, train.")
    ] = None,
    model: Annotated[
        list[str] | None, typer.Option("--model", "-m", help="Model setting KEY=VALUE (repeat).")
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", "-s", help="Training setting KEY=VALUE (repeat).")
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Override train.epochs.")] = None,
    seed: Annotated[int | None, typer.Option(help="Override train.seed.")] = None,
    train_split: Annotated[str, typer.Option(help="Split to train on.")] = "train",
    dev_split: Annotated[str, typer.Option(help="Split for early stopping.")] = "dev",
    resume: Annotated[bool, typer.Option(help="Continue the run in --out.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace a run already in --out.")] = False,
) -> None:
    """Train on hard labels (frame alignments or clip labels) of a feature store.

    Runs under `torchrun --nproc-per-node N -m kdpipe learn ...` unchanged (DDP).
    """
    from kdpipe.config import check_keys, load_yaml
    from kdpipe.errors import ConfigError
    from kdpipe.learn.config import TrainConfig
    from kdpipe.learn.supervised import SupervisedRun, train_supervised

    file: dict[str, Any] = {}
    if config is not None:
        file = load_yaml(config) or {}
        if not isinstance(file, dict) or set(file) - {"student", "model", "train"}:
            raise ConfigError(f"{config}: expected a mapping with keys student, model, train")
    train_cfg = {**(file.get("train") or {}), **parse_overrides(set_, "--set")}
    if epochs is not None:
        train_cfg["epochs"] = epochs
    if seed is not None:
        train_cfg["seed"] = seed
    check_keys(train_cfg, TrainConfig, "train")
    name = student or file.get("student")
    if not name:
        raise ConfigError("no student: give --student or `student:` in --config")
    run = SupervisedRun(
        corpus=str(corpus),
        student=name,
        model_config={**(file.get("model") or {}), **parse_overrides(model, "--model")},
        train=TrainConfig.from_dict(train_cfg),
        train_split=train_split,
        dev_split=dev_split,
    )
    result = train_supervised(run, out, resume=resume, overwrite=overwrite)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for all
        console.print(
            f"[bold]{name}[/]: best dev accuracy {result.best_dev_acc:.4f} at epoch "
            f"{result.best_epoch} ({result.epochs_run} epochs, {result.seconds:.0f} s) -> {out}"
        )


def evaluate(
    model: Annotated[
        list[Path],
        typer.Option(help="Checkpoint directory (model.safetensors + card); repeat to compare."),
    ],
    corpus: Annotated[Path, typer.Option(help="Feature store to score on.")],
    split: Annotated[str, typer.Option(help="Split to score.")] = "test",
    out: Annotated[
        Path | None,
        typer.Option(help="Write metrics.json, confusion.csv/png here (one subdir per model)."),
    ] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    trust_custom_code: Annotated[
        bool, typer.Option(help="Allow a checkpoint of a package.module:Class model.")
    ] = False,
) -> None:
    """Score checkpoints: accuracy, cross-entropy, phone error rate, confusion matrix."""
    import json

    from rich.table import Table

    from kdpipe.learn.evaluate import evaluate_checkpoint

    reports = []
    for m in model:
        where = None if out is None else (out if len(model) == 1 else out / m.name)
        reports.append(
            evaluate_checkpoint(
                m, corpus, split, where, trust_custom_code=trust_custom_code
            ).to_dict()
        )
    if json_:
        typer.echo(json.dumps(reports[0] if len(reports) == 1 else reports))
        return
    table = Table(title=f"{corpus} [{split}]")
    table.add_column("metric")
    for m in model:
        table.add_column(str(m), justify="right")
    keys = [k for k in reports[0] if k not in ("model", "corpus", "split")]
    for k in keys:
        cells = [r.get(k, "") for r in reports]
        table.add_row(k, *(f"{v:.4f}" if isinstance(v, float) else str(v) for v in cells))
    console.print(table)


learn = report_errors(learn)
evaluate = report_errors(evaluate)
