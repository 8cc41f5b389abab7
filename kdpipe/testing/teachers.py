"""Tiny teacher checkpoints for tests: random (seeded) models saved as real checkpoints.

- ``LABELS``, ``DIM``: the label set and feature dimension of ``teacher_corpus``.
- ``TINY``: a small config per built-in architecture, so that a teacher builds in
  milliseconds.
- ``teacher_corpus``: a small feature store (``DIM`` mel bins, ``LABELS``) to teach on.
- ``make_teacher``: a checkpoint of an architecture with random, peaked (scaled) weights.
- ``checkpoint_weights``, ``assert_same_weights``: a checkpoint's tensors, and comparing
  two checkpoints' tensors exactly (resume equals an uninterrupted run).
- ``FreeTeacher``: a teacher whose forward pass costs next to nothing (its logits are rows
  of a fixed table), to measure what ``teach`` costs around the teacher.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from kdpipe.corpus.featstore import FeatureStore
from kdpipe.labels import LabelSet
from kdpipe.models import build_model, make_card, save_checkpoint
from kdpipe.testing.corpora import make_feature_store

LABELS = ("sil", "a", "b", "c", "d")
DIM = 8
TINY: dict[str, dict[str, Any]] = {
    "blstm": {"hidden_dim": 8, "num_layers": 1, "dropout": 0.0},
    "lstm": {"hidden_dim": 8, "num_layers": 1, "dropout": 0.0},
    "dnn": {"hidden_dim": 16, "num_layers": 1, "left_context": 1, "right_context": 1},
    "tdnn": {"hidden_dim": 8, "kernel_sizes": [3, 3], "dilations": [1, 1], "subsampling": 2},
    "cnn": {"channels": [4, 4]},
}


def teacher_corpus(path: str | Path, task: str = "frame", **kw: Any) -> FeatureStore:
    """``make_feature_store`` with ``DIM`` mel bins and, unless ``kw`` says otherwise,
    ``LABELS``, 10 train + 3 dev utterances of 20-50 frames."""
    kw.setdefault("per_split", {"train": 10, "dev": 3})
    kw.setdefault("frames", (20, 50))
    kw.setdefault("labels", LABELS)
    return make_feature_store(path, task=task, num_mel_bins=DIM, **kw)


def make_teacher(
    out: str | Path,
    fs: FeatureStore,
    arch: str = "blstm",
    *,
    labels: Sequence[str] = LABELS,
    seed: int = 0,
    config: dict[str, Any] | None = None,
    scale: float = 3.0,
    nan: bool = False,
) -> Path:
    """A checkpoint at ``out`` of ``arch`` (``TINY`` config updated by ``config``; a custom
    ``package.module:Class`` gets ``config`` alone) with random (seeded) weights for
    ``fs``'s features, its card fingerprinted to ``fs``. Returns ``out``.

    ``scale`` multiplies every weight so that posteriors are peaked; ``nan`` poisons them.
    """
    torch.manual_seed(seed)
    model = build_model(arch, fs.dim, len(labels), {**TINY.get(arch, {}), **(config or {})})
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(scale)
            if nan:
                p.fill_(float("nan"))
    card = make_card(
        model,
        labels=LabelSet(tuple(labels)),
        features=fs.config,
        feature_fingerprint=fs.feature_fingerprint,
        data_fingerprint=fs.fingerprint,
    )
    save_checkpoint(out, model, card)
    return Path(out)


def checkpoint_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of the checkpoint directory ``path`` (its ``model.safetensors``)."""
    return load_file(str(Path(path) / "model.safetensors"))


def assert_same_weights(a: str | Path, b: str | Path) -> None:
    """Checkpoints ``a`` and ``b`` hold the same tensors, bit for bit."""
    wa, wb = checkpoint_weights(a), checkpoint_weights(b)
    assert sorted(wa) == sorted(wb)
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


class FreeTeacher(nn.Module):
    """Frame-level logits (B, T, C) read from a fixed (R, C) random table, row t % R for
    frame t: no computation but the copy, so a ``teach`` run with it as its member
    measures selection, encoding and writing (``benchmarks/teach_ceiling.py``). A kind
    ``module`` member: ``module: kdpipe.testing.teachers:FreeTeacher``."""

    level = "frame"
    subsampling = 1

    def __init__(self, num_features: int, num_classes: int, rows: int = 4096, seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.table: torch.Tensor
        self.register_buffer("table", 4 * torch.randn(rows, num_classes, generator=gen))
        self.num_features = num_features

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, t, _ = x.shape
        rows = torch.arange(t, device=x.device) % self.table.shape[0]  # (T,)
        return self.table[rows].expand(b, t, -1), lengths  # (B, T, C), (B,)
