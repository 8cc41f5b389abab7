"""A user-style teacher (``slowteacher:SlowTeacher``) that can be slowed down, so that a
test can kill ``kdpipe teach`` in the middle of a run. Not a test module."""

from __future__ import annotations

import os
import time

import torch
from torch import nn


class SlowTeacher(nn.Module):
    """Frame level, per-frame MLP. Sleeps ``KDPIPE_TEST_DELAY`` seconds per forward call."""

    level = "frame"
    subsampling = 1

    def __init__(self, num_features: int, num_classes: int, hidden: int = 16):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(num_features, hidden), nn.Tanh(), nn.Linear(hidden, num_classes)
        )

    def forward(self, x: torch.Tensor, lengths: torch.Tensor):
        time.sleep(float(os.environ.get("KDPIPE_TEST_DELAY", "0")))
        return self.net(x) * 4.0, lengths  # (B, T, C), (B,)
