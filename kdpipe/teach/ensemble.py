"""Ensemble members on one batch: inputs, label maps, frame rates, combination.

Legend: B batch, T input frames of the corpus' features, T_m a member's output frames,
T' the ensemble's output frames (ceil(T / s) for subsampling s), C ensemble classes, C_m
a member's classes.

Each member reads its own input (``members.inputs``: the corpus' features, another
feature store, the waveform) and returns outputs in its own kind (logits, log-probs,
probs); those become log-softmax at the member's temperature, are moved into the
ensemble's label space (``label_map``) and frame rate, and are fitted to the ensemble's
frames, then the members are combined:

- ``mean-prob``: p = sum_m w_m p_m (weights normalised to sum 1), computed as a logsumexp;
- ``mean-logprob``: log p ∝ sum_m w_m log p_m / sum_m w_m (geometric mean, renormalised);
  a class that a member does not predict (label map over a subset) is averaged over the
  members that do predict it.

Frame rates (docs/ensemble-yaml.md, "Frame rates"): a member's output shift is m corpus
frames (its frame_shift_ms over the corpus', or its subsampling); the ensemble's is s.
m dividing s: groups of s / m member frames are averaged (or decimated); s dividing m:
each member frame is repeated m / s times. The ensemble has ceil(L / s) output frames for
an utterance of L input frames; a member off by at most ``tolerance`` frames is trimmed
or padded (its last frame repeated), a larger mismatch is an error naming the utterance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from kdpipe.corpus.featstore import FeatureStore
from kdpipe.errors import ConfigError, CorpusError, KdpipeError, LabelSetError, ModelError
from kdpipe.labels import LabelSet
from kdpipe.levels import Level
from kdpipe.models.card import ModelCard
from kdpipe.teach import members as kinds
from kdpipe.teach.ensemble_yaml import EnsembleConfig, MemberConfig
from kdpipe.teach.members.base import Declared, Network, check_classes, one_line, split_outputs
from kdpipe.teach.members.inputs import FRAME_TOLERANCE, InputSource, input_source


@dataclass
class Member:
    """A planned member: what it declared, how its outputs map onto the ensemble's."""

    config: MemberConfig
    declared: Declared
    columns: np.ndarray | None  # (C_m,) ensemble class of each member class; None = same
    ratio: int  # member frames merged into one ensemble frame (>= 1)
    network: Network | None = None  # once loaded
    repeat: int = 1  # ensemble frames each member frame becomes (a slower member; >= 1)
    input_key: str = "features:"  # which input source it reads (``InputConfig.key``)
    shift: int = 1  # its output frame shift in corpus frames

    @property
    def name(self) -> str:
        return self.config.display_name

    @property
    def tolerance(self) -> int:
        """Ensemble frames its output may be off by (one member frame, at least 2)."""
        return max(FRAME_TOLERANCE, self.repeat)


def _columns(
    member: MemberConfig, own: LabelSet, labels: LabelSet, where: str
) -> np.ndarray | None:
    """The member's classes as ensemble class indices; None when the label sets are equal."""
    if member.label_map is None:
        own.check_same(labels, where, "the ensemble (the corpus' labels)")
        return None
    mapping = member.label_map if isinstance(member.label_map, dict) else {}  # {} for "names"
    unknown = sorted(set(mapping) - set(own.names))
    if unknown:
        raise ConfigError(f"{where}: label_map names labels the member does not have: {unknown}")
    cols = []
    for name in own.names:
        target = mapping.get(name, name)
        if target not in labels:
            raise LabelSetError(
                f"{where}: member label {name!r} maps to {target!r}, which is not in the "
                f"ensemble's label set ({len(labels)} labels); add it to label_map"
            )
        cols.append(labels.index(target))
    return np.asarray(cols, dtype=np.int64)


def corpus_labels(store: FeatureStore) -> LabelSet | None:
    """The corpus' label set; None for a transcribed corpus (it has none)."""
    try:
        return store.labels
    except CorpusError:
        return None


@dataclass
class Plan:
    """Every member checked against the corpus, before any weights load."""

    members: list[Member]
    level: Level
    subsampling: int  # the ensemble's output frames per corpus frame
    labels: LabelSet  # the ensemble's (and the store's) label set
    sources: dict[str, InputSource]  # input key -> source
    ctc: dict[str, Any] | None = None  # CTC teachers: their blank and units (card's ``ctc``)


def plan_members(
    ens: EnsembleConfig,
    store: FeatureStore,
    selection: np.ndarray | None = None,
    trust_custom_code: bool = False,
) -> Plan:
    """Check every member against the corpus from what it declares (no weights read).

    The ensemble's labels are the corpus' (its first member's for a transcribed corpus,
    which has none, and for CTC teachers: their tokens and blank, which every member must
    share). Errors (missing files, code without the trust flag, label sets,
    inputs, feature configs and dimensions, levels, frame rates) come here.
    """
    selection = store.indices(None) if selection is None else selection
    own_labels = corpus_labels(store)
    sources: dict[str, InputSource] = {}
    members: list[Member] = []
    labels = own_labels
    ctc: dict[str, Any] | None = None
    for i, config in enumerate(ens.members):
        where = f"member {i} ({config.display_name or config.source})"
        declared = kinds.describe(config, where, own_labels)
        member_ctc = declared.card.get("ctc")
        if i == 0 and member_ctc is not None:
            labels, ctc = declared.labels, member_ctc  # CTC: the tokens, not corpus labels
        elif (member_ctc is None) != (ctc is None):
            raise ConfigError(
                f"{where}: the ensemble mixes CTC and frame-label teachers; their outputs "
                "are not posteriors over one label set"
            )
        elif ctc is not None and member_ctc is not None and member_ctc != ctc:
            raise LabelSetError(
                f"{where}: its CTC units or blank differ from member 0's (fingerprint "
                f"{member_ctc.get('units', {}).get('fingerprint')} vs "
                f"{ctc.get('units', {}).get('fingerprint')}): members must share one token set"
            )
        if labels is None:
            labels = declared.labels  # a transcribed corpus: the first member's
        if kinds.runs_code(config) and not trust_custom_code:
            raise ModelError(
                f"{where}: a {config.kind} member imports or runs code that came with it: "
                "pass --trust-custom-code if you trust it"
            )
        key = config.input.key
        if key not in sources:
            try:
                sources[key] = input_source(config.input, store, selection)
            except ConfigError as error:
                raise ConfigError(f"{where}: {error}") from None
        source = sources[key]
        _check_input(config, declared, source, where)
        columns = _columns(config, declared.labels, labels, where)
        shift = _shift(config, declared, source, store, where)
        members.append(Member(config, declared, columns, 1, input_key=key, shift=shift))
    assert labels is not None
    levels = {member.declared.level for member in members}
    if len(levels) > 1:
        raise ConfigError("ensemble: members mix frame-level and utterance-level models")
    level = levels.pop()
    if level == "utt":
        return Plan(members, level, 1, labels, sources, ctc)
    subsampling = ens.subsampling or max(member.shift for member in members)
    for member in members:
        if subsampling % member.shift == 0:
            member.ratio = subsampling // member.shift
        elif member.shift % subsampling == 0:
            member.repeat = member.shift // subsampling
        else:
            raise ConfigError(
                f"member {member.name}: its frame shift of {member.shift} corpus frames and the "
                f"ensemble's {subsampling} are not whole multiples of one another"
            )
    return Plan(members, level, subsampling, labels, sources, ctc)


def _check_input(config: MemberConfig, declared: Declared, source: InputSource, where: str) -> None:
    """The member's declared features (dimension, and a checkpoint's feature config)
    agree with its input."""
    if source.what == "waveform":
        if config.kind == "checkpoint":
            raise ConfigError(f"{where}: a kdpipe checkpoint reads features, not the waveform")
        return
    if declared.num_features is not None and declared.num_features != source.dim:
        raise ModelError(
            f"{where}: expects {declared.num_features} features, its input has {source.dim}"
        )
    if config.kind == "checkpoint":
        card = ModelCard.from_dict(declared.card)
        input_store = source.store  # type: ignore[attr-defined]
        card.check_compatible(
            card.label_set, input_store.feature_fingerprint, f"corpus {input_store.location}",
            features=input_store.config, name=where,
        )  # fmt: skip


def _shift(
    config: MemberConfig, declared: Declared, source: InputSource, store: FeatureStore, where: str
) -> int:
    """The member's output frame shift in corpus frames (a whole number >= 1)."""
    if declared.level == "utt":
        return 1
    corpus_shift = store.config.frame_shift_ms
    if declared.frame_shift_ms is None:
        if source.what == "waveform":
            raise ConfigError(f"{where}: a waveform member needs frame_shift_ms (its output shift)")
        return declared.subsampling
    frames = declared.frame_shift_ms / corpus_shift
    if frames < 1 - 1e-6 or abs(frames - round(frames)) > 1e-6:
        raise ConfigError(
            f"{where}: output frame shift {declared.frame_shift_ms} ms is not a whole multiple of "
            f"the corpus' {corpus_shift} ms"
        )
    return round(frames)


def load_members(members: list[Member], device: torch.device) -> None:
    """Load each member's network onto ``device`` (checked against what it declared)."""
    for member in members:
        member.network = kinds.load(member.config, member.declared, device)


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


def _repeat(
    logp: torch.Tensor, lengths: torch.Tensor, times: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T_m, C) -> (B, T_m * times, C): each member frame repeated ``times`` times."""
    if times == 1:
        return logp, lengths
    return logp.repeat_interleave(times, dim=1), lengths * times


def _to_logprobs(out: torch.Tensor, kind: str, temperature: float) -> torch.Tensor:
    """A member's outputs (``logits``, ``log_probs``, ``probs``) as log-softmax at T."""
    x = out.float()
    if kind == "probs":
        x = x.clamp(min=0).log()
    if temperature != 1.0:  # a full pass over (B, T, C) saved at the usual T = 1
        x = x / temperature
    return torch.log_softmax(x, dim=-1)


def _bad_values(out: torch.Tensor, lengths: torch.Tensor, kind: str, level: Level) -> int | None:
    """Index of the first utterance whose valid outputs are not valid ``kind`` values:
    NaN anywhere, inf in logits, +inf in log-probs, negative or inf probabilities.

    The usual case costs one reduction over (B, T, C) and allocates nothing: the sum of
    the outputs is finite (NaN and +-inf propagate into it), not NaN or +inf for
    log-probs, finite with a non-negative minimum for probabilities. Only an unusual sum
    (padding, overflow, or a real fault) pays for the exact per-element search."""
    total = out.sum(dtype=torch.float32)
    if kind == "logits":
        usual = torch.isfinite(total)
    elif kind == "log_probs":
        usual = ~torch.isnan(total) & (total != float("inf"))
    else:
        usual = torch.isfinite(total) & (out.amin() >= 0)
    if bool(usual):
        return None
    if kind == "logits":
        bad = ~torch.isfinite(out)
    elif kind == "log_probs":
        bad = torch.isnan(out) | (out == float("inf"))
    else:
        bad = ~torch.isfinite(out) | (out < 0)
    if not bool(bad.any()):
        return None
    for b in range(out.shape[0]):
        rows = bad[b, : int(lengths[b])] if level == "frame" else bad[b]
        if bool(rows.any()):
            return b
    return None


def member_logprobs(
    mb: Member,
    x: torch.Tensor,
    lengths: torch.Tensor,
    num_classes: int,
    level: Level,
    ids: list[str] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One member on its input batch: (B, T_e, C) (or (B, C)) log-probs in ensemble space
    at the ensemble's rate (before fitting to its frames), and their lengths."""
    assert mb.network is not None, f"member {mb.name} not loaded"
    where = f"member {mb.name}"
    try:
        result = mb.network(x, lengths)
    except KdpipeError:
        raise
    except Exception as error:  # a model's own failure (wrong input size...), on one line
        raise ModelError(
            f"{where}: forward on input of shape {list(x.shape)} failed: {one_line(error)}"
        ) from error
    out, out_len = split_outputs(result, lengths, x.shape[1], level, where)  # (B, T_m, C_m)
    check_classes(out, mb.declared, where)
    bad = _bad_values(out, out_len, mb.declared.output, level)
    if bad is not None:
        utt = ids[bad] if ids else str(bad)
        raise ModelError(
            f"{where}: NaN or infinite {mb.declared.output} for utterance {utt} (broken weights "
            "or input?)"
        )
    logp = _to_logprobs(out, mb.declared.output, mb.config.temperature)
    if mb.columns is not None:
        cols = torch.as_tensor(mb.columns, device=logp.device)
        shape = (*logp.shape[:-1], num_classes)
        if len(np.unique(mb.columns)) == len(mb.columns):  # one-to-one: move the columns
            logp = logp.new_full(shape, float("-inf")).index_copy_(-1, cols, logp)
        else:  # several member classes onto one: add their probabilities
            logp = logp.new_zeros(shape).index_add_(-1, cols, logp.exp()).log()
    if level == "frame":
        logp, out_len = _to_rate(logp, out_len, mb.ratio, mb.config.frame_rate)
        logp, out_len = _repeat(logp, out_len, mb.repeat)
    return logp, out_len


def fit_frames(
    logp: torch.Tensor,
    lengths: torch.Tensor,
    want: torch.Tensor,
    frames: int,
    tolerance: int,
    name: str,
    ids: list[str],
) -> torch.Tensor:
    """(B, T_m', C) member log-probs -> (B, T', C) with ``want`` (B,) valid frames each:
    trimmed, or padded with each utterance's last frame; off by more than ``tolerance``
    frames is a ``ModelError`` naming the utterance."""
    if logp.shape[1] == frames and bool((lengths == want).all()):
        return logp
    off = (lengths - want).abs()
    if bool((off > tolerance).any()):
        b = int(torch.argmax((off > tolerance).to(torch.int64)))
        raise ModelError(
            f"member {name}: {int(lengths[b])} output frames for utterance {ids[b]}, the "
            f"ensemble expects {int(want[b])} (tolerance {tolerance}): wrong frame shift or "
            "subsampling?"
        )
    last = (torch.minimum(lengths, want) - 1).clamp(min=0)  # (B,)
    t = torch.arange(frames, device=logp.device)[None, :]  # (1, T')
    index = torch.minimum(t, last[:, None])  # (B, T')
    return logp.gather(1, index[..., None].expand(-1, -1, logp.shape[-1]))  # (B, T', C)


def find_nan(logp: torch.Tensor, lengths: torch.Tensor, level: Level) -> int | None:
    """Index of the first utterance with a NaN inside its valid frames, else None."""
    if not bool(torch.isnan(logp.sum())):  # log-probs hold no +inf: only NaN makes it NaN
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

    def __init__(self, ens: EnsembleConfig, plan: Plan):
        self.config, self.plan = ens, plan
        self.members, self.level, self.subsampling = plan.members, plan.level, plan.subsampling
        self.num_classes = len(plan.labels)
        self.weights = [member.config.weight for member in self.members]
        self.coverage = [member.columns for member in self.members]

    def __call__(
        self,
        inputs: dict[str, tuple[torch.Tensor, torch.Tensor]],
        lengths: torch.Tensor,
        ids: list[str],
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """inputs: input key -> (x, x_lengths) of the batch; lengths (B,): input frames of
        the corpus' features (the student's). Returns the ensemble log-probs (B, T', C) or
        (B, C), the output lengths (B,) = ceil(lengths / s), and each member's log-probs."""
        s = self.subsampling
        want = torch.div(lengths + s - 1, s, rounding_mode="floor")  # (B,)
        frames = int(want.max()) if len(want) else 0
        parts: list[torch.Tensor] = []
        for member in self.members:
            x, x_lengths = inputs[member.input_key]
            logp, member_lengths = member_logprobs(
                member, x, x_lengths, self.num_classes, self.level, ids
            )
            if self.level == "frame":
                logp = fit_frames(
                    logp, member_lengths, want, frames, member.tolerance, member.name, ids
                )
            # finite logits (checked in member_logprobs) cannot give a NaN log-softmax; a row
            # of zero probabilities (or -inf log-probs) can: only those kinds are searched
            checked = member.declared.output == "logits"
            bad = None if checked else find_nan(logp, want, self.level)
            if bad is not None:
                raise ModelError(
                    f"member {member.name}: NaN posteriors for utterance {ids[bad]} (broken "
                    "weights or input?)"
                )
            parts.append(logp)
        combined = combine(parts, self.weights, self.config.combine, self.coverage)
        out_lengths = want if self.level == "frame" else torch.ones_like(lengths)
        return combined, out_lengths, parts
