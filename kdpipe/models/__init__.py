"""The model zoo, the student protocol, and checkpoints that are safe to share.

Built-in models (``build_model(name, num_features, num_classes, config)``):

- frame level, one posterior per (subsampled) frame: ``dnn`` (spliced context window),
  ``lstm``, ``blstm`` (packed sequences), ``tdnn`` (dilated 1-D convolutions);
- utterance level, one posterior per clip: ``cnn`` (2-D convolutions over time x
  frequency), ``dnn_pool`` and ``lstm_pool`` (masked mean/max pooling over time).

A small student and a large teacher are the same class with different config numbers.

The student protocol
--------------------
Any ``torch.nn.Module`` can be a student or teacher, named as ``package.module:Class``
and built as ``Class(num_features=F, num_classes=C, **config)``, if it has:

- ``level``: ``"frame"`` or ``"utt"`` (``"utterance"`` is read the same), a class attribute
  or property;
- ``subsampling``: int >= 1, for frame level (output frame j lines up with input frame
  j * s; targets are subsampled as ``targets[:, ::s]``);
- ``forward(x, lengths) -> (logits, out_lengths)`` where x is (B, T, F) float and lengths
  (B,) int64 in [1, T]. Frame level: logits (B, ceil(T / s), C) and out_lengths =
  ceil(lengths / s). Utterance level: logits (B, C) and out_lengths all ones.
- padding that never leaks: frames t >= lengths[b] hold arbitrary values, and an
  utterance must give the same real outputs alone and padded in a batch.

``check_protocol(model, F, C)`` runs a tiny padded batch and raises a ``ModelError`` naming
what is wrong; ``build_model`` runs it on every custom model. Example (frame level, half
the frame rate)::

    import torch
    from torch import nn


    class TinyStudent(nn.Module):
        level = "frame"
        subsampling = 2  # one output per 2 input frames

        def __init__(self, num_features: int, num_classes: int, hidden: int = 32):
            super().__init__()
            self.net = nn.Sequential(
                nn.Linear(num_features, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
            )

        def forward(self, x: torch.Tensor, lengths: torch.Tensor):
            # x: (B, T, F), lengths: (B,) -> logits (B, ceil(T / 2), C), out_lengths (B,)
            return self.net(x[:, ::2]), (lengths + 1) // 2

Checkpoints are directories with ``model.safetensors`` and ``card.json`` (a ``ModelCard``):
``save_checkpoint(dir, model, card)`` and ``load_checkpoint(dir, device)``. Nothing is ever
unpickled; custom models load only with ``trust_custom_code=True``.

Importing this package does not import torch; the torch-based parts load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from kdpipe.models.card import ModelCard
from kdpipe.models.checkpoint import (
    file_sha256,
    load_checkpoint,
    load_training_state,
    make_card,
    read_card,
    save_checkpoint,
    save_training_state,
    weights_sha256,
)
from kdpipe.models.device import pick_device
from kdpipe.models.registry import ModelSpec, build_model, import_class, known_models

_LAZY = {  # names whose modules import torch at import time
    "check_protocol": "kdpipe.models.protocol",
    "model_level": "kdpipe.models.protocol",
    "model_subsampling": "kdpipe.models.protocol",
}

__all__ = [
    "ModelCard",
    "ModelSpec",
    "build_model",
    "check_protocol",
    "file_sha256",
    "import_class",
    "known_models",
    "load_checkpoint",
    "load_training_state",
    "make_card",
    "model_level",
    "model_subsampling",
    "pick_device",
    "read_card",
    "save_checkpoint",
    "save_training_state",
    "weights_sha256",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'kdpipe.models' has no attribute {name!r}")
