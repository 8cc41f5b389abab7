"""The student protocol and ``check_protocol``, which tests a model against it.

The protocol (documented with an example in ``kdpipe.models``): an ``nn.Module`` with

- ``level``: ``"frame"`` (one posterior per frame) or ``"utt"`` (one per utterance;
  ``"utterance"`` is read the same, see ``kdpipe.levels``);
- ``subsampling``: int >= 1 (frame level; output frame j lines up with input frame j * s);
- ``forward(x, lengths) -> (logits, out_lengths)`` with x (B, T, F) float, lengths (B,)
  int64 in [1, T]; frame level: logits (B, ceil(T / s), C), out_lengths ceil(lengths / s);
  utterance level: logits (B, C), out_lengths all ones. Padded frames (t >= lengths[b])
  hold arbitrary values and must not change any real output.

Shapes: B batch, T frames, F features, C classes, s subsampling, T' = ceil(T / s).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from kdpipe.errors import ConfigError, ModelError
from kdpipe.levels import UTT, Level, parse_level

# The dummy batch: an odd, prime T and lengths that are not multiples of any usual s.
_T = 23
_LENGTHS = (23, 16, 5)


def model_name(model: Any) -> str:
    cls = type(model)
    return f"{cls.__module__}:{cls.__qualname__}"


def model_level(model: Any) -> Level:
    """The model's declared ``level`` as a ``Level``; ``ModelError`` if missing or not
    frame/utt (``"utterance"`` is accepted for utt)."""
    name = model_name(model)
    if not hasattr(model, "level"):
        raise ModelError(
            f"model {name} has no 'level' attribute: add the class attribute "
            "level = 'frame' (one posterior per frame) or 'utt' (one per utterance)"
        )
    try:
        return parse_level(model.level, f"model {name}")
    except ConfigError as error:
        raise ModelError(str(error)) from None


def model_subsampling(model: Any) -> int:
    """The declared frame ``subsampling`` (1 for utterance-level models)."""
    name = model_name(model)
    if model_level(model) == UTT:
        return 1
    if not hasattr(model, "subsampling"):
        raise ModelError(
            f"model {name} is frame level but has no 'subsampling' attribute: add the class "
            "attribute subsampling = 1 (or the factor by which it reduces the frame rate)"
        )
    s = model.subsampling
    if isinstance(s, bool) or not isinstance(s, int) or s < 1:
        raise ModelError(f"model {name}: subsampling must be an int >= 1, got {s!r}")
    return s


def check_protocol(
    model: nn.Module, num_features: int, num_classes: int, check_padding: bool = True
) -> None:
    """Run a tiny padded batch through ``model``; ``ModelError`` saying what breaks the protocol.

    Checks the attributes, the output types, ranks, shapes and lengths, finiteness, and
    (``check_padding``) that each utterance gives the same outputs alone and padded in the
    batch. Runs in eval mode without gradients; the model's train/eval mode is restored.
    """
    name = model_name(model)
    if not isinstance(model, nn.Module):
        raise ModelError(f"model {name} is not a torch.nn.Module")
    level = model_level(model)
    s = model_subsampling(model)
    params = list(model.parameters())
    if not params:
        raise ModelError(f"model {name} has no parameters to train")
    floats = [p for p in params if p.is_floating_point()]
    dtype = floats[0].dtype if floats else torch.float32
    device = params[0].device

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(len(_LENGTHS), _T, num_features, generator=gen)  # (B, T, F)
    lengths = torch.tensor(_LENGTHS, dtype=torch.int64)  # (B,)
    for b, n in enumerate(_LENGTHS):
        x[b, n:] = 100.0  # loud padding: any leak shows
    x, lengths = x.to(device=device, dtype=dtype), lengths.to(device)

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits, out_lengths = _call(model, name, x, lengths)
            _check_outputs(name, level, s, num_classes, logits, out_lengths, lengths)
            if check_padding:
                _check_padding(model, name, level, x, lengths, logits, out_lengths)
    finally:
        model.train(was_training)


def _call(
    model: nn.Module, name: str, x: torch.Tensor, lengths: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    what = f"{name}.forward(x, lengths) on x of shape {tuple(x.shape)}, lengths {lengths.tolist()}"
    try:
        out = model(x, lengths)
    except Exception as error:
        raise ModelError(f"{what} failed: {type(error).__name__}: {error}") from error
    if isinstance(out, torch.Tensor):
        raise ModelError(
            f"{what} returned a single tensor; it must return a tuple (logits, out_lengths)"
        )
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        got = type(out).__name__
        if isinstance(out, (tuple, list)):
            got += f" of length {len(out)}"
        raise ModelError(f"{what} returned a {got}; it must return a tuple (logits, out_lengths)")
    logits, out_lengths = out
    for label, t in (("logits", logits), ("out_lengths", out_lengths)):
        if not isinstance(t, torch.Tensor):
            raise ModelError(f"{what}: {label} is a {type(t).__name__}, not a torch.Tensor")
    return logits, out_lengths


def _check_outputs(
    name: str,
    level: Level,
    s: int,
    num_classes: int,
    logits: torch.Tensor,
    out_lengths: torch.Tensor,
    lengths: torch.Tensor,
) -> None:
    b = lengths.shape[0]
    if not logits.is_floating_point():
        raise ModelError(f"model {name}: logits must be floating point, got {logits.dtype}")
    if level == "frame":
        t_out = -(-_T // s)
        want: tuple[int, ...] = (b, t_out, num_classes)
        if logits.dim() != 3:
            hint = " (a clip classifier must declare level = 'utt')" if logits.dim() == 2 else ""
            raise ModelError(
                f"model {name} is frame level: logits must have shape (B, T', C) = {want}, "
                f"got rank {logits.dim()} shape {tuple(logits.shape)}{hint}"
            )
        if logits.shape[1] != t_out:
            raise ModelError(
                f"model {name} returned {logits.shape[1]} frames for {_T} input frames, but its "
                f"declared subsampling = {s} needs T' = ceil({_T} / {s}) = {t_out}"
            )
        want_lengths = [-(-n // s) for n in lengths.tolist()]
    else:
        want = (b, num_classes)
        if logits.dim() != 2:
            hint = " (pool over time, or declare level = 'frame')" if logits.dim() == 3 else ""
            raise ModelError(
                f"model {name} is utterance level: logits must have shape (B, C) = {want}, "
                f"got rank {logits.dim()} shape {tuple(logits.shape)}{hint}"
            )
        want_lengths = [1] * b
    if logits.shape[0] != b:
        raise ModelError(f"model {name}: logits have batch size {logits.shape[0]}, input had {b}")
    if logits.shape[-1] != num_classes:
        raise ModelError(
            f"model {name}: logits have {logits.shape[-1]} classes (last dim) "
            f"but num_classes is {num_classes}"
        )
    if out_lengths.dtype != torch.int64 or tuple(out_lengths.shape) != (b,):
        raise ModelError(
            f"model {name}: out_lengths must be an int64 tensor of shape ({b},), got "
            f"{out_lengths.dtype} of shape {tuple(out_lengths.shape)}"
        )
    if out_lengths.tolist() != want_lengths:
        rule = f"ceil(lengths / {s})" if level == "frame" else "all ones for utterance level"
        raise ModelError(
            f"model {name}: out_lengths {out_lengths.tolist()} for lengths {lengths.tolist()}, "
            f"expected {want_lengths} ({rule})"
        )
    for i, n in enumerate(want_lengths):
        real = logits[i, :n] if level == "frame" else logits[i]
        if not torch.isfinite(real).all():
            raise ModelError(f"model {name}: non-finite logits for utterance {i} of the batch")


def _check_padding(
    model: nn.Module,
    name: str,
    level: Level,
    x: torch.Tensor,
    lengths: torch.Tensor,
    logits: torch.Tensor,
    out_lengths: torch.Tensor,
) -> None:
    for i, n in enumerate(lengths.tolist()):
        alone, _ = _call(model, name, x[i : i + 1, :n], lengths[i : i + 1])
        if level == "frame":
            m = int(out_lengths[i])
            ref, got = alone[0, :m], logits[i, :m]
        else:
            ref, got = alone[0], logits[i]
        if ref.shape != got.shape:
            raise ModelError(
                f"model {name}: utterance {i} alone gives outputs of shape {tuple(ref.shape)}, "
                f"in the batch {tuple(got.shape)}"
            )
        diff = (ref.float() - got.float()).abs()
        if not (diff <= 1e-4 + 1e-4 * ref.float().abs()).all():
            raise ModelError(
                f"model {name}: outputs of utterance {i} ({n} frames) change when it is padded "
                f"to {x.shape[1]} frames in a batch (max abs diff {diff.max().item():.3g}): "
                "padded frames leak into real ones; mask them or pack the sequences"
            )
