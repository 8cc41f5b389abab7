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

from kdpipe.corpus.views import ViewConfig
from kdpipe.errors import ConfigError, TrainingError
from kdpipe.learn.train_config import TrainConfig
from kdpipe.learn.trainer import LAST_STATE, HardLabels, TrainResult
from kdpipe.schema import fingerprint

RUN_FILE = "run.json"  # what the run was asked to do; --resume refuses a different ask


@dataclass(frozen=True)
class SupervisedRun:
    """What to train on what: the identity of a run, checked again on ``--resume``."""

    corpus: str  # feature store location
    student: str  # registry name or package.module:Class
    model_config: dict[str, Any]
    train: TrainConfig
    train_split: str = "train"  # a split name or a subset spec such as train[:10%]
    dev_split: str = "dev"
    view: ViewConfig | None = None  # crop train and dev utterances; None: whole utterances
    init: str | None = None  # checkpoint to start from (fine-tuning); None: seeded init

    def to_dict(self) -> dict[str, Any]:
        return {
            "corpus": self.corpus,
            "student": self.student,
            "model_config": self.model_config,
            "train": self.train.to_dict(),
            "train_split": self.train_split,
            "dev_split": self.dev_split,
            "view": None if self.view is None else self.view.to_dict(),
            "init": self.init,
        }


def train_supervised(
    run: SupervisedRun,
    out: str | Path,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Train ``run.student`` on hard labels; returns the result of the best dev epoch."""
    from kdpipe.corpus.featstore import FeatureStore
    from kdpipe.learn.data import LabelledData
    from kdpipe.learn.session import build_student, fit, session
    from kdpipe.models import make_card

    out = Path(out)
    cfg = run.train
    with session(cfg) as (dist, device):
        store = FeatureStore.open(run.corpus)
        train_data = LabelledData.from_store(store, run.train_split, run.view)
        dev_data = LabelledData.from_store(store, run.dev_split, run.view)
        model, _, sub = build_student(run.student, run.model_config, store, cfg.seed, init=run.init)
        claim_output(out, run, resume, overwrite)  # after every check on the inputs
        objective = HardLabels(train_data.level, sub, cfg.label_smoothing)
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
        return fit(model, train_data, dev_data, cfg, out, objective, card,
                   resume=resume, dist=dist, device=device, progress=progress)  # fmt: skip


def claim_output(out: Path, run: SupervisedRun, resume: bool, overwrite: bool) -> None:
    """Refuse to mix two runs in one directory; record this run's identity.

    Under ``torchrun`` only rank 0 checks and writes; if it refuses, torchrun stops the rest.
    """
    import os

    if int(os.environ.get("RANK", "0")) != 0:
        return
    if run.init is not None and Path(run.init).resolve() == out.resolve():
        raise ConfigError(f"init {run.init} is the output directory; train into another one")
    ident = run.to_dict()
    ident["fingerprint"] = fingerprint(ident)
    record = out / RUN_FILE
    if resume:
        if record.is_file():  # a key missing before (added since) counts as None
            before = json.loads(record.read_text())
            diffs = sorted(k for k in ident if k != "fingerprint" and before.get(k) != ident[k])
            if diffs:
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
