"""Train a model on hard labels from a feature store: teachers and baselines.

``kdpipe learn --corpus FEATS --student NAME --out DIR`` calls ``train_supervised``. The
output directory is a checkpoint (``model.safetensors`` + ``card.json`` of the best dev
epoch) plus ``metrics.jsonl``, ``curves.png`` and ``last.pt`` (for ``--resume``).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdpipe.config import fingerprint
from kdpipe.errors import ModelError, TrainingError
from kdpipe.learn.config import TrainConfig
from kdpipe.learn.trainer import LAST_STATE, HardLabels, TrainResult, train

RUN_FILE = "run.json"  # what the run was asked to do; --resume refuses a different ask


@dataclass(frozen=True)
class SupervisedRun:
    """What to train on what: the identity of a run, checked again on ``--resume``."""

    corpus: str  # feature store location
    student: str  # registry name or package.module:Class
    model_config: dict[str, Any]
    train: TrainConfig
    train_split: str = "train"
    dev_split: str = "dev"

    def to_dict(self) -> dict[str, Any]:
        return {
            "corpus": self.corpus,
            "student": self.student,
            "model_config": self.model_config,
            "train": self.train.to_dict(),
            "train_split": self.train_split,
            "dev_split": self.dev_split,
        }


def task_level(task: str) -> str:
    """The model level a corpus task needs: frame alignments -> frame, clips -> utterance."""
    return "frame" if task == "frame" else "utterance"


def train_supervised(
    run: SupervisedRun,
    out: str | Path,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Train ``run.student`` on hard labels; returns the result of the best dev epoch."""
    import torch

    from kdpipe.corpus.featstore import FeatureStore
    from kdpipe.learn.data import LabelledData
    from kdpipe.learn.distributed import init_distributed, shutdown
    from kdpipe.models import build_model, make_card, pick_device, save_checkpoint
    from kdpipe.models.protocol import model_level, model_subsampling

    out = Path(out)
    cfg = run.train
    _claim_output(out, run, resume, overwrite)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    device = pick_device(cfg.device)
    dist = init_distributed(device)
    if device.type == "cuda" and dist.enabled:
        device = torch.device("cuda", dist.local_rank)
    try:
        store = FeatureStore.open(run.corpus)
        train_data = LabelledData.from_store(store, run.train_split)
        dev_data = LabelledData.from_store(store, run.dev_split)
        torch.manual_seed(cfg.seed)  # same initial weights on every rank and every run
        model = build_model(run.student, store.dim, len(store.labels), run.model_config)
        level = model_level(model)
        if level != task_level(store.task):
            raise ModelError(
                f"{run.student} is a {level}-level model but {run.corpus} is a {store.task} "
                f"task; use a {task_level(store.task)}-level model"
            )
        model.to(device)
        objective = HardLabels(train_data.level, model_subsampling(model), cfg.label_smoothing)
        card = make_card(
            model,
            labels=store.labels,
            features=store.config,
            feature_fingerprint=store.config.fingerprint,
            data_fingerprint=store.fingerprint,
            training={
                **run.to_dict(),
                "objective": "hard",
                "parameters": sum(p.numel() for p in model.parameters()),
            },
        )

        def save_best(m: torch.nn.Module, metrics: dict[str, Any]) -> None:
            save_checkpoint(out, m, card.replace(metrics=metrics))

        return train(
            model,
            train_data,
            dev_data,
            cfg,
            out,
            objective,
            save_best,
            resume=resume,
            dist=dist,
            device=device,
            progress=progress,
        )
    finally:
        shutdown(dist)


def _claim_output(out: Path, run: SupervisedRun, resume: bool, overwrite: bool) -> None:
    """Refuse to mix two runs in one directory; record this run's identity.

    Under ``torchrun`` only rank 0 checks and writes; if it refuses, torchrun stops the rest.
    """
    import os

    if int(os.environ.get("RANK", "0")) != 0:
        return
    ident = run.to_dict()
    ident["fingerprint"] = fingerprint(ident)
    record = out / RUN_FILE
    if resume:
        if record.is_file():
            before = json.loads(record.read_text())
            if before.get("fingerprint") != ident["fingerprint"]:
                diffs = sorted(k for k in ident if k != "fingerprint" and before.get(k) != ident[k])
                raise TrainingError(
                    f"--resume: {out} holds a different run (differs in {', '.join(diffs)})"
                )
        return
    if (out / LAST_STATE).exists() or record.exists():
        if not overwrite:
            raise TrainingError(
                f"{out} already holds a training run; use --resume to continue it or "
                "--overwrite to start again"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(ident, indent=1, sort_keys=True) + "\n")
