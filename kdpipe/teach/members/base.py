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

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdpipe.errors import ConfigError, KdpipeError, LabelSetError, ModelError
from kdpipe.labels import LabelSet
from kdpipe.levels import LEVEL_WORDS, Level, parse_level
from kdpipe.teach.ensemble_yaml import MemberConfig

# returns out, or (out, out_lengths): ``split_outputs`` reads either
Network = Callable[[torch.Tensor, torch.Tensor], Any]


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


def declared_by_config(
    config: MemberConfig,
    where: str,
    labels: LabelSet,
    weights_sha256: str,
    card: dict[str, Any],
    num_features: int | None = None,
) -> Declared:
    """What an outside member (module, torchscript, onnx) declares: its yaml keys say the
    level, output, subsampling and frame shift; the model file the rest."""
    return Declared(
        labels=labels,
        level=parse_level(config.level, where),
        output=config.output,
        subsampling=config.subsampling,
        frame_shift_ms=config.frame_shift_ms,
        num_features=num_features,
        weights_sha256=weights_sha256,
        card=card,
    )


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


MESSAGE_CHARS = 300  # of a foreign error's message, in ours


def one_line(error: BaseException) -> str:
    """``Type: message`` on one line: TorchScript and onnxruntime errors span many lines
    (a TorchScript traceback ends with the error itself, so its last line is kept)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))  # terminal colour codes
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    kind = type(error).__name__
    text = lines[-1] if "Traceback of TorchScript" in text else " ".join(lines)
    text = text.removeprefix(f"{kind}: ")  # TorchScript repeats the type
    return f"{kind}: {text[:MESSAGE_CHARS]}"


def member_labels(
    config: MemberConfig,
    where: str,
    corpus_labels: LabelSet | None,
    own: LabelSet | None = None,
    own_what: str = "",
) -> tuple[LabelSet, str]:
    """The member's label set and what it came from (for messages): the ``labels:`` file;
    else its own (``own``, described by ``own_what``); else the corpus'."""
    if config.labels:
        try:
            return LabelSet.read(config.labels), "its labels file"
        except LabelSetError as error:
            raise LabelSetError(f"{where}: {error}") from None
    if own is not None:
        return own, own_what or "its own labels"
    if corpus_labels is None:
        raise ConfigError(
            f"{where}: give labels: (a labels file): the model names none and the corpus "
            "(transcribed) has no label set"
        )
    return corpus_labels, "the corpus' label set"


def labels_from_text(text: str, where: str, what: str) -> LabelSet:
    """A label set a model file carries (ONNX metadata, a TorchScript extra file): a JSON
    list of names, or one name a line."""
    stripped = text.strip()
    names: Any
    if stripped.startswith("["):
        try:
            names = json.loads(stripped)
        except ValueError as error:
            raise LabelSetError(f"{where}: {what} is not a JSON list: {error}") from None
    else:
        names = [line.strip() for line in stripped.splitlines() if line.strip()]
    if not names or not all(isinstance(n, str) and n and not n.isspace() for n in names):
        raise LabelSetError(f"{where}: {what} must be a non-empty list of label names")
    try:
        return LabelSet(tuple(names))
    except LabelSetError as error:
        raise LabelSetError(f"{where}: {what}: {error}") from None


def existing_file(path: str, where: str, what: str) -> Path:
    """``path`` as a ``Path``; ``ModelError`` if it is not a file."""
    file = Path(path)
    if not file.is_file():
        raise ModelError(f"{where}: {what} {file} not found")
    return file


def read_checked(file: Path, declared: Declared, name: str) -> bytes:
    """The bytes of ``file``, whose sha256 must still be the one ``describe`` saw."""
    data = file.read_bytes()
    if hashlib.sha256(data).hexdigest() != declared.weights_sha256:
        raise ModelError(f"member {name}: {file.name} changed between planning and loading")
    return data


def check_attributes(model: Any, config: MemberConfig, declared: Declared, name: str) -> None:
    """A model that declares kdpipe's ``level`` / ``subsampling`` attributes agrees with
    the member's ``level:`` and ``subsampling:`` (which the planner already used)."""
    level = getattr(model, "level", None)
    if isinstance(level, str):
        try:
            own = parse_level(level)
        except ConfigError:
            own = None
        if own is not None and own != declared.level:
            raise ModelError(
                f"member {name}: the model is {LEVEL_WORDS[own]} level (its 'level' attribute) "
                f"but the member says level: {declared.level}; set level: {own}"
            )
    sub = getattr(model, "subsampling", None)
    if (
        declared.level == "frame"
        and config.input.waveform is None
        and isinstance(sub, int)
        and not isinstance(sub, bool)
        and sub != declared.subsampling
    ):
        raise ModelError(
            f"member {name}: the model has subsampling {sub} (its 'subsampling' attribute) "
            f"but the member says {declared.subsampling}; set subsampling: {sub}"
        )


class TorchNetwork:
    """A torch module (eval mode, on the device) as a ``Network``: the input cast to the
    model's floating dtype, a failure a one-line ``ModelError``."""

    def __init__(self, model: nn.Module, name: str) -> None:
        self.model, self.name = model, name
        floats = [p.dtype for p in model.parameters() if p.is_floating_point()]
        self.dtype = floats[0] if floats else None

    def __call__(self, x: torch.Tensor, lengths: torch.Tensor) -> Any:
        if self.dtype is not None and x.is_floating_point() and x.dtype != self.dtype:
            x = x.to(self.dtype)
        try:
            return self.model(x, lengths)
        except KdpipeError:
            raise
        except Exception as error:
            raise ModelError(
                f"member {self.name}: forward(x, lengths) on x of shape {list(x.shape)} "
                f"failed: {one_line(error)}"
            ) from error
