"""Kind ``checkpoint``: a kdpipe checkpoint (``kdpipe learn`` output: model.safetensors +
card.json). The card says everything (labels, level, subsampling, features); the weights
load with their sha256 checked against it."""

from __future__ import annotations

from pathlib import Path

import torch

from kdpipe.errors import KdpipeError, ModelError
from kdpipe.models.checkpoint import load_checkpoint, read_card
from kdpipe.models.registry import is_custom
from kdpipe.teach.ensemble_yaml import MemberConfig
from kdpipe.teach.members.base import Declared, Network


def describe(config: MemberConfig, where: str) -> Declared:
    if not Path(config.checkpoint).is_dir():
        raise ModelError(f"{where}: checkpoint directory not found")
    try:
        card = read_card(config.checkpoint)
    except KdpipeError as error:
        raise ModelError(f"{where}: {error}") from None
    return Declared(
        labels=card.label_set,
        level=card.level,
        output="logits",
        subsampling=card.subsampling,
        frame_shift_ms=None,
        num_features=card.num_features,
        weights_sha256=card.weights_sha256,
        card=card.to_dict(),
        feature_fingerprint=card.feature_fingerprint,
    )


def runs_code(config: MemberConfig) -> bool:
    """A checkpoint of a ``package.module:Class`` model imports that code."""
    return is_custom(read_card(config.checkpoint).architecture)


def load(config: MemberConfig, declared: Declared, device: torch.device) -> Network:
    model, card = load_checkpoint(config.checkpoint, device, trust_custom_code=True)
    if card.weights_sha256 != declared.weights_sha256:
        raise ModelError(f"member {config.display_name}: checkpoint changed while loading")
    result: Network = model
    return result
