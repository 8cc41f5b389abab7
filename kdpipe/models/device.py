"""Choosing a torch device: no model or checkpoint code hard-codes one."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kdpipe.errors import ModelError

if TYPE_CHECKING:
    import torch


def pick_device(pref: str = "auto") -> torch.device:
    """``auto``: CUDA if available, else Apple MPS, else CPU; or an explicit ``cpu``,
    ``cuda``, ``cuda:N``, ``mps``, checked to exist (``ModelError`` if not)."""
    import torch  # here, not at the top: kdpipe.models imports without torch

    pref = str(pref).strip().lower()
    if pref == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(pref)
    except RuntimeError:
        raise ModelError(f"unknown device {pref!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelError(f"device {pref!r} requested but CUDA is not available here")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ModelError(f"device {pref!r} requested but only {count} CUDA device(s) exist")
        return device
    if device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ModelError(f"device {pref!r} requested but MPS is not available here")
        return device
    raise ModelError(f"unsupported device {pref!r}; use auto, cpu, cuda, cuda:N or mps")
