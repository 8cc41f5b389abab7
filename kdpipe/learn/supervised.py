"""Train a model on hard labels from a feature store: teachers and baselines.

``kdpipe learn --corpus FEATS --student NAME --out DIR`` calls ``train_supervised``. The
output directory is a checkpoint (``model.safetensors`` + ``card.json`` of the best dev
epoch) plus ``metrics.jsonl``, ``curves.png`` and ``last.pt`` (for ``--resume``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kdpipe.corpus.featstore import FeatureStore
from kdpipe.learn import session
from kdpipe.learn.trainer import HardLabels, TrainResult


@dataclass(frozen=True)
class SupervisedRun(session.Run):
    """What to train on what, on hard labels: the identity of a run, checked again on
    ``--resume``. ``view`` crops train and dev utterances; None: whole utterances."""


def train_supervised(
    run: SupervisedRun,
    out: str | Path,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Train ``run.student`` on hard labels; returns the result of the best dev epoch."""
    out = Path(out)
    cfg = run.train
    with session.session(cfg) as (dist, device):
        store = FeatureStore.open(run.corpus)
        train_data, dev_data, model, subsampling = session.in_memory_student(run, store)
        session.claim_output(out, run, resume, overwrite)  # after every check on the inputs
        objective = HardLabels(train_data.level, subsampling, cfg.label_smoothing)
        card = session.run_card(model, run, store, "hard")
        return session.fit(model, train_data, dev_data, cfg, out, objective, card,
                           resume=resume, dist=dist, device=device, progress=progress)  # fmt: skip
