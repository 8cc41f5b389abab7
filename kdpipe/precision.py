"""Numeric precision of a forward pass: ``fp32`` (exact and portable: the default) or
``bf16`` (``torch.autocast`` to bfloat16 on the device: matrix products at the GPU's
tensor-core rate, float32 range, so no loss scaling is needed; on the CPU it runs too,
which is how the tests cover it). Weights, optimiser state, losses and the stored targets
stay float32 either way: models cast their outputs with ``.float()`` where it matters.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from kdpipe.errors import ConfigError

if TYPE_CHECKING:
    import torch

PRECISIONS = ("fp32", "bf16")


def check_precision(precision: str, where: str) -> None:
    """A one-line ``ConfigError`` unless ``precision`` is one of ``PRECISIONS``."""
    if precision not in PRECISIONS:
        raise ConfigError(f"{where}: precision must be one of {PRECISIONS}, got {precision!r}")


def autocast(device: torch.device, precision: str) -> AbstractContextManager[object]:
    """The context a forward pass runs in: bfloat16 autocast on ``device`` for ``bf16``,
    nothing for ``fp32``."""
    import torch  # here: configs import this module, and they must not pull in torch

    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
