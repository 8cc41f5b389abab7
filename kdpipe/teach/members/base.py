"""What every member kind provides: a ``Declared`` description read before any weights
load, and a ``Network`` that maps a padded input batch to raw outputs.

Legend: B batch, T input frames (or S samples for a waveform member), T_m the member's
output frames, C_m its classes.

A kind module (``checkpoint``, ``module``, ``torchscript``, ``onnx``, ``huggingface``) has
two functions:

- ``describe(config, where) -> Declared``: cheap (a card, a config file, an ONNX header),
  so that every member is checked against the corpus before any inference;
- ``load(config, declared, device) -> Network``: the weights, on ``device``.

``Network(x, lengths)`` takes x (B, T, F) features or (B, S) samples, zero padded, and
lengths (B,) int64, and returns ``(out, out_lengths)``: out (B, T_m, C_m) or (B, C_m) for
an utterance-level member, in the member's ``output`` kind (logits, log_probs, probs),
and out_lengths (B,) its valid output frames.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from kdpipe.errors import ModelError
from kdpipe.labels import LabelSet
from kdpipe.levels import Level

Network = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class Declared:
    """What a member says about itself, known before its weights load."""

    labels: LabelSet  # the member's classes, index order
    level: Level  # frame or utt
    output: str  # logits, log_probs or probs
    subsampling: int  # output frames per input frame (features input)
    frame_shift_ms: float | None  # output frame shift; None: input shift x subsampling
    num_features: int | None  # the feature dimension it needs; None: not declared
    weights_sha256: str  # names the exact network (its file(s))
    card: dict[str, Any] = field(default_factory=dict)  # provenance, recorded in the store
    feature_fingerprint: str = ""  # checkpoint kind: the features it was trained on


def lengths_by_ratio(lengths: torch.Tensor, padded: int, frames: int) -> torch.Tensor:
    """Valid output frames of a network that does not say: ceil(lengths * T_m / T),
    clamped to [1, T_m] (a fixed-stride network gives ceil(L / s) frames for L inputs)."""
    out = torch.div(lengths * frames + padded - 1, padded, rounding_mode="floor")  # (B,)
    return out.clamp(min=1, max=max(frames, 1))


def split_outputs(
    result: Any, lengths: torch.Tensor, padded: int, level: Level, where: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """A network's return value (a tensor, or a tuple (out, out_lengths)) as
    ``(out, out_lengths)``, shape-checked; missing lengths come from ``lengths_by_ratio``."""
    out_lengths = None
    if isinstance(result, (tuple, list)):
        if not result or len(result) > 2:
            raise ModelError(
                f"{where}: returned {len(result)} outputs; expected out or (out, lengths)"
            )
        out = result[0]
        out_lengths = result[1] if len(result) == 2 else None
    else:
        out = result
    if not isinstance(out, torch.Tensor):
        raise ModelError(f"{where}: returned {type(out).__name__}, not a tensor")
    want = 3 if level == "frame" else 2
    if out.dim() != want or out.shape[0] != len(lengths):
        shape = "(B, T, C)" if level == "frame" else "(B, C)"
        raise ModelError(
            f"{where}: output of shape {tuple(out.shape)}, expected {shape} for a batch of "
            f"{len(lengths)} at {level} level"
        )
    if level == "utt":
        return out, torch.ones_like(lengths)
    if out_lengths is None:
        return out, lengths_by_ratio(lengths, padded, out.shape[1])
    out_lengths = torch.as_tensor(out_lengths, device=out.device).to(torch.int64).reshape(-1)
    if out_lengths.shape != lengths.shape:
        raise ModelError(f"{where}: output lengths of shape {tuple(out_lengths.shape)}")
    return out, out_lengths.clamp(min=1, max=out.shape[1])


def check_classes(out: torch.Tensor, declared: Declared, where: str) -> None:
    """The output's class dimension equals the declared label count."""
    if out.shape[-1] != len(declared.labels):
        raise ModelError(
            f"{where}: outputs {out.shape[-1]} classes, its label set has {len(declared.labels)}"
        )
