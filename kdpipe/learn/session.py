"""What every training run shares, hard labels or soft targets: the run's identity
(``Run``) and its claim on the output directory, the device and process group, the student
built for a corpus, and the hand-over to ``trainer.train``."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from kdpipe import outputs
from kdpipe.console import err_console
from kdpipe.corpus.featstore import FeatureStore
from kdpipe.corpus.views import ViewConfig
from kdpipe.errors import ConfigError, FingerprintMismatch, LabelSetError, ModelError, TrainingError
from kdpipe.labels import LabelSet
from kdpipe.learn.ctc_config import CtcConfig
from kdpipe.learn.data import LabelledData
from kdpipe.learn.distributed import Dist, init_distributed, shutdown
from kdpipe.learn.train_config import TrainConfig
from kdpipe.learn.trainer import (
    LAST_STATE,
    BatchSource,
    Evaluate,
    Objective,
    TrainResult,
    train,
)
from kdpipe.levels import FRAME, LEVEL_WORDS, Level
from kdpipe.models import (
    ModelCard,
    build_model,
    load_checkpoint,
    make_card,
    pick_device,
    read_card,
    save_checkpoint,
)
from kdpipe.models.checkpoint import WEIGHTS_FILE
from kdpipe.models.protocol import model_level, model_subsampling
from kdpipe.models.registry import ModelSpec, config_diffs, is_custom
from kdpipe.schema import fingerprint

RUN_FILE = "run.json"  # what the run was asked to do; --resume refuses a different ask


@dataclass(frozen=True)
class Run:
    """What to train on what: the identity of a run, checked again on ``--resume``; the
    fields every run has (``supervised.SupervisedRun``, ``kd.KdRun``)."""

    corpus: str  # feature store location
    student: str  # registry name or package.module:Class
    model_config: dict[str, Any]
    train: TrainConfig
    train_split: str = "train"  # a split name or a subset spec such as train[:10%]
    dev_split: str = "dev"
    view: ViewConfig | None = None  # the crop (see the subclass); None: whole utterances
    init: str | None = None  # checkpoint to start from (fine-tuning); None: seeded init
    ctc: CtcConfig | None = None  # CTC on the transcripts' tokens; None: frame/clip labels

    def to_dict(self) -> dict[str, Any]:
        """The identity as JSON-able data: ``run.json``, the card's ``training`` and a
        recipe stage's fingerprint are made from it (``ctc`` only where set, so the
        identity of every other run is what it always was)."""
        out: dict[str, Any] = {
            "corpus": self.corpus,
            "student": self.student,
            "model_config": self.model_config,
            "train": self.train.to_dict(),
            "train_split": self.train_split,
            "dev_split": self.dev_split,
            "view": None if self.view is None else self.view.to_dict(),
            "init": self.init,
        }
        if self.ctc is not None:
            out["loss"] = "ctc"
            out["ctc"] = self.ctc.to_dict()
        return out

    def inputs(self) -> list[str]:
        """What the run reads: its output may be none of these, nor lie inside one."""
        return [self.corpus] + ([self.init] if self.init is not None else [])


def claim_output(out: Path, run: Run, resume: bool, overwrite: bool) -> None:
    """Refuse to mix two runs in one directory; record this run's identity.

    A directory holding a finished checkpoint or a resumable state is refused unless
    ``--resume`` (same run) or ``--overwrite``; one a failed run left without either (only
    its ``run.json``) is claimed again, so the corrected command may train into it.
    ``--resume`` with no state to continue from says so and trains from the start, unless a
    checkpoint is there (then it refuses: retraining would replace it). A folder that is
    not a training run (a file, a Zarr store) is refused even with ``--overwrite``.
    Under ``torchrun`` only rank 0 checks and writes; if it refuses, torchrun stops the rest.
    """
    if int(os.environ.get("RANK", "0")) != 0:
        return
    outputs.refuse_inputs(out, run.inputs(), outputs.CHECKPOINT)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder for the checkpoint")
    if (out / "zarr.json").exists():
        raise ConfigError(f"--out {out} is a Zarr store, not a training run; train elsewhere")
    ident = run.to_dict()
    ident["fingerprint"] = fingerprint(ident)
    record, last = out / RUN_FILE, out / LAST_STATE
    finished = (out / WEIGHTS_FILE).exists()
    if resume:
        if last.is_file():
            if record.is_file():  # a key missing before (added since) counts as None
                before = _read_record(record)
                diffs = sorted(
                    key for key in ident if key != "fingerprint" and before.get(key) != ident[key]
                )
                if diffs:
                    raise TrainingError(
                        f"--resume: {out} holds a different run (differs in {', '.join(diffs)})"
                    )
            return
        if finished:
            raise TrainingError(
                f"--resume: {out} holds a checkpoint but no {LAST_STATE} to continue from; "
                "use --overwrite to train again"
            )
        err_console.print(
            f"[yellow]--resume: no {LAST_STATE} in {out}: nothing to resume, training from "
            "the start[/]",
            highlight=False,
            soft_wrap=True,
        )
    elif last.exists() or finished:
        if not overwrite:
            raise TrainingError(
                f"{out} already holds a training run; use --resume to continue it or "
                "--overwrite to start again"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(ident, indent=1, sort_keys=True) + "\n")


def _read_record(record: Path) -> dict[str, Any]:
    try:
        data = json.loads(record.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise TrainingError(f"{record}: not readable JSON ({error}); use --overwrite") from None
    if not isinstance(data, dict):
        raise TrainingError(f"{record}: not a run record; use --overwrite")
    return data


@contextmanager
def session(cfg: TrainConfig) -> Iterator[tuple[Dist, torch.device]]:
    """Threads, device (this rank's GPU under torchrun) and process group, torn down after."""
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    device = pick_device(cfg.device)
    dist = init_distributed(device)
    if device.type == "cuda" and dist.enabled:
        device = torch.device("cuda", dist.local_rank)
    try:
        yield dist, device
    finally:
        shutdown(dist)


def build_student(
    name: str,
    config: dict[str, Any],
    corpus: FeatureStore,
    seed: int,
    init: str | Path | None = None,
    labels: LabelSet | None = None,
) -> tuple[torch.nn.Module, Level, int]:
    """The student for ``corpus`` with seeded initial weights, or with the weights of
    checkpoint ``init`` (fine-tuning); (model, level, subsampling).

    ``labels`` are the student's classes when they are not the corpus' (a CTC model's
    tokens and blank: a frame-level model whatever the corpus' task). ``ModelError`` if
    the model's level does not fit, or if ``init`` was not made by the same architecture,
    config, features and label set.
    """
    torch.manual_seed(seed)  # same initial weights on every rank and every run
    classes = corpus.labels if labels is None else labels
    model = build_model(name, corpus.dim, len(classes), config)
    level = model_level(model)
    wanted = corpus.level if labels is None else FRAME
    if level != wanted:
        task = corpus.task if labels is None else "CTC"
        raise ModelError(
            f"{name} is a {LEVEL_WORDS[level]}-level model but {corpus.location} is a "
            f"{task} task; use a {LEVEL_WORDS[wanted]}-level model"
        )
    if init is not None:
        load_init(model, init, corpus, classes)
    return model, level, model_subsampling(model)


def in_memory_student(
    run: Run, corpus: FeatureStore
) -> tuple[LabelledData, LabelledData, torch.nn.Module, int]:
    """A run on the corpus' hard labels held in memory: its train and dev splits (through
    the run's view) and its student; (train, dev, model, subsampling)."""
    train_data = LabelledData.from_store(corpus, run.train_split, run.view)
    dev_data = LabelledData.from_store(corpus, run.dev_split, run.view)
    model, _, subsampling = build_student(
        run.student, run.model_config, corpus, run.train.seed, init=run.init
    )
    return train_data, dev_data, model, subsampling


def load_init(
    model: torch.nn.Module, init: str | Path, corpus: FeatureStore, labels: LabelSet
) -> None:
    """Copy the weights of checkpoint ``init`` into ``model`` (built by ``build_model``).

    Refuses (``ModelError``, one line naming what differs) unless the checkpoint's
    architecture, model config (as ``make_card`` records it), number of features, label
    set and feature fingerprint (the features it was trained on) equal the new model's.
    Custom code is trusted only when the student is itself a ``package.module:Class`` (its
    code is imported to build the student anyway).
    """
    spec = getattr(model, "kdpipe_spec", None)
    if not isinstance(spec, ModelSpec):
        raise ModelError(f"cannot load init checkpoint {init} into a model not made by build_model")
    card = read_card(init)  # no code and no weights read yet
    where = f"init checkpoint {init}"
    if card.architecture != spec.architecture:
        raise ModelError(
            f"{where} is a {card.architecture!r} model but the student is {spec.architecture!r}"
        )
    diffs = config_diffs(card.model_config, spec.config)
    if diffs:
        raise ModelError(f"{where}: model config differs from the student's: {', '.join(diffs)}")
    if card.num_features != spec.num_features:
        raise ModelError(
            f"{where} takes {card.num_features} features, corpus {corpus.location} has "
            f"{spec.num_features}"
        )
    try:
        what = f"corpus {corpus.location}"
        card.check_compatible(
            labels, corpus.feature_fingerprint, what, features=corpus.config, name=where
        )
    except (LabelSetError, FingerprintMismatch) as error:
        raise ModelError(str(error)) from None
    trained, _ = load_checkpoint(init, "cpu", trust_custom_code=is_custom(spec.architecture))
    model.load_state_dict(trained.state_dict(), strict=True)


def run_card(
    model: torch.nn.Module,
    run: Run,
    corpus: FeatureStore,
    objective: str,
    *,
    labels: LabelSet | None = None,
    data_fingerprint: str | None = None,
    ctc: dict[str, Any] | None = None,
    **training: Any,
) -> ModelCard:
    """The card of a run's checkpoint: the corpus' features, the run's identity and its
    ``objective`` (hard, kd, kd-online, ctc), ``training`` extras and the parameter count;
    ``labels`` are the corpus' unless given (a CTC model's tokens), the data fingerprint the
    corpus' unless given (a target store's)."""
    return make_card(
        model,
        labels=corpus.labels if labels is None else labels,
        features=corpus.config,
        feature_fingerprint=corpus.feature_fingerprint,
        data_fingerprint=corpus.fingerprint if data_fingerprint is None else data_fingerprint,
        training={
            **run.to_dict(),
            "objective": objective,
            **training,
            "parameters": sum(param.numel() for param in model.parameters()),
        },
        ctc=ctc,
    )


def fit(
    model: torch.nn.Module,
    source: LabelledData | BatchSource,
    dev_data: LabelledData,
    cfg: TrainConfig,
    out: Path,
    objective: Objective,
    card: ModelCard,
    *,
    resume: bool,
    dist: Dist,
    device: torch.device,
    progress: bool,
    evaluate: Evaluate | None = None,
) -> TrainResult:
    """Train on ``device``; each new best dev epoch is saved as the checkpoint in ``out``
    (``evaluate`` scores dev, ``trainer.train``)."""

    def save_best(best: torch.nn.Module, metrics: dict[str, Any]) -> None:
        save_checkpoint(out, best, card.replace(metrics=metrics))

    model.to(device)
    return train(model, source, dev_data, cfg, out, objective, save_best, resume=resume,
                 dist=dist, device=device, progress=progress, evaluate=evaluate)  # fmt: skip
