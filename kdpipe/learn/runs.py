"""One way to say what to train: a learn config (YAML) plus overrides, made into a run.

``kdpipe learn`` and the recipe runner (``kdpipe run``) both call ``build_run`` and
``train_run``; the YAML keys are those of ``kdpipe learn --config`` (docs/learn.md):
``student``, ``model``, ``train``, ``kd``, ``targets``, ``view``, ``init``, and ``loss``
(``ce`` or ``ctc``) with ``ctc`` (the units and their lexicon, ``CtcConfig``), and
``teacher_online`` (``{model, topk}``: distil from a teacher run at every step instead of
a store, ``learn.online``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from kdpipe.corpus.views import ViewConfig
from kdpipe.errors import ConfigError
from kdpipe.learn.ctc import train_ctc
from kdpipe.learn.ctc_config import LOSSES, CtcConfig
from kdpipe.learn.kd import KdRun, train_kd
from kdpipe.learn.kd_config import KdConfig
from kdpipe.learn.online import ONLINE_TOPK, OnlineRun, train_online
from kdpipe.learn.quality_filter import KEYS as QUALITY_KEYS
from kdpipe.learn.quality_filter import QualityFilter
from kdpipe.learn.supervised import SupervisedRun, train_supervised
from kdpipe.learn.train_config import TrainConfig
from kdpipe.learn.trainer import TrainResult
from kdpipe.schema import check_keys

CONFIG_KEYS = ("student", "model", "train", "kd", "targets", "view", "init", "loss", "ctc",
               "teacher_online")  # fmt: skip
ONLINE_KEYS = {"model", "topk"}


TARGET_KEYS = {"path", "weight", "split", *QUALITY_KEYS}


def parse_targets(items: Any, where: str = "targets") -> list[tuple]:
    """Target stores as ``(location, weight[, split[, quality thresholds]])`` from paths or
    ``{path, weight, split, min_agreement, max_entropy, below}`` mappings."""
    out: list[tuple] = []
    for item in items or []:
        if isinstance(item, str):
            out.append((item, 1.0))
        elif isinstance(item, dict) and set(item) <= TARGET_KEYS and "path" in item:
            weight = item.get("weight", 1.0)
            number = isinstance(weight, (int, float)) and not isinstance(weight, bool)
            if not number or not math.isfinite(weight) or weight <= 0:
                raise ConfigError(f"{where}: weight must be a finite number > 0, got {weight!r}")
            store: tuple = (str(item["path"]), float(weight))
            split = str(item["split"]) if "split" in item else None
            try:
                quality = QualityFilter.from_dict(item).to_dict()
            except ConfigError as error:
                raise ConfigError(f"{where}: {error}") from None
            if quality:
                store = (*store, split, quality)
            elif split is not None:
                store = (*store, split)
            out.append(store)
        else:
            raise ConfigError(
                f"{where}: expected a path or {{path, weight, split, min_agreement, "
                f"max_entropy, below}}, got {item!r}"
            )
    return out


def build_run(
    file: dict[str, Any] | None,
    *,
    corpus: str,
    student: str | None = None,
    model: dict[str, Any] | None = None,
    train: dict[str, Any] | None = None,
    kd: dict[str, Any] | None = None,
    targets: list[tuple] | None = None,
    view: dict[str, Any] | None = None,
    init: str | None = None,
    train_split: str = "train",
    dev_split: str = "dev",
    where: str = "learn config",
    loss: str | None = None,
    ctc: dict[str, Any] | None = None,
    teacher_online: dict[str, Any] | None = None,
) -> SupervisedRun | KdRun | OnlineRun:
    """The run that ``file`` (a parsed learn YAML) with these overrides asks for.

    Overrides win key by key (``train``, ``model``, ``kd`` merge into the file's mappings);
    ``targets`` replace the file's. A distillation run when there are targets, else a
    hard-label run; ``ConfigError`` for unknown keys, values of the wrong type or range, or
    kd settings without targets, naming ``where`` (the config file, the recipe stage).
    ``loss``, ``ctc`` and ``teacher_online`` override the file's (merging key by key).
    """
    try:
        return _build_run(file, corpus=corpus, student=student, model=model, train=train,
                          kd=kd, targets=targets, view=view, init=init,
                          train_split=train_split, dev_split=dev_split, where=where,
                          loss=loss, ctc=ctc, teacher_online=teacher_online)  # fmt: skip
    except ConfigError as error:
        if str(error).startswith(where):
            raise
        raise ConfigError(f"{where}: {error}") from None


def _section(file: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    """The mapping under ``key`` of a learn config ({} when absent)."""
    value = file.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: {key} must be a mapping, got {value!r}")
    return value


def _build_run(
    file: dict[str, Any] | None,
    *,
    corpus: str,
    student: str | None,
    model: dict[str, Any] | None,
    train: dict[str, Any] | None,
    kd: dict[str, Any] | None,
    targets: list[tuple] | None,
    view: dict[str, Any] | None,
    init: str | None,
    train_split: str,
    dev_split: str,
    where: str,
    loss: str | None,
    ctc: dict[str, Any] | None,
    teacher_online: dict[str, Any] | None,
) -> SupervisedRun | KdRun | OnlineRun:
    file = dict(file or {})
    if set(file) - set(CONFIG_KEYS):
        bad = sorted(set(file) - set(CONFIG_KEYS))
        raise ConfigError(f"{where}: unknown key(s) {bad}; known: {', '.join(CONFIG_KEYS)}")
    name = student or file.get("student")
    if not name:
        raise ConfigError(f"{where}: no student: give --student or `student:` in the config")
    if not isinstance(name, str):
        raise ConfigError(f"{where}: student must be a model name, got {name!r}")
    for key in ("init",):
        if file.get(key) is not None and not isinstance(file[key], str):
            raise ConfigError(f"{where}: {key} must be a path, got {file[key]!r}")
    train_cfg = {**_section(file, "train", where), **(train or {})}
    check_keys(train_cfg, TrainConfig, "train")
    model_cfg = {**_section(file, "model", where), **(model or {})}
    kd_cfg = {**_section(file, "kd", where), **(kd or {})}
    if file.get("targets") is not None and not isinstance(file["targets"], list):
        raise ConfigError(f"{where}: targets must be a list, got {file['targets']!r}")
    stores = targets if targets else parse_targets(file.get("targets"), "targets")
    view_cfg = view if view is not None else file.get("view")
    loss_name = loss or file.get("loss") or "ce"
    if loss_name not in LOSSES:
        raise ConfigError(f"{where}: loss must be one of {', '.join(LOSSES)}, got {loss_name!r}")
    ctc_cfg = {**_section(file, "ctc", where), **(ctc or {})}
    if ctc_cfg and loss_name != "ctc":
        raise ConfigError(f"{where}: ctc settings given but the loss is {loss_name!r}")
    check_keys(ctc_cfg, CtcConfig, "ctc")
    common: dict[str, Any] = {  # the fields of session.Run
        "corpus": str(corpus),
        "student": str(name),
        "model_config": model_cfg,
        "train": TrainConfig.from_dict(train_cfg),
        "train_split": train_split,
        "dev_split": dev_split,
        "view": None if view_cfg is None else ViewConfig.from_dict(view_cfg),
        "init": init or file.get("init"),
        "ctc": CtcConfig.from_dict(ctc_cfg) if loss_name == "ctc" else None,
    }
    online = {**_section(file, "teacher_online", where), **(teacher_online or {})}
    if online:
        if set(online) - ONLINE_KEYS or "model" not in online:
            raise ConfigError(f"{where}: teacher_online takes model (a checkpoint) and topk, "
                              f"got {sorted(online)}")  # fmt: skip
        if stores or common["ctc"] is not None:
            raise ConfigError(f"{where}: teacher_online distils without a store and without "
                              "CTC: drop the targets (or the ctc loss)")  # fmt: skip
        check_keys(kd_cfg, KdConfig, "kd")
        given = online["model"]
        models = [given] if isinstance(given, str) else given
        if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
            raise ConfigError(f"{where}: teacher_online model is a path or a list of paths")
        return OnlineRun(teachers=tuple(models), topk=online.get("topk", ONLINE_TOPK),
                         kd=KdConfig.from_dict(kd_cfg), **common)  # fmt: skip
    if stores:
        check_keys(kd_cfg, KdConfig, "kd")
        return KdRun(targets=tuple(stores), kd=KdConfig.from_dict(kd_cfg), **common)
    if kd_cfg:
        raise ConfigError(
            f"{where}: distillation settings (kd) given without target stores (or teacher_online)"
        )
    return SupervisedRun(**common)


def train_run(
    run: SupervisedRun | KdRun | OnlineRun,
    out: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Train ``run`` into ``out``: ``train_kd``, ``train_online``, ``train_ctc`` or
    ``train_supervised``."""
    if isinstance(run, OnlineRun):
        return train_online(run, out, resume=resume, overwrite=overwrite, progress=progress)
    if isinstance(run, KdRun):
        return train_kd(run, out, resume=resume, overwrite=overwrite, progress=progress)
    if run.ctc is not None:
        return train_ctc(run, out, resume=resume, overwrite=overwrite, progress=progress)
    return train_supervised(run, out, resume=resume, overwrite=overwrite, progress=progress)
