"""Distil a student from target stores: ``kdpipe learn --targets STORE --corpus FEATS``.

``kd_loss`` is the loss of one streamed batch (also for a user's own loop);
``KdObjective`` plugs it into ``trainer.train`` with the alpha schedule; ``train_kd`` runs
the compatibility checks and the trainer. Legend: B batch, T' student output frames,
K kept entries per row, C classes, N counted rows.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from kdpipe.corpus.views import ViewConfig
from kdpipe.errors import TrainingError
from kdpipe.learn.data import Batch
from kdpipe.learn.kd_config import KdConfig
from kdpipe.learn.train_config import TrainConfig
from kdpipe.learn.trainer import TrainResult
from kdpipe.losses import IGNORE, multitask, sampled_kd, sparse_kd


def kd_loss(
    logits: torch.Tensor,
    out_lengths: torch.Tensor,
    batch: Batch,
    *,
    alpha: float = 1.0,
    temperature: float = 1.0,
    tail: str = "renorm",
    sampled: bool = False,
) -> tuple[torch.Tensor, int, int]:
    """alpha * soft + (1 - alpha) * hard of a ``TargetStream`` batch, and (correct, counted).

    ``logits`` (B, T', C) (frame level) or (B, C) (clip level) with ``out_lengths`` (B,).
    The soft term is ``sparse_kd`` (``sampled_kd`` for sampled stores), the hard term the
    cross-entropy to the labels; both are means over counted rows weighted by the
    per-utterance store weight. Accuracy counts rows with a hard label (else the teacher's
    top-1).
    """
    soft = batch.targets
    if soft is None:
        raise TrainingError("kd_loss needs a batch with teacher targets (a TargetStream batch)")
    if logits.dim() == 2:
        logits = logits[:, None]  # (B, 1, C)
    t = min(logits.shape[1], soft.idx.shape[1])
    logits = logits[:, :t].float()  # (B, T', C)
    y = batch.y if batch.y.dim() == 2 else batch.y[:, None]  # (B, T')
    y = y[:, :t]
    live = torch.arange(t, device=logits.device)[None, :] < out_lengths[:, None]  # (B, T')
    weight = soft.weight[:, None].expand(-1, t)  # (B, T')
    mask = soft.valid[:, :t] & live  # rows with a teacher target
    hard_mask = (y != IGNORE) & live  # rows with a hard label
    zero = logits.sum() * 0.0

    def weighted(rows: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return (rows * w).sum() / w.sum().clamp(min=1e-12)

    soft_loss = hard_loss = zero
    if alpha > 0 and bool(mask.any()):
        z, w = logits[mask], weight[mask]  # (N, C), (N,)
        idx, logp = soft.idx[:, :t][mask], soft.logp[:, :t][mask]  # (N, K)
        if sampled:
            rows = sampled_kd(z, idx, logp)
        else:
            rows = sparse_kd(z, idx, logp, soft.tail[:, :t][mask], temperature, tail)
        soft_loss = weighted(rows, w)
    if alpha < 1 and bool(hard_mask.any()):
        rows = F.cross_entropy(logits[hard_mask], y[hard_mask], reduction="none")  # (N,)
        hard_loss = weighted(rows, weight[hard_mask])
    loss = multitask(soft_loss, hard_loss, alpha)
    with torch.no_grad():
        pred = logits.argmax(-1)  # (B, T')
        if bool(hard_mask.any()):
            ref, m = y, hard_mask
        else:
            top = soft.logp[:, :t].argmax(-1, keepdim=True)  # (B, T', 1)
            ref, m = soft.idx[:, :t].gather(-1, top)[..., 0], mask
        correct, counted = int((pred[m] == ref[m]).sum()), int(m.sum())
    return loss, correct, counted


@dataclass
class KdObjective:
    """``trainer.Objective`` for distillation: ``kd_loss`` with alpha from the schedule."""

    kd: KdConfig
    epochs: int
    sampled: bool = False

    def __call__(self, model: torch.nn.Module, batch: Batch, epoch: int):
        logits, out_lengths = model(batch.x, batch.lengths)  # (B, T', C) or (B, C)
        return kd_loss(
            logits,
            out_lengths,
            batch,
            alpha=self.kd.alpha_at(epoch, self.epochs),
            temperature=self.kd.temperature,
            tail=self.kd.tail,
            sampled=self.sampled,
        )


@dataclass
class StreamSource:
    """A ``TargetStream`` as the trainer's ``BatchSource``."""

    stream: Any  # TargetStream

    def epoch_batches(self, epoch: int, cfg: TrainConfig, dist: Any, skip: int):
        self.stream.set_epoch(epoch, skip)
        n = self.stream.num_batches()
        if n == 0:
            raise TrainingError(f"no training batches for rank {dist.rank} of {dist.world}")
        batches: Iterable[Batch] = self.stream.loader() if n > skip else []
        return n, batches

    def describe(self, index: Any) -> list[str]:
        return self.stream.describe(index)


@dataclass(frozen=True)
class KdRun:
    """What to distil from what: the identity of a run, checked again on ``--resume``."""

    targets: tuple[tuple, ...]  # (store location, weight[, split]) of each store
    corpus: str
    student: str
    model_config: dict[str, Any]
    train: TrainConfig
    kd: KdConfig = field(default_factory=KdConfig)
    train_split: str = "train"  # a split name or a subset spec such as train[:10%]
    dev_split: str = "dev"
    view: ViewConfig | None = None  # crop dev utterances (training windows: the stores')
    init: str | None = None  # checkpoint to start from (fine-tuning); None: seeded init

    def to_dict(self) -> dict[str, Any]:
        return {
            "targets": [list(t) for t in self.targets],
            "corpus": self.corpus,
            "student": self.student,
            "model_config": self.model_config,
            "train": self.train.to_dict(),
            "kd": self.kd.to_dict(),
            "train_split": self.train_split,
            "dev_split": self.dev_split,
            "view": None if self.view is None else self.view.to_dict(),
            "init": self.init,
        }


def train_kd(
    run: KdRun,
    out: str | Path,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Distil ``run.student`` from ``run.targets``; returns the result of the best dev epoch.

    Before the first step: label sets, feature and corpus fingerprints, frame shift, level
    and subsampling of every store against the corpus and the student; store verification
    (``kd.verify``); ids covered; frame counts per utterance.
    """
    from kdpipe.corpus.featstore import FeatureStore
    from kdpipe.learn import compat
    from kdpipe.learn.data import LabelledData
    from kdpipe.learn.session import build_student, fit, session
    from kdpipe.learn.stream import TargetStream
    from kdpipe.learn.supervised import claim_output
    from kdpipe.models import make_card
    from kdpipe.store.reader import StoreReader

    out = Path(out)
    cfg, kd = run.train, run.kd
    if not run.targets:
        raise TrainingError("no target store given")
    with session(cfg) as (dist, device):
        corpus = FeatureStore.open(run.corpus)
        readers = [StoreReader(t[0]) for t in run.targets]
        model, level, sub = build_student(
            run.student, run.model_config, corpus, cfg.seed, init=run.init
        )
        for r in readers:
            compat.check_meta(r, corpus, level, sub)
            compat.check_sampled(r, kd.temperature)
            if kd.verify:
                compat.check_verified(r.location, corpus.labels)
        stream = TargetStream(
            list(run.targets),
            run.corpus,
            run.train_split,
            batch_frames=cfg.batch_frames,
            seed=cfg.seed,
            subsampling=sub,
            level=level,
            hard_labels=kd.hard_labels,
            block_frames=kd.block_frames,
            buffer_utts=kd.buffer_utts,
            window_utts=kd.window_utts,
            num_workers=kd.workers,
            rank=dist.rank,
            world=dist.world,
            allow_partial=kd.allow_partial,
        )
        dev_data = LabelledData.from_store(corpus, run.dev_split, run.view)
        claim_output(out, run, resume, overwrite)  # type: ignore[arg-type]  # checks passed
        sampled = all(r.meta.rule.name == "sample" for r in readers)
        objective = KdObjective(kd, cfg.epochs, sampled)
        card = make_card(
            model,
            labels=corpus.labels,
            features=corpus.config,
            feature_fingerprint=corpus.config.fingerprint,
            data_fingerprint=readers[0].record["fingerprint"],
            training={
                **run.to_dict(),
                "objective": "kd",
                "stores": [
                    {
                        "location": r.location,
                        "fingerprint": r.record["fingerprint"],
                        "rule": r.meta.rule.to_dict(),
                        "teachers": [t.name for t in r.meta.teachers],
                    }
                    for r in readers
                ],
                "utterances": len(stream.table),
                "parameters": sum(p.numel() for p in model.parameters()),
            },
        )

        return fit(model, StreamSource(stream), dev_data, cfg, out, objective, card,
                   resume=resume, dist=dist, device=device, progress=progress)  # fmt: skip
