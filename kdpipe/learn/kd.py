"""Distil a student from target stores: ``kdpipe learn --targets STORE --corpus FEATS``.

``kd_loss`` is the loss of one streamed batch (also for a user's own loop);
``KdObjective`` plugs it into ``trainer.train`` with the alpha schedule, ``StreamSource``
a ``TargetStream``; ``KdRun`` is a run's identity (``session.Run`` plus the stores and the
``kd`` settings); ``train_kd`` runs the compatibility checks and the trainer.
Legend: B batch, T' student output frames, K kept entries per row, C classes, N counted rows.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from kdpipe.console import err_console
from kdpipe.corpus.featstore import FeatureStore
from kdpipe.errors import ConfigError, TrainingError
from kdpipe.learn import compat, session
from kdpipe.learn.ctc import CtcObjective, ctc_record, ctc_student, score_ctc, token_split
from kdpipe.learn.data import Batch, LabelledData, SoftTargets
from kdpipe.learn.distributed import Dist
from kdpipe.learn.kd_config import KdConfig
from kdpipe.learn.quality_filter import quality_line
from kdpipe.learn.stream import TargetStream
from kdpipe.learn.token_data import UNITS_DIR
from kdpipe.learn.train_config import TrainConfig
from kdpipe.learn.trainer import Objective, TrainResult
from kdpipe.levels import FRAME, Level
from kdpipe.losses import IGNORE, multitask, sampled_kd, sparse_kd
from kdpipe.store.reader import StoreReader


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
    use_soft, use_hard = alpha > 0 and bool(mask.any()), alpha < 1 and bool(hard_mask.any())
    # the usual batch has a target and a label on every live row: its rows are gathered
    # once for both terms (one (N, C) copy and one scatter in the backward, not two)
    shared = use_soft and use_hard and torch.equal(mask, hard_mask)
    z = logits[mask] if use_soft else None  # (N, C)
    if z is not None:
        w = weight[mask]  # (N,)
        idx, logp = soft.idx[:, :t][mask], soft.logp[:, :t][mask]  # (N, K)
        if sampled:
            rows = sampled_kd(z, idx, logp)
        else:
            rows = sparse_kd(z, idx, logp, soft.tail[:, :t][mask], temperature, tail)
        soft_loss = weighted(rows, w)
    if use_hard:
        zh = z if shared and z is not None else logits[hard_mask]  # (N, C)
        rows = F.cross_entropy(zh, y[hard_mask], reduction="none")  # (N,)
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

    def __call__(
        self, model: torch.nn.Module, batch: Batch, epoch: int
    ) -> tuple[torch.Tensor, int, int]:
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
class CtcKd:
    """The KD term of a CTC student (``ctc.CtcObjective``'s ``soft``): the frame KL of
    ``kd_loss`` on the frames ``kd.ctc_frames`` keeps, and the schedule's alpha.

    ``spikes`` keeps a frame only where the teacher's blank probability (its stored entry
    for class ``blank``; 0 when not kept) is below ``kd.blank_max``: the frames where the
    teacher emits a token, so that the student is not pulled toward the blank-dominated
    frames around spikes it may place elsewhere (the spike-timing mismatch of Kurata and
    Audhkhasi 2019). Legend as the module's.
    """

    kd: KdConfig
    epochs: int
    blank: int
    sampled: bool = False

    def alpha(self, epoch: int) -> float:
        """The teacher's weight in 0-based ``epoch`` (the schedule's)."""
        return self.kd.alpha_at(epoch, self.epochs)

    def __call__(
        self, logits: torch.Tensor, out_lengths: torch.Tensor, batch: Batch
    ) -> torch.Tensor:
        soft = batch.targets
        if soft is None:
            raise TrainingError("a CTC student's KD term needs teacher targets")
        if self.kd.ctc_frames == "spikes":
            soft = replace(soft, valid=soft.valid & (teacher_blank(soft, self.blank)
                                                     < self.kd.blank_max))  # fmt: skip
        loss, _, _ = kd_loss(logits, out_lengths, replace(batch, targets=soft), alpha=1.0,
                             temperature=self.kd.temperature, tail=self.kd.tail,
                             sampled=self.sampled)  # fmt: skip
        return loss


def teacher_blank(soft: SoftTargets, blank: int) -> torch.Tensor:
    """(B, T') the teacher's stored probability of ``blank`` per frame (0 where not kept)."""
    p = torch.where(soft.idx == blank, soft.logp.float().exp(), torch.zeros_like(soft.logp))
    return p.sum(-1)  # (B, T') from (B, T', K)


@dataclass
class StreamSource:
    """A ``TargetStream`` as the trainer's ``BatchSource``."""

    stream: TargetStream

    def epoch_batches(
        self, epoch: int, cfg: TrainConfig, dist: Dist, skip: int
    ) -> tuple[int, Iterable[Batch]]:
        self.stream.set_epoch(epoch, skip)
        count = self.stream.num_batches()
        if count == 0:
            raise TrainingError(f"no training batches for rank {dist.rank} of {dist.world}")
        batches: Iterable[Batch] = self.stream.loader() if count > skip else []
        return count, batches

    def describe(self, index: Any) -> list[str]:
        return self.stream.describe(index)


@dataclass(frozen=True)
class KdRun(session.Run):
    """What to distil from what: the identity of a run, checked again on ``--resume``.
    ``view`` crops dev utterances (the training windows are the stores')."""

    targets: tuple[tuple, ...] = field(kw_only=True)  # (store location, weight[, split]) each
    kd: KdConfig = field(default_factory=KdConfig, kw_only=True)

    def to_dict(self) -> dict[str, Any]:
        shared = super().to_dict()
        before_kd = ("corpus", "student", "model_config", "train")  # keys in their old order
        return {
            "targets": [list(target) for target in self.targets],
            **{key: shared.pop(key) for key in before_kd},
            "kd": self.kd.to_dict(),
            **shared,
        }

    def inputs(self) -> list[str]:
        return super().inputs() + [str(target[0]) for target in self.targets]


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
    out = Path(out)
    cfg, kd = run.train, run.kd
    if not run.targets:
        raise TrainingError("no target store given")
    if kd.ctc_frames != "all" and run.ctc is None:
        raise ConfigError(f"kd: ctc_frames={kd.ctc_frames} is for CTC students (--loss ctc)")
    with session.session(cfg) as (dist, device):
        corpus = FeatureStore.open(run.corpus)
        readers = [StoreReader(target[0]) for target in run.targets]
        units = None
        level: Level
        if run.ctc is not None:  # a CTC student: tokens from the corpus' transcripts
            units, model, subsampling = ctc_student(run, corpus)
            level = FRAME
        else:
            model, level, subsampling = session.build_student(
                run.student, run.model_config, corpus, cfg.seed, init=run.init
            )
        record = None if units is None else ctc_record(units)
        labels = corpus.labels if units is None else units.labels
        for reader in readers:
            compat.check_meta(reader, corpus, level, subsampling, record, labels)
            compat.check_sampled(reader, kd.temperature)
            if kd.verify:
                compat.check_verified(reader.location, labels)
        tokens = None
        if units is not None:  # the CTC term's transcripts: all of train, or ctc.labelled
            assert run.ctc is not None
            labelled = run.ctc.labelled or run.train_split
            seen = token_split(corpus, labelled, units, subsampling)
            tokens = {corpus.index_of(utt): seq for utt, seq in zip(seen.ids, seen.tokens,
                                                                     strict=True)}  # fmt: skip
        stream = TargetStream(
            list(run.targets),
            run.corpus,
            run.train_split,
            batch_frames=cfg.batch_frames,
            seed=cfg.seed,
            subsampling=subsampling,
            level=level,
            hard_labels=kd.hard_labels if units is None else "none",  # CTC: the tokens
            block_frames=kd.block_frames,
            buffer_utts=kd.buffer_utts,
            window_utts=kd.window_utts,
            num_workers=kd.workers,
            rank=dist.rank,
            world=dist.world,
            allow_partial=kd.allow_partial,
            tokens=tokens,
            cache_bytes=kd.cache_mb << 20,
        )
        if dist.is_main:
            for report in stream.quality_reports:
                err_console.print(quality_line(report), highlight=False, soft_wrap=True)
        dev_data: LabelledData
        if units is None:
            dev_data = LabelledData.from_store(corpus, run.dev_split, run.view)
        else:
            dev_data = token_split(corpus, run.dev_split, units, subsampling)
        session.claim_output(out, run, resume, overwrite)  # after every check on the inputs
        sampled = all(reader.meta.rule.name == "sample" for reader in readers)
        objective: Objective = KdObjective(kd, cfg.epochs, sampled)
        evaluate = None
        if units is not None:
            objective = CtcObjective(units.blank, CtcKd(kd, cfg.epochs, units.blank, sampled))
            evaluate = score_ctc
            if dist.is_main:
                units.write(out / UNITS_DIR)
        stores = [
            {
                "location": reader.location,
                "fingerprint": reader.record["fingerprint"],
                "rule": reader.meta.rule.to_dict(),
                "teachers": [teacher.name for teacher in reader.meta.teachers],
            }
            for reader in readers
        ]
        quality = {"quality_filter": stream.quality_reports} if stream.quality_reports else {}
        card = session.run_card(
            model, run, corpus, "kd", labels=labels, ctc=record,
            data_fingerprint=readers[0].record["fingerprint"], stores=stores,
            utterances=len(stream.table), **quality,
        )  # fmt: skip
        return session.fit(model, StreamSource(stream), dev_data, cfg, out, objective, card,
                           resume=resume, dist=dist, device=device, progress=progress,
                           evaluate=evaluate)  # fmt: skip
