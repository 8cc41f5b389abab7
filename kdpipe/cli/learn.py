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


def _targets(items: list[str], weights: list[float] | None, file: Any) -> list[tuple]:
    """Stores and weights from --targets/--weight, else from the config's ``targets``
    (paths, or ``{path, weight, split}`` mappings)."""
    from kdpipe.errors import ConfigError

    if items:
        w = list(weights or [])
        if w and len(w) != len(items):
            raise ConfigError(f"--weight given {len(w)} times for {len(items)} --targets")
        return [(t, float(w[i]) if w else 1.0) for i, t in enumerate(items)]
    out: list[tuple] = []
    for t in file or []:
        if isinstance(t, str):
            out.append((t, 1.0))
        elif isinstance(t, dict) and set(t) <= {"path", "weight", "split"} and "path" in t:
            one = (str(t["path"]), float(t.get("weight", 1.0)))
            out.append((*one, str(t["split"])) if "split" in t else one)
        else:
            raise ConfigError(f"targets: expected a path or {{path, weight, split}}, got {t!r}")
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
        typer.Option(help="YAML with optional keys student, model, train, kd, targets."),
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
    train_split: Annotated[str, typer.Option(help="Split to train on.")] = "train",
    dev_split: Annotated[str, typer.Option(help="Split for early stopping.")] = "dev",
    resume: Annotated[bool, typer.Option(help="Continue the run in --out.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace a run already in --out.")] = False,
) -> None:
    """Train on hard labels (frame alignments or clip labels) of a feature store, or, with
    --targets, distil from teacher targets stored by `kdpipe teach`.

    Runs under `torchrun --nproc-per-node N -m kdpipe learn ...` unchanged (DDP).
    """
    from kdpipe.config import check_keys, load_yaml
    from kdpipe.errors import ConfigError
    from kdpipe.learn.config import TrainConfig

    keys = {"student", "model", "train", "kd", "targets"}
    file: dict[str, Any] = {}
    if config is not None:
        file = load_yaml(config) or {}
        if not isinstance(file, dict) or set(file) - keys:
            raise ConfigError(f"{config}: expected a mapping with keys {', '.join(sorted(keys))}")
    train_cfg = {**(file.get("train") or {}), **parse_overrides(set_, "--set")}
    if epochs is not None:
        train_cfg["epochs"] = epochs
    if seed is not None:
        train_cfg["seed"] = seed
    check_keys(train_cfg, TrainConfig, "train")
    name = student or file.get("student")
    if not name:
        raise ConfigError("no student: give --student or `student:` in --config")
    model_cfg = {**(file.get("model") or {}), **parse_overrides(model, "--model")}
    stores = _targets(targets or [], weight, file.get("targets"))
    kd_cfg = {**(file.get("kd") or {}), **parse_overrides(kd, "--kd")}
    for key, value in (("temperature", temperature), ("alpha", alpha), ("schedule", schedule)):
        if value is not None:
            kd_cfg[key] = value
    if allow_partial:
        kd_cfg["allow_partial"] = True
    if stores:
        from kdpipe.learn.kd import KdRun, train_kd
        from kdpipe.learn.kdconfig import KdConfig

        check_keys(kd_cfg, KdConfig, "kd")
        run_kd = KdRun(
            targets=tuple(stores),
            corpus=str(corpus),
            student=name,
            model_config=model_cfg,
            train=TrainConfig.from_dict(train_cfg),
            kd=KdConfig.from_dict(kd_cfg),
            train_split=train_split,
            dev_split=dev_split,
        )
        result = train_kd(run_kd, out, resume=resume, overwrite=overwrite)
    else:
        from kdpipe.learn.supervised import SupervisedRun, train_supervised

        if kd_cfg:
            raise ConfigError("distillation settings given without --targets")
        run = SupervisedRun(
            corpus=str(corpus),
            student=name,
            model_config=model_cfg,
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
        table.add_column(m.name, justify="right")
    keys = [k for k in reports[0] if k not in ("model", "corpus", "split")]
    for k in keys:
        cells = [r.get(k, "") for r in reports]
        table.add_row(k, *(f"{v:.4f}" if isinstance(v, float) else str(v) for v in cells))
    console.print(table)


learn = report_errors(learn)
evaluate = report_errors(evaluate)
