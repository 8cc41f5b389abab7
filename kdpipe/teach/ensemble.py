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
from typing import TYPE_CHECKING, Any

import numpy as np

from kdpipe.errors import ConfigError, KdpipeError, LabelSetError, ModelError
from kdpipe.labels import LabelSet
from kdpipe.models.card import ModelCard
from kdpipe.models.checkpoint import read_card
from kdpipe.teach.ensemble_yaml import EnsembleConfig, MemberConfig

if TYPE_CHECKING:
    import torch

    from kdpipe.corpus.featstore import FeatureStore


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


def _columns(m: MemberConfig, card: ModelCard, labels: LabelSet, where: str) -> np.ndarray | None:
    """The member's classes as ensemble class indices; None when the label sets are equal."""
    if m.label_map is None:
        card.label_set.check_same(labels, where, "the corpus")
        return None
    mapping = {} if m.label_map == "names" else dict(m.label_map)
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


def plan_members(ens: EnsembleConfig, store: FeatureStore) -> tuple[list[Member], str, int]:
    """Check every member against the corpus from its card alone (no weights read).

    Returns the members, the level (``frame`` or ``utterance``) and the ensemble
    subsampling. Errors (missing checkpoint, label sets, features, levels, frame rates)
    come here, before any inference.
    """
    members = []
    for i, m in enumerate(ens.members):
        where = f"member {i} ({m.checkpoint})"
        if not Path(m.checkpoint).is_dir():
            raise ModelError(f"{where}: checkpoint directory not found")
        try:
            card = read_card(m.checkpoint)
        except KdpipeError as e:
            raise ModelError(f"{where}: {e}") from None
        cols = _columns(m, card, store.labels, where)
        card.check_compatible(
            card.label_set, store.config.fingerprint, f"corpus {store.location}",
            features=store.config, name=where,
        )  # fmt: skip
        if card.num_features != store.dim:
            raise ModelError(
                f"{where}: expects {card.num_features} features, corpus has {store.dim}"
            )
        members.append(Member(m, card, cols, 1))
    levels = {mb.card.level for mb in members}
    if len(levels) > 1:
        raise ConfigError("ensemble: members mix frame-level and utterance-level models")
    level = levels.pop()
    subs = [mb.card.subsampling for mb in members]
    s = ens.subsampling or max(subs)
    for mb in members:
        if s % mb.card.subsampling:
            raise ConfigError(
                f"member {mb.name}: subsampling {mb.card.subsampling} does not divide the "
                f"ensemble's {s}; frame rates can only be merged by whole factors"
            )
        mb.ratio = s // mb.card.subsampling
    return members, level, s


def load_members(
    members: list[Member], device: torch.device, trust_custom_code: bool = False
) -> None:
    """Load each member's weights (sha256 checked against its card) onto ``device``."""
    from kdpipe.models.checkpoint import load_checkpoint

    for mb in members:
        model, card = load_checkpoint(
            mb.config.checkpoint, device, trust_custom_code=trust_custom_code
        )
        if card.weights_sha256 != mb.card.weights_sha256:
            raise ModelError(f"member {mb.name}: checkpoint changed while loading")
        mb.model = model


def _to_rate(
    logp: torch.Tensor, lengths: torch.Tensor, ratio: int, how: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T_m, C) log-probs at ``ratio`` times the ensemble rate -> (B, T', C).

    ``decimate`` keeps member frames j * ratio; ``average`` averages the probabilities of
    member frames [j * ratio, (j + 1) * ratio) that are inside the utterance.
    """
    import torch

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
    mb: Member, x: torch.Tensor, lengths: torch.Tensor, num_classes: int, level: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """One member on a batch: (B, T', C) (or (B, C)) log-probs in ensemble space."""
    import torch

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


def find_nan(logp: torch.Tensor, lengths: torch.Tensor, level: str) -> int | None:
    """Index of the first utterance with a NaN inside its valid frames, else None."""
    import torch

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
    import torch

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

    def __init__(self, ens: EnsembleConfig, members: list[Member], level: str, sub: int, c: int):
        self.config, self.members, self.level = ens, members, level
        self.subsampling, self.num_classes = sub, c
        self.weights = [m.config.weight for m in members]
        self.coverage = [m.columns for m in members]

    def __call__(
        self, x: torch.Tensor, lengths: torch.Tensor, ids: list[str]
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """x (B, T, F), lengths (B,) -> ensemble log-probs (B, T', C) or (B, C), output
        lengths (B,), and each member's log-probs (same shape)."""
        parts, out_len = [], None
        for mb in self.members:
            logp, ln = member_logprobs(mb, x, lengths, self.num_classes, self.level)
            bad = find_nan(logp, ln, self.level)
            if bad is not None:
                raise ModelError(
                    f"member {mb.name}: NaN posteriors for utterance {ids[bad]} (broken "
                    "weights or input?)"
                )
            if out_len is None:
                out_len = ln
            elif self.level == "frame" and (
                logp.shape[1] != parts[0].shape[1] or bool((ln != out_len).any())
            ):
                logp, ln = _align(logp, ln, parts[0].shape[1], out_len, mb.name)
            parts.append(logp)
        combined = combine(parts, self.weights, self.config.combine, self.coverage)
        return combined, out_len, parts


def _align(
    logp: torch.Tensor, ln: torch.Tensor, t: int, want: torch.Tensor, name: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Trim/pad a member's frames to the first member's (off by at most one frame)."""
    import torch

    if bool(((ln - want).abs() > 1).any()):
        raise ModelError(f"member {name}: output lengths differ from the first member's")
    if logp.shape[1] >= t:
        return logp[:, :t], want
    pad = logp[:, -1:].expand(-1, t - logp.shape[1], -1)
    return torch.cat([logp, pad], dim=1), want
