"""User-style models for the ``package.module:Class`` tests: one good, many broken.

Not a test module (no ``test_`` prefix); tests put this folder on ``sys.path`` and build
``custom_students:<Class>`` through the registry like a user would.
"""

from __future__ import annotations

import torch
from torch import nn


class TinyStudent(nn.Module):
    """Good: frame level, half frame rate. (B, T, F) -> (B, ceil(T / 2), C)."""

    level = "frame"
    subsampling = 2

    def __init__(self, num_features: int, num_classes: int, hidden: int = 16):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(num_features, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
        )

    def forward(self, x: torch.Tensor, lengths: torch.Tensor):
        return self.net(x[:, ::2]), (lengths + 1) // 2  # (B, T', C), (B,)


class ClipStudent(nn.Module):
    """Good: utterance level, masked mean over frames. (B, T, F) -> (B, C)."""

    level = "utterance"

    def __init__(self, num_features: int, num_classes: int):
        super().__init__()
        self.out = nn.Linear(num_features, num_classes)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor):
        mask = torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]  # (B, T)
        mean = (x * mask[..., None]).sum(1) / lengths[:, None]  # (B, F)
        return self.out(mean), torch.ones_like(lengths)


class ReturnsTensor(TinyStudent):
    def forward(self, x, lengths):
        return self.net(x[:, ::2])


class ReturnsTriple(TinyStudent):
    def forward(self, x, lengths):
        return self.net(x[:, ::2]), (lengths + 1) // 2, None


class FrameButPooled(TinyStudent):
    """Declares frame level but returns one vector per clip."""

    def forward(self, x, lengths):
        return self.net(x).mean(1), (lengths + 1) // 2


class UtteranceButFrames(ClipStudent):
    """Declares utterance level but returns per-frame logits."""

    def forward(self, x, lengths):
        return self.out(x), torch.ones_like(lengths)


class WrongClasses(TinyStudent):
    def forward(self, x, lengths):
        logits = self.net(x[:, ::2])
        return torch.cat([logits, logits[..., :1]], dim=-1), (lengths + 1) // 2


class WrongSubsampling(TinyStudent):
    """Declares subsampling 2 but keeps every frame."""

    def forward(self, x, lengths):
        return self.net(x), lengths


class WrongOutLengths(TinyStudent):
    def forward(self, x, lengths):
        return self.net(x[:, ::2]), lengths // 2  # floor instead of ceil


class FloatOutLengths(TinyStudent):
    def forward(self, x, lengths):
        return self.net(x[:, ::2]), (lengths + 1) / 2


class _Linear(nn.Module):
    """A per-frame linear layer with no protocol attributes."""

    def __init__(self, num_features: int, num_classes: int):
        super().__init__()
        self.net = nn.Linear(num_features, num_classes)

    def forward(self, x, lengths):
        return self.net(x), lengths


class NoLevel(_Linear):
    subsampling = 1


class BadLevel(_Linear):
    level = "clip"
    subsampling = 1


class NoSubsampling(_Linear):
    level = "frame"


class ZeroSubsampling(_Linear):
    level = "frame"
    subsampling = 0


class LeakyPadding(_Linear):
    """Adds the mean over all T frames, padding included: padding leaks."""

    level = "frame"
    subsampling = 1

    def forward(self, x, lengths):
        return self.net(x + x.mean(1, keepdim=True)), lengths


class ForwardWithoutLengths(_Linear):
    level = "frame"
    subsampling = 1

    def forward(self, x):
        return self.net(x), None


class NoParameters(nn.Module):
    level = "frame"
    subsampling = 1

    def __init__(self, num_features: int, num_classes: int):
        super().__init__()
        self.num_classes = num_classes

    def forward(self, x, lengths):
        return x[..., : self.num_classes], lengths


class OldSignature(nn.Module):
    """Takes positional (in_dim, out_dim) instead of num_features/num_classes keywords."""

    level = "frame"
    subsampling = 1

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.net = nn.Linear(in_dim, out_dim)


NotAModule = dict  # a class, but not an nn.Module


def not_a_class(num_features: int, num_classes: int) -> nn.Module:
    return TinyStudent(num_features, num_classes)
