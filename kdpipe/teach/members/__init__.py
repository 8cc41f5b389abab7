"""Member kinds of an ensemble (docs/ensemble-yaml.md, "Member kinds"), one module each
behind one small protocol (``base``): ``checkpoint`` (kdpipe's own), ``module`` (a
``package.module:Class`` with a weights file), ``torchscript``, ``onnx`` (onnxruntime)
and ``huggingface`` (a local transformers audio model); ``inputs`` reads what each member
takes (the corpus' features, another feature store, the waveform).

``describe(config, where, corpus_labels)`` and ``load(config, declared, device)`` dispatch
on ``config.kind``; a kind's module (and its heavy package: onnxruntime, transformers)
is imported only when a member of that kind is used.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import torch

from kdpipe.errors import KdpipeError, ModelError
from kdpipe.labels import LabelSet
from kdpipe.teach.ensemble_yaml import KINDS, MemberConfig
from kdpipe.teach.members.base import Declared, Network, one_line

__all__ = ["KINDS", "Declared", "Network", "describe", "load", "runs_code"]

RUNS_CODE = {"module": True, "torchscript": True, "onnx": False, "huggingface": False}


def _kind(kind: str) -> ModuleType:
    return importlib.import_module(f"kdpipe.teach.members.{kind}")


def describe(config: MemberConfig, where: str, corpus_labels: LabelSet | None) -> Declared:
    """What the member declares (no weights read); ``corpus_labels`` is the label set of
    an outside member that names none (no labels file, none of its own)."""
    declared: Declared = (
        _kind(config.kind).describe(config, where, corpus_labels)
        if (config.kind != "checkpoint")
        else _kind("checkpoint").describe(config, where)
    )
    return declared


def runs_code(config: MemberConfig) -> bool:
    """Loading the member imports or runs code that came with it (needs the trust flag)."""
    if config.kind == "checkpoint":
        result: bool = _kind("checkpoint").runs_code(config)
        return result
    return RUNS_CODE[config.kind]


def load(config: MemberConfig, declared: Declared, device: torch.device) -> Network:
    """The member's network on ``device`` (weights checked against ``declared``)."""
    try:
        network: Network = _kind(config.kind).load(config, declared, device)
    except KdpipeError:
        raise
    except Exception as error:  # a foreign model's own failure, named once
        raise ModelError(
            f"member {config.display_name}: loading the {config.kind} model failed: "
            f"{one_line(error)}"
        ) from error
    return network
