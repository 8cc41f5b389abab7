"""Distillation with the teacher in the loop: ``kdpipe learn --teacher-online CKPT``.

Every training step runs the teacher's forward pass on the step's batch, keeps its top-k
(or its whole posterior) on the device, and takes the loss that distilling from a store
takes (``kd.kd_loss``: the same KL, temperature, tail rule, alpha schedule and hard-label
term). The two modes differ only in where the targets come from, which is what
``benchmarks/offline_vs_online.py`` measures: the teacher paid once (``teach``, then any
number of students from the store) against the teacher paid at every step of every
student, as torchdistill and TextBrewer distil. The online mode is also what a setting
needs whose input changes every epoch: with SpecAugment on, the teacher sees the same
masked batch as the student. Legend: B batch, T input frames, T_t teacher output frames,
T' student output frames, K kept classes, C classes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from kdpipe.corpus.featstore import FeatureStore
from kdpipe.errors import ConfigError, FingerprintMismatch, LabelSetError, ModelError
from kdpipe.learn import session
from kdpipe.learn.data import Batch, LabelledData, SoftTargets
from kdpipe.learn.kd import kd_loss
from kdpipe.learn.kd_config import KdConfig
from kdpipe.learn.targets import check_rates
from kdpipe.learn.trainer import TrainResult
from kdpipe.levels import FRAME
from kdpipe.losses import align_frame_labels
from kdpipe.models import load_checkpoint, make_card, read_card
from kdpipe.models.protocol import model_subsampling

ONLINE_TOPK = 8  # the store recipes' top-8: the same targets as `teach --topk 8`


@dataclass(frozen=True)
class OnlineRun(session.Run):
    """What to distil from which teacher run in the loop: ``session.Run`` plus the
    teacher checkpoint, how many of its classes to keep (None: all) and the ``kd``
    settings; checked again on ``--resume``."""

    teacher: str = field(kw_only=True)
    topk: int | None = field(default=ONLINE_TOPK, kw_only=True)
    kd: KdConfig = field(default_factory=KdConfig, kw_only=True)

    def __post_init__(self) -> None:
        k = self.topk
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
            raise ConfigError(f"teacher_online: topk must be an integer >= 1 or null, got {k!r}")

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "teacher_online": {"model": self.teacher, "topk": self.topk},
                "kd": self.kd.to_dict()}  # fmt: skip

    def inputs(self) -> list[str]:
        return [*super().inputs(), self.teacher]


@dataclass
class OnlineTeacher:
    """A loaded teacher (eval mode, on the student's device) and the classes it keeps."""

    model: torch.nn.Module
    subsampling: int
    topk: int | None

    @torch.no_grad()
    def targets(self, batch: Batch, out_frames: int, student_sub: int) -> SoftTargets:
        """The teacher's targets of ``batch`` at the student's output rate (T' frames, or
        one row of a clip), as a store's would be (``data.SoftTargets``)."""
        logits, lengths = self.model(batch.x, batch.lengths)  # (B, T_t, C) or (B, C)
        logp = torch.log_softmax(logits.float(), dim=-1)
        if logp.dim() == 2:
            logp, lengths = logp[:, None], torch.ones_like(lengths)  # (B, 1, C), (B,)
            rows = torch.zeros(1, dtype=torch.int64, device=logp.device)  # (1,)
        else:  # student frame j reads teacher row (j * s_student) // s_teacher
            rows = torch.arange(out_frames, device=logp.device) * student_sub // self.subsampling
        valid = rows[None, :] < lengths[:, None]  # (B, T')
        logp = logp[:, rows.clamp(max=logp.shape[1] - 1)]  # (B, T', C)
        if self.topk is None or self.topk >= logp.shape[-1]:
            values = logp  # (B, T', C)
            idx = torch.arange(logp.shape[-1], device=logp.device).expand_as(logp)
            tail = torch.full(valid.shape, -torch.inf, device=logp.device)  # (B, T')
        else:
            values, idx = logp.topk(self.topk, dim=-1)  # (B, T', K) each, sorted
            kept = torch.logsumexp(values, dim=-1).clamp(max=0.0)  # (B, T') log kept mass
            tail = torch.log(-torch.expm1(kept))  # log(1 - kept mass); -inf when none left
        weight = torch.ones(valid.shape[0], device=logp.device)  # (B,)
        return SoftTargets(idx.contiguous(), values.contiguous(), tail, valid, weight)


@dataclass
class OnlineObjective:
    """``trainer.Objective``: the teacher's targets of each batch, then ``kd_loss``."""

    teacher: OnlineTeacher
    kd: KdConfig
    epochs: int
    student_sub: int

    def __call__(
        self, model: torch.nn.Module, batch: Batch, epoch: int
    ) -> tuple[torch.Tensor, int, int]:
        logits, out_lengths = model(batch.x, batch.lengths)  # (B, T', C) or (B, C)
        frames = logits.shape[1] if logits.dim() == 3 else 1
        y = batch.y  # (B, T) frame labels at the input rate, or (B,) clip labels
        if logits.dim() == 3:
            y = align_frame_labels(y, self.student_sub, out_lengths, frames)  # (B, T')
        soft = self.teacher.targets(batch, frames, self.student_sub)
        return kd_loss(
            logits,
            out_lengths,
            replace(batch, y=y, targets=soft),
            alpha=self.kd.alpha_at(epoch, self.epochs),
            temperature=self.kd.temperature,
            tail=self.kd.tail,
        )


def load_teacher(
    run: OnlineRun, corpus: FeatureStore, student_sub: int, device: torch.device
) -> OnlineTeacher:
    """The teacher checkpoint, checked against the corpus (labels, features, level) and
    the student's rate; a ``package.module:Class`` teacher is refused (its code would run
    without ``--trust-custom-code``: teach it into a store instead)."""
    where = f"--teacher-online {run.teacher}"
    card = read_card(run.teacher)
    if ":" in card.architecture:
        raise ModelError(
            f"{where} is a {card.architecture} model: custom code does not run in the loop; "
            "`kdpipe teach --trust-custom-code` it into a store"
        )
    if card.ctc is not None:
        raise ModelError(f"{where} is a CTC model: teach it into a store and distil with "
                         "--loss ctc")  # fmt: skip
    try:
        card.check_compatible(corpus.labels, corpus.feature_fingerprint,
                              f"corpus {corpus.location}", features=corpus.config,
                              level=corpus.level, name=where)  # fmt: skip
    except (LabelSetError, FingerprintMismatch) as error:
        raise ModelError(str(error)) from None
    if corpus.level == FRAME:
        check_rates(student_sub, card.subsampling, where)
    model, _ = load_checkpoint(run.teacher, device)
    model.requires_grad_(False)
    return OnlineTeacher(model, model_subsampling(model), run.topk)


def train_online(
    run: OnlineRun,
    out: str | Path,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Distil ``run.student`` from ``run.teacher`` run at every step; returns the result
    of the best dev epoch. The data are the corpus' (features and hard labels in memory)."""
    out = Path(out)
    cfg = run.train
    with session.session(cfg) as (dist, device):
        store = FeatureStore.open(run.corpus)
        train_data = LabelledData.from_store(store, run.train_split, run.view)
        dev_data = LabelledData.from_store(store, run.dev_split, run.view)
        model, _, subsampling = session.build_student(
            run.student, run.model_config, store, cfg.seed, init=run.init
        )
        teacher = load_teacher(run, store, subsampling, device)
        session.claim_output(out, run, resume, overwrite)  # after every check on the inputs
        card = make_card(
            model,
            labels=store.labels,
            features=store.config,
            feature_fingerprint=store.feature_fingerprint,
            data_fingerprint=store.fingerprint,
            training={
                **run.to_dict(),
                "objective": "kd-online",
                "teacher": read_card(run.teacher).weights_sha256,
                "parameters": sum(param.numel() for param in model.parameters()),
            },
        )
        objective = OnlineObjective(teacher, run.kd, cfg.epochs, subsampling)
        return session.fit(model, train_data, dev_data, cfg, out, objective, card,
                           resume=resume, dist=dist, device=device, progress=progress)  # fmt: skip
