"""Learning-rate schedule: linear warm-up, then cosine decay to a floor.

A pure function of training progress, so a resumed run needs no scheduler state.
"""

from __future__ import annotations

import math


def lr_at(progress: float, peak: float, total: float, warmup: float, floor_ratio: float) -> float:
    """Learning rate at ``progress`` epochs (fractional) into a ``total``-epoch run."""
    if warmup > 0 and progress < warmup:
        return peak * (progress + 1e-3) / warmup
    span = max(total - warmup, 1e-9)
    decayed = min(max((progress - warmup) / span, 0.0), 1.0)  # fraction of the decay done
    return peak * (floor_ratio + (1 - floor_ratio) * 0.5 * (1 + math.cos(math.pi * decayed)))
