"""What every training run shares, hard labels or soft targets: the device and process
group, the student built for a corpus, and the hand-over to ``trainer.train``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from kdpipe.errors import ModelError
from kdpipe.learn.config import TrainConfig
from kdpipe.learn.distributed import Dist

if TYPE_CHECKING:
    from kdpipe.corpus.featstore import FeatureStore
    from kdpipe.learn.trainer import Objective, TrainResult
    from kdpipe.models import ModelCard


def task_level(task: str) -> str:
    """The model level a corpus task needs: frame alignments -> frame, clips -> utterance."""
    return "frame" if task == "frame" else "utterance"


@contextmanager
def session(cfg: TrainConfig) -> Iterator[tuple[Dist, torch.device]]:
    """Threads, device (this rank's GPU under torchrun) and process group, torn down after."""
    from kdpipe.learn.distributed import init_distributed, shutdown
    from kdpipe.models import pick_device

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
    name: str, config: dict[str, Any], corpus: FeatureStore, seed: int
) -> tuple[torch.nn.Module, str, int]:
    """The student for ``corpus`` with seeded initial weights; (model, level, subsampling).

    ``ModelError`` if the model's level does not fit the corpus task.
    """
    from kdpipe.models import build_model
    from kdpipe.models.protocol import model_level, model_subsampling

    torch.manual_seed(seed)  # same initial weights on every rank and every run
    model = build_model(name, corpus.dim, len(corpus.labels), config)
    level, need = model_level(model), task_level(corpus.task)
    if level != need:
        raise ModelError(
            f"{name} is a {level}-level model but {corpus.location} is a {corpus.task} "
            f"task; use a {need}-level model"
        )
    return model, level, model_subsampling(model)


def fit(
    model: torch.nn.Module,
    source: Any,
    dev_data: Any,
    cfg: TrainConfig,
    out: Path,
    objective: Objective,
    card: ModelCard,
    *,
    resume: bool,
    dist: Dist,
    device: torch.device,
    progress: bool,
) -> TrainResult:
    """Train on ``device``; each new best dev epoch is saved as the checkpoint in ``out``."""
    from kdpipe.learn.trainer import train
    from kdpipe.models import save_checkpoint

    def save_best(m: torch.nn.Module, metrics: dict[str, Any]) -> None:
        save_checkpoint(out, m, card.replace(metrics=metrics))

    model.to(device)
    return train(model, source, dev_data, cfg, out, objective, save_best,
                 resume=resume, dist=dist, device=device, progress=progress)  # fmt: skip
