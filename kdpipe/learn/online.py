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
from kdpipe.device_essence import log_tail
from kdpipe.errors import ConfigError, FingerprintMismatch, LabelSetError, ModelError
from kdpipe.learn import session
from kdpipe.learn.data import Batch, SoftTargets
from kdpipe.learn.kd import kd_loss
from kdpipe.learn.kd_config import KdConfig
from kdpipe.learn.targets import check_rates
from kdpipe.learn.trainer import TrainResult
from kdpipe.levels import FRAME
from kdpipe.losses import align_frame_labels
from kdpipe.models import load_checkpoint, read_card
from kdpipe.models.protocol import model_subsampling

ONLINE_TOPK = 8  # the store recipes' top-8: the same targets as `teach --topk 8`


@dataclass(frozen=True)
class OnlineRun(session.Run):
    """What to distil from which teachers run in the loop: ``session.Run`` plus the
    teacher checkpoints (several: their mean probabilities), how many classes to keep
    (None: all) and the ``kd`` settings; checked again on ``--resume``."""

    teachers: tuple[str, ...] = field(kw_only=True)
    topk: int | None = field(default=ONLINE_TOPK, kw_only=True)
    kd: KdConfig = field(default_factory=KdConfig, kw_only=True)

    def __post_init__(self) -> None:
        if not self.teachers:
            raise ConfigError("teacher_online: give at least one teacher checkpoint")
        k = self.topk
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
            raise ConfigError(f"teacher_online: topk must be an integer >= 1 or null, got {k!r}")

    def to_dict(self) -> dict[str, Any]:
        model: str | list[str] = (
            self.teachers[0] if len(self.teachers) == 1 else list(self.teachers)
        )
        return {**super().to_dict(), "teacher_online": {"model": model, "topk": self.topk},
                "kd": self.kd.to_dict()}  # fmt: skip

    def inputs(self) -> list[str]:
        return [*super().inputs(), *self.teachers]


@dataclass
class OnlineTeacher:
    """Loaded teachers (eval mode, on the student's device), each with its subsampling,
    and the classes their mean keeps."""

    models: list[torch.nn.Module]
    subsampling: list[int]
    topk: int | None

    @torch.no_grad()
    def targets(self, batch: Batch, out_frames: int, student_sub: int) -> SoftTargets:
        """The teachers' targets of ``batch`` at the student's output rate (T' frames, or
        one row of a clip), as a store's would be (``data.SoftTargets``)."""
        logps, valids = [], []
        for model, sub in zip(self.models, self.subsampling, strict=True):
            logp, valid = _at_student_rate(model, sub, batch, out_frames, student_sub)
            logps.append(logp)
            valids.append(valid)
        if len(logps) == 1:
            logp, valid = logps[0], valids[0]  # (B, T', C), (B, T')
        else:  # mean-prob: log (1/M) sum_m p_m
            count = torch.tensor(float(len(logps)), device=logps[0].device)
            logp = torch.logsumexp(torch.stack(logps), dim=0) - count.log()  # (B, T', C)
            valid = torch.stack(valids).all(dim=0)  # (B, T')
        if self.topk is None or self.topk >= logp.shape[-1]:
            values = logp  # (B, T', C)
            idx = torch.arange(logp.shape[-1], device=logp.device).expand_as(logp)
            tail = torch.full(valid.shape, -torch.inf, device=logp.device)  # (B, T')
        else:
            values, idx = logp.topk(self.topk, dim=-1)  # (B, T', K) each, sorted
            tail = log_tail(values)  # (B, T') log(1 - kept mass); -inf when none left
        weight = torch.ones(valid.shape[0], device=logp.device)  # (B,)
        return SoftTargets(idx.contiguous(), values.contiguous(), tail, valid, weight)


def _at_student_rate(
    model: torch.nn.Module, sub: int, batch: Batch, out_frames: int, student_sub: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """One teacher's log-posteriors (B, T', C) at the student's output frames (student
    frame j reads teacher row (j * s_student) // s_teacher; one row for a clip) and which
    rows it has (B, T')."""
    logits, lengths = model(batch.x, batch.lengths)  # (B, T_t, C) or (B, C)
    logp = torch.log_softmax(logits.float(), dim=-1)
    if logp.dim() == 2:
        logp, lengths = logp[:, None], torch.ones_like(lengths)  # (B, 1, C), (B,)
        rows = torch.zeros(1, dtype=torch.int64, device=logp.device)  # (1,)
    else:
        rows = torch.arange(out_frames, device=logp.device) * student_sub // sub  # (T',)
    valid = rows[None, :] < lengths[:, None]  # (B, T')
    return logp[:, rows.clamp(max=logp.shape[1] - 1)], valid  # (B, T', C), (B, T')


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


def load_teachers(
    run: OnlineRun, corpus: FeatureStore, student_sub: int, device: torch.device
) -> OnlineTeacher:
    """The teacher checkpoints, each checked against the corpus (labels, features, level)
    and the student's rate."""
    models = [load_teacher(path, corpus, student_sub, device) for path in run.teachers]
    return OnlineTeacher(models, [model_subsampling(model) for model in models], run.topk)


def load_teacher(
    path: str, corpus: FeatureStore, student_sub: int, device: torch.device
) -> torch.nn.Module:
    """One teacher, checked; a ``package.module:Class`` teacher is refused (its code would
    run without ``--trust-custom-code``: teach it into a store instead), as is a CTC one."""
    where = f"--teacher-online {path}"
    card = read_card(path)
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
    model, _ = load_checkpoint(path, device)
    model.requires_grad_(False)
    return model


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
        train_data, dev_data, model, subsampling = session.in_memory_student(run, store)
        teacher = load_teachers(run, store, subsampling, device)
        session.claim_output(out, run, resume, overwrite)  # after every check on the inputs
        teachers = [read_card(path).weights_sha256 for path in run.teachers]
        card = session.run_card(model, run, store, "kd-online", teachers=teachers)
        objective = OnlineObjective(teacher, run.kd, cfg.epochs, subsampling)
        return session.fit(model, train_data, dev_data, cfg, out, objective, card,
                           resume=resume, dist=dist, device=device, progress=progress)  # fmt: skip
