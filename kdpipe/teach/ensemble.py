"""Ensemble members on one batch: label maps, frame-rate conversion, combination.

Legend: B batch, T input frames, T_m a member's output frames, T' the ensemble's output
frames (ceil(T / s) for subsampling s), C ensemble classes, C_m a member's classes.

Every member sees the same padded batch; its log-softmax at its own temperature is moved
into the ensemble's label space (``label_map``) and frame rate (``frame_rate``), then the
members are combined:

- ``mean-prob``: p = sum_m w_m p_m (weights normalised to sum 1), computed as a logsumexp;
- ``mean-logprob``: log p ∝ sum_m w_m log p_m / sum_m w_m (geometric mean, renormalised);
  a class that a member does not predict (label map over a subset) is averaged over the
  members that do predict it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdpipe.corpus.featstore import FeatureStore
from kdpipe.errors import ConfigError, KdpipeError, LabelSetError, ModelError
from kdpipe.labels import LabelSet
from kdpipe.levels import Level
from kdpipe.models.card import ModelCard
from kdpipe.models.checkpoint import load_checkpoint, read_card
from kdpipe.teach.ensemble_yaml import EnsembleConfig, MemberConfig


@dataclass
class Member:
    """A loaded member: its model and how its outputs map onto the ensemble's."""

    config: MemberConfig
    card: ModelCard
    columns: np.ndarray | None  # (C_m,) ensemble class of each member class; None = same
    ratio: int  # ensemble subsampling / member subsampling (frames merged per output)
    model: Any = None  # torch.nn.Module once loaded

    @property
    def name(self) -> str:
        return self.config.display_name


def _columns(
    member: MemberConfig, card: ModelCard, labels: LabelSet, where: str
) -> np.ndarray | None:
    """The member's classes as ensemble class indices; None when the label sets are equal."""
    if member.label_map is None:
        card.label_set.check_same(labels, where, "the corpus")
        return None
    mapping = member.label_map if isinstance(member.label_map, dict) else {}  # {} for "names"
    unknown = sorted(set(mapping) - set(card.labels))
    if unknown:
        raise ConfigError(f"{where}: label_map names labels the member does not have: {unknown}")
    cols = []
    for name in card.labels:
        target = mapping.get(name, name)
        if target not in labels:
            raise LabelSetError(
                f"{where}: member label {name!r} maps to {target!r}, which is not in the "
                f"corpus label set ({len(labels)} labels); add it to label_map"
            )
        cols.append(labels.index(target))
    return np.asarray(cols, dtype=np.int64)


def plan_members(ens: EnsembleConfig, store: FeatureStore) -> tuple[list[Member], Level, int]:
    """Check every member against the corpus from its card alone (no weights read).

    Returns the members, the level (``frame`` or ``utt``) and the ensemble subsampling.
    Errors (missing checkpoint, label sets, features, levels, frame rates) come here,
    before any inference.
    """
    members = []
    for i, config in enumerate(ens.members):
        where = f"member {i} ({config.checkpoint})"
        if not Path(config.checkpoint).is_dir():
            raise ModelError(f"{where}: checkpoint directory not found")
        try:
            card = read_card(config.checkpoint)
        except KdpipeError as error:
            raise ModelError(f"{where}: {error}") from None
        columns = _columns(config, card, store.labels, where)
        card.check_compatible(
            card.label_set, store.feature_fingerprint, f"corpus {store.location}",
            features=store.config, name=where,
        )  # fmt: skip
        if card.num_features != store.dim:
            raise ModelError(
                f"{where}: expects {card.num_features} features, corpus has {store.dim}"
            )
        members.append(Member(config, card, columns, 1))
    levels = {member.card.level for member in members}
    if len(levels) > 1:
        raise ConfigError("ensemble: members mix frame-level and utterance-level models")
    level = levels.pop()
    subsampling = ens.subsampling or max(member.card.subsampling for member in members)
    for member in members:
        if subsampling % member.card.subsampling:
            raise ConfigError(
                f"member {member.name}: subsampling {member.card.subsampling} does not divide "
                f"the ensemble's {subsampling}; frame rates can only be merged by whole factors"
            )
        member.ratio = subsampling // member.card.subsampling
    return members, level, subsampling


def load_members(
    members: list[Member], device: torch.device, trust_custom_code: bool = False
) -> None:
    """Load each member's weights (sha256 checked against its card) onto ``device``."""
    for member in members:
        model, card = load_checkpoint(
            member.config.checkpoint, device, trust_custom_code=trust_custom_code
        )
        if card.weights_sha256 != member.card.weights_sha256:
            raise ModelError(f"member {member.name}: checkpoint changed while loading")
        member.model = model


def _to_rate(
    logp: torch.Tensor, lengths: torch.Tensor, ratio: int, how: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T_m, C) log-probs at ``ratio`` times the ensemble rate -> (B, T', C).

    ``decimate`` keeps member frames j * ratio; ``average`` averages the probabilities of
    member frames [j * ratio, (j + 1) * ratio) that are inside the utterance.
    """
    if ratio == 1:
        return logp, lengths
    out_len = (lengths + ratio - 1) // ratio  # (B,)
    if how == "decimate":
        return logp[:, ::ratio], out_len
    b, t, c = logp.shape
    tp = -(-t // ratio)
    pad = tp * ratio - t
    valid = torch.arange(tp * ratio, device=logp.device)[None, :] < lengths[:, None]  # (B, T'r)
    x = torch.nn.functional.pad(logp, (0, 0, 0, pad))  # (B, T' r, C)
    x = x.masked_fill(~valid[..., None], float("-inf")).view(b, tp, ratio, c)
    count = valid.view(b, tp, ratio).sum(-1).clamp(min=1)  # (B, T')
    return torch.logsumexp(x, dim=2) - count.log()[..., None], out_len  # (B, T', C)


def member_logprobs(
    mb: Member, x: torch.Tensor, lengths: torch.Tensor, num_classes: int, level: Level
) -> tuple[torch.Tensor, torch.Tensor]:
    """One member on a batch: (B, T', C) (or (B, C)) log-probs in ensemble space."""
    logits, out_len = mb.model(x, lengths)  # (B, T_m, C_m) or (B, C_m)
    logp = torch.log_softmax(logits.float() / mb.config.temperature, dim=-1)
    if mb.columns is not None:
        cols = torch.as_tensor(mb.columns, device=logp.device)
        shape = (*logp.shape[:-1], num_classes)
        if len(np.unique(mb.columns)) == len(mb.columns):  # one-to-one: move the columns
            logp = logp.new_full(shape, float("-inf")).index_copy_(-1, cols, logp)
        else:  # several member classes onto one: add their probabilities
            logp = logp.new_zeros(shape).index_add_(-1, cols, logp.exp()).log()
    if level == "frame":
        logp, out_len = _to_rate(logp, out_len, mb.ratio, mb.config.frame_rate)
    return logp, out_len


def find_nan(logp: torch.Tensor, lengths: torch.Tensor, level: Level) -> int | None:
    """Index of the first utterance with a NaN inside its valid frames, else None."""
    if not bool(torch.isnan(logp).any()):
        return None
    for b in range(logp.shape[0]):
        rows = logp[b, : int(lengths[b])] if level == "frame" else logp[b]
        if bool(torch.isnan(rows).any()):
            return b
    return None


def combine(
    parts: list[torch.Tensor], weights: list[float], how: str, coverage: list[np.ndarray | None]
) -> torch.Tensor:
    """Combine member log-probs (each (..., C)) into normalised ensemble log-probs."""
    if len(parts) == 1:
        return parts[0]
    w = torch.tensor(weights, dtype=torch.float32, device=parts[0].device)
    w = w / w.sum()
    stack = torch.stack(parts)  # (M, ..., C)
    shape = (len(parts),) + (1,) * (stack.dim() - 1)
    if how == "mean-prob":
        return torch.logsumexp(stack + w.log().view(shape), dim=0)
    c = stack.shape[-1]
    cover = torch.ones(len(parts), c, dtype=torch.float32, device=stack.device)  # (M, C)
    for m, cols in enumerate(coverage):
        if cols is not None:
            cover[m] = 0.0
            cover[m, torch.as_tensor(cols, device=stack.device)] = 1.0
    wc = w[:, None] * cover  # (M, C)
    denom = wc.sum(0)  # (C,)
    wn = torch.where(denom > 0, wc / denom.clamp(min=1e-30), wc)  # (M, C)
    wn = wn.view(len(parts), *(1,) * (stack.dim() - 2), c)
    terms = torch.where(wn > 0, stack * wn, torch.zeros_like(stack))  # -inf * 0 avoided
    mix = terms.sum(0)  # (..., C)
    mix = torch.where(denom > 0, mix, torch.full_like(mix, float("-inf")))
    return torch.log_softmax(mix, dim=-1)


class Ensemble:
    """Loaded members and the combination, run under ``torch.inference_mode``."""

    def __init__(
        self,
        ens: EnsembleConfig,
        members: list[Member],
        level: Level,
        subsampling: int,
        num_classes: int,
    ):
        self.config, self.members, self.level = ens, members, level
        self.subsampling, self.num_classes = subsampling, num_classes
        self.weights = [member.config.weight for member in members]
        self.coverage = [member.columns for member in members]

    def __call__(
        self, x: torch.Tensor, lengths: torch.Tensor, ids: list[str]
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """x (B, T, F), lengths (B,) -> ensemble log-probs (B, T', C) or (B, C), output
        lengths (B,) (the first member's), and each member's log-probs (same shape)."""
        parts: list[torch.Tensor] = []
        out_lengths: list[torch.Tensor] = []
        for member in self.members:
            logp, member_lengths = member_logprobs(member, x, lengths, self.num_classes, self.level)
            bad = find_nan(logp, member_lengths, self.level)
            if bad is not None:
                raise ModelError(
                    f"member {member.name}: NaN posteriors for utterance {ids[bad]} (broken "
                    "weights or input?)"
                )
            if parts and self.level == "frame":  # frames as the first member's
                frames, want = parts[0].shape[1], out_lengths[0]
                if logp.shape[1] != frames or bool((member_lengths != want).any()):
                    logp, member_lengths = _align(logp, member_lengths, frames, want, member.name)
            parts.append(logp)
            out_lengths.append(member_lengths)
        combined = combine(parts, self.weights, self.config.combine, self.coverage)
        return combined, out_lengths[0], parts


def _align(
    logp: torch.Tensor, ln: torch.Tensor, t: int, want: torch.Tensor, name: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Trim/pad a member's frames to the first member's (off by at most one frame)."""
    if bool(((ln - want).abs() > 1).any()):
        raise ModelError(f"member {name}: output lengths differ from the first member's")
    if logp.shape[1] >= t:
        return logp[:, :t], want
    pad = logp[:, -1:].expand(-1, t - logp.shape[1], -1)
    return torch.cat([logp, pad], dim=1), want
