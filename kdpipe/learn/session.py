"""What every training run shares, hard labels or soft targets: the device and process
group, the student built for a corpus, and the hand-over to ``trainer.train``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from kdpipe.errors import FingerprintMismatch, LabelSetError, ModelError
from kdpipe.learn.distributed import Dist
from kdpipe.learn.train_config import TrainConfig
from kdpipe.levels import LEVEL_WORDS

if TYPE_CHECKING:
    from kdpipe.corpus.featstore import FeatureStore
    from kdpipe.learn.trainer import Objective, TrainResult
    from kdpipe.models import ModelCard


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
    name: str,
    config: dict[str, Any],
    corpus: FeatureStore,
    seed: int,
    init: str | Path | None = None,
) -> tuple[torch.nn.Module, str, int]:
    """The student for ``corpus`` with seeded initial weights, or with the weights of
    checkpoint ``init`` (fine-tuning); (model, level, subsampling).

    ``ModelError`` if the model's level does not fit the corpus task, or if ``init`` was
    not made by the same architecture, config, features and label set.
    """
    from kdpipe.models import build_model
    from kdpipe.models.protocol import model_level, model_subsampling

    torch.manual_seed(seed)  # same initial weights on every rank and every run
    model = build_model(name, corpus.dim, len(corpus.labels), config)
    level = model_level(model)
    if level != corpus.level:
        raise ModelError(
            f"{name} is a {LEVEL_WORDS[level]}-level model but {corpus.location} is a "
            f"{corpus.task} task; use a {LEVEL_WORDS[corpus.level]}-level model"
        )
    if init is not None:
        load_init(model, init, corpus)
    return model, level, model_subsampling(model)


def load_init(model: torch.nn.Module, init: str | Path, corpus: FeatureStore) -> None:
    """Copy the weights of checkpoint ``init`` into ``model`` (built by ``build_model``).

    Refuses (``ModelError``, one line naming what differs) unless the checkpoint's
    architecture, model config (as ``make_card`` records it), number of features, label
    set and feature fingerprint (the features it was trained on) equal the new model's.
    Custom code is trusted only when the student is itself a ``package.module:Class`` (its
    code is imported to build the student anyway).
    """
    from kdpipe.models import load_checkpoint, read_card
    from kdpipe.models.registry import config_diffs, is_custom

    spec = model.kdpipe_spec
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
            corpus.labels, corpus.config.fingerprint, what, features=corpus.config, name=where
        )
    except (LabelSetError, FingerprintMismatch) as e:
        raise ModelError(str(e)) from None
    trained, _ = load_checkpoint(init, "cpu", trust_custom_code=is_custom(spec.architecture))
    model.load_state_dict(trained.state_dict(), strict=True)


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
