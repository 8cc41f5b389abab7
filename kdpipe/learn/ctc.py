"""CTC training: the objective (CTC alone, or with frame KL on a stored essence), the dev
score that early stopping reads, and ``train_ctc`` (``kdpipe learn --loss ctc``).

The CTC term is normalised per output frame (the sum of the utterances' CTC losses over
their output frames) so that it is in the unit of the KD term, a mean over frames, and
``alpha`` weighs like with like. Dev is scored by greedy decoding: the token accuracy
1 - TER (token error rate, kaldialign's counts), the number early stopping maximises.
Legend: B batch, T' output frames, C classes (blank included), L tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import torch

from kdpipe.batching import bucket_batches
from kdpipe.corpus.featstore import FeatureStore
from kdpipe.corpus.units import TokenUnits
from kdpipe.decode.ctc import path_tokens
from kdpipe.errors import ConfigError
from kdpipe.learn import session
from kdpipe.learn.data import Batch
from kdpipe.learn.token_data import UNITS_DIR, TokenData, check_lengths, corpus_units
from kdpipe.learn.trainer import TrainResult
from kdpipe.losses import IGNORE, ctc
from kdpipe.metrics import ErrorCounts, error_counts


def ctc_term(
    logits: torch.Tensor, out_lengths: torch.Tensor, tokens: torch.Tensor, blank: int,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:  # fmt: skip
    """The CTC loss of a batch per output frame, over the utterances that have tokens
    (an utterance without a transcript, L = 0, adds nothing); ``weight`` (B,) weighs each
    utterance (store mixing). Shapes: logits (B, T', C), tokens (B, L) IGNORE-padded."""
    token_lengths = (tokens != IGNORE).sum(1)  # (B,)
    has = token_lengths > 0  # (B,)
    if not bool(has.any()):
        return logits.sum() * 0.0
    w = torch.ones_like(out_lengths, dtype=torch.float32) if weight is None else weight.float()
    w = torch.where(has, w, torch.zeros_like(w))  # (B,)
    rows = ctc(logits[has], out_lengths[has], tokens[has], token_lengths[has], blank)  # (B_has,)
    return (rows * w[has]).sum() / (out_lengths[has].float() * w[has]).sum().clamp(min=1e-12)


def greedy_batch(logits: torch.Tensor, out_lengths: torch.Tensor, blank: int) -> list[list[int]]:
    """Each utterance's greedy decoding: its best path (B, T') collapsed."""
    best = logits.argmax(-1).cpu().numpy()  # (B, T')
    lengths = out_lengths.cpu().numpy()
    return [path_tokens(best[row, : lengths[row]], blank) for row in range(best.shape[0])]


def greedy_errors(
    logits: torch.Tensor, out_lengths: torch.Tensor, tokens: torch.Tensor, blank: int
) -> list[ErrorCounts]:
    """Per utterance: kaldialign's errors of the greedy decoding against the tokens
    (utterances without tokens are skipped)."""
    refs = tokens.cpu().numpy()  # (B, L)
    pairs = zip(refs, greedy_batch(logits, out_lengths, blank), strict=True)
    return [error_counts(ref[ref != IGNORE].tolist(), hyp)
            for ref, hyp in pairs if (ref != IGNORE).any()]  # fmt: skip


def accuracy_counts(errors: list[ErrorCounts]) -> tuple[int, int]:
    """(correct, counted) for the trainer's running accuracy: reference tokens less errors
    (at least 0), over reference tokens; their ratio is 1 - TER where TER <= 1."""
    ref = sum(e.ref_len for e in errors)
    wrong = sum(e.errors for e in errors)
    return max(ref - wrong, 0), ref


class SoftTerm(Protocol):
    """The KD term of a CTC objective: its loss on a batch and its weight in an epoch."""

    def __call__(
        self, logits: torch.Tensor, out_lengths: torch.Tensor, batch: Batch
    ) -> torch.Tensor: ...

    def alpha(self, epoch: int) -> float: ...


@dataclass
class CtcObjective:
    """``trainer.Objective`` of CTC on ``batch.tokens``; with ``kd``, plus frame KL on the
    batch's teacher targets: ``alpha * KL + (1 - alpha) * CTC`` (``kdpipe.learn.kd``)."""

    blank: int
    soft: SoftTerm | None = None  # the KD term (``kd.CtcKd``); None: CTC alone

    def __call__(
        self, model: torch.nn.Module, batch: Batch, epoch: int
    ) -> tuple[torch.Tensor, int, int]:
        logits, out_lengths = model(batch.x, batch.lengths)  # (B, T', C)
        if batch.tokens is None:
            raise ConfigError("a CTC objective needs batches with token sequences")
        alpha = 0.0 if self.soft is None else self.soft.alpha(epoch)
        weight = None if batch.targets is None else batch.targets.weight
        # a term weighted 0 is not computed (as ``losses.multitask``: nor can its NaN leak)
        hard = (
            ctc_term(logits, out_lengths, batch.tokens, self.blank, weight) if alpha < 1 else None
        )
        soft = (
            self.soft(logits, out_lengths, batch) if self.soft is not None and alpha > 0 else None
        )
        if soft is None:
            assert hard is not None
            loss = hard
        elif hard is None:
            loss = soft
        else:
            loss = alpha * soft + (1 - alpha) * hard
        with torch.no_grad():
            correct, counted = accuracy_counts(
                greedy_errors(logits, out_lengths, batch.tokens, self.blank)
            )
        return loss, correct, counted


@dataclass
class CtcScores:
    """A split scored by greedy decoding: CTC loss per output frame, 1 - TER, and (when
    kept) the hypotheses and each utterance's (T'_i, C) log-posteriors."""

    loss: float
    counts: ErrorCounts
    hyp: list[list[int]] = field(default_factory=list)
    logp: list[np.ndarray] = field(default_factory=list)
    # early stopping: an epoch that ties the best accuracy improves when its loss is lower
    # (a CTC model starts on a plateau of blank-only outputs, accuracy 0, for many epochs)
    loss_breaks_ties: ClassVar[bool] = True

    @property
    def accuracy(self) -> float:
        return max(0.0, 1.0 - self.counts.rate) if self.counts.ref_len else 0.0


@torch.inference_mode()
def score_ctc(
    model: torch.nn.Module,
    data: TokenData,
    device: torch.device | str = "cpu",
    keep: bool = False,
    batch_frames: int = 40000,
) -> CtcScores:
    """Score ``model`` on ``data`` by greedy decoding (and keep what decoding needs)."""
    was_training = model.training
    model.eval()
    total, frames = 0.0, 0
    counts = ErrorCounts()
    hyps: dict[int, list[int]] = {}
    logps: dict[int, np.ndarray] = {}
    refs = data.tokens
    for idx in bucket_batches(data.lengths, batch_frames):
        batch = data.batch(idx).to(torch.device(device))
        assert batch.tokens is not None
        logits, out_lengths = model(batch.x, batch.lengths)  # (B, T', C)
        token_lengths = (batch.tokens != IGNORE).sum(1)
        rows = ctc(logits, out_lengths, batch.tokens, token_lengths, data.blank)  # (B,)
        total += float(rows.sum())
        frames += int(out_lengths.sum())
        lengths = out_lengths.cpu().numpy()
        logp = torch.log_softmax(logits.float(), -1).cpu().numpy() if keep else None
        decoded = greedy_batch(logits, out_lengths, data.blank)
        for row, (utt, hyp) in enumerate(zip(batch.index, decoded, strict=True)):
            counts = counts + error_counts(refs[int(utt)].tolist(), hyp)
            if keep:
                hyps[int(utt)] = hyp
                assert logp is not None
                logps[int(utt)] = logp[row, : lengths[row]]  # (T'_i, C)
    if was_training:
        model.train()
    out = CtcScores(total / max(frames, 1), counts)
    if keep:
        out.hyp = [hyps[i] for i in range(len(data))]
        out.logp = [logps[i] for i in range(len(data))]
    return out


def ctc_record(units: TokenUnits) -> dict[str, Any]:
    """What a CTC checkpoint's card (and a CTC teacher's store) records of its tokens."""
    return {"blank": units.blank, "units": units.record()}


def ctc_student(run: session.Run, store: FeatureStore) -> tuple[TokenUnits, torch.nn.Module, int]:
    """The run's units (from the corpus' train transcripts) and the student over them,
    with its subsampling; ``ConfigError`` for a crop view (a transcript covers a whole
    utterance)."""
    assert run.ctc is not None
    if run.view is not None:
        raise ConfigError("CTC trains on whole utterances (a transcript covers all of one): "
                          "drop the view")  # fmt: skip
    units = corpus_units(store, run.ctc)
    model, _, subsampling = session.build_student(
        run.student, run.model_config, store, run.train.seed, init=run.init, labels=units.labels
    )
    return units, model, subsampling


def token_split(store: FeatureStore, split: str, units: TokenUnits, subsampling: int) -> TokenData:
    """``split``'s features and tokens, every utterance long enough for its tokens."""
    data = TokenData.from_units(store, split, units)
    check_lengths(data.ids, data.lengths, data.tokens, subsampling,
                  f"{store.location} split {split!r}")  # fmt: skip
    return data


def train_ctc(
    run: session.Run,
    out: str | Path,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Train ``run.student`` with CTC on the transcripts' tokens; the units are saved in
    ``OUT/units`` and recorded in the card."""
    assert run.ctc is not None
    out = Path(out)
    cfg = run.train
    with session.session(cfg) as (dist, device):
        store = FeatureStore.open(run.corpus)
        units, model, subsampling = ctc_student(run, store)
        train_data = token_split(store, run.train_split, units, subsampling)
        dev_data = token_split(store, run.dev_split, units, subsampling)
        session.claim_output(out, run, resume, overwrite)  # after every check on the inputs
        if dist.is_main:
            units.write(out / UNITS_DIR)
        card = session.run_card(model, run, store, "ctc", labels=units.labels,
                                ctc=ctc_record(units))  # fmt: skip
        return session.fit(model, train_data, dev_data, cfg, out, CtcObjective(units.blank),
                           card, resume=resume, dist=dist, device=device, progress=progress,
                           evaluate=score_ctc)  # fmt: skip
