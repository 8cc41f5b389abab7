"""Kind ``module``: a ``torch.nn.Module`` class named ``package.module:Class``, built with
``args`` and loaded with a weights file. It imports and runs that code, so the planner
wants ``--trust-custom-code``.

Accepts::

    - kind: module
      module: mypkg.models:Conformer     # imported with kdpipe.models.registry.import_class
      args: {num_classes: 42, dim: 256}  # keyword arguments of the constructor (plain data)
      weights: conformer.safetensors     # or a torch.save(model.state_dict()) file
      labels: phones.txt                 # "": the corpus' labels
      subsampling: 4                     # output frames per input frame (default 1)

Checks, in ``describe`` (no code imported, before the trust check): the weights file
exists (its sha256 names the member), ``args`` are plain JSON data (they go into the
store's card), the labels file reads. In ``load``, in this order: the file still has
the sha256 ``describe`` saw (the weights are read from those very bytes); the weights read
(``.safetensors`` with safetensors; any other file with ``torch.load(weights_only=True)``,
never a full unpickle: a pickled model or a dict of more than tensors is refused), before
any of the member's code is imported; the class imports; the constructor call works; the
weights fit the model exactly (missing, unexpected and misshapen keys named, the first
five of each); a model that declares ``level`` or ``subsampling``
(kdpipe's protocol attributes) agrees with the member's settings. The model runs in eval
mode on the device; forward(x (B, T, F), lengths (B,)) may return logits or (logits,
out_lengths) (``base.split_outputs``).

Choices:

- a constructor whose ``config`` parameter is annotated with a kdpipe ``ModelConfig``
  dataclass (kdpipe's own models, e.g. ``kdpipe.models.dnn:Dnn``) gets a ``config:``
  mapping validated into that dataclass, so a kdpipe model can be given as
  ``args: {num_features: 40, num_classes: 42, config: {...}}`` (its card's values);
- the input is cast to the dtype of the model's first floating parameter (a half
  precision model reads half precision features);
- a failing forward pass is a one-line ``ModelError`` naming the member and the batch.

The helpers the other outside kinds share live here: ``member_labels`` (the labels rule
of docs/ensemble-yaml.md), ``labels_from_text``, ``existing_file``, ``read_checked``,
``check_attributes``, ``TorchNetwork`` and ``one_line``.
"""

from __future__ import annotations

import inspect
import io
import json
import typing
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from kdpipe.errors import ConfigError, KdpipeError, ModelError
from kdpipe.labels import LabelSet
from kdpipe.models.base import ModelConfig
from kdpipe.models.checkpoint import file_sha256, load_state
from kdpipe.models.registry import import_class
from kdpipe.teach.ensemble_yaml import MemberConfig
from kdpipe.teach.members.base import (
    Declared,
    Network,
    TorchNetwork,
    check_attributes,
    declared_by_config,
    existing_file,
    member_labels,
    one_line,
    read_checked,
)

SHOWN_KEYS = 5  # state-dict keys named per kind of mismatch


def _weights_format(file: Path) -> str:
    return "safetensors" if file.suffix == ".safetensors" else "torch"


def describe(config: MemberConfig, where: str, corpus_labels: LabelSet | None) -> Declared:
    file = existing_file(config.weights, where, "weights file")
    try:
        args = json.loads(json.dumps(config.args, allow_nan=False))
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where}: args must be plain data (numbers, strings, lists, "
                          f"mappings): {error}") from None  # fmt: skip
    labels, _ = member_labels(config, where, corpus_labels)
    sha = file_sha256(file)
    card = {
        "kind": "module",
        "module": config.module,
        "args": args,
        "weights": file.name,
        "weights_format": _weights_format(file),
        "weights_sha256": sha,
    }
    return declared_by_config(config, where, labels, sha, card)


def _config_class(cls: type) -> type[ModelConfig] | None:
    """The ``ModelConfig`` dataclass the constructor's ``config`` parameter is annotated
    with (kdpipe's own models), else None."""
    try:
        hints = typing.get_type_hints(cls.__init__)  # type: ignore[misc]
    except Exception:  # unresolvable annotations: no conversion
        return None
    hint = hints.get("config")
    for candidate in (hint, *typing.get_args(hint)):
        if inspect.isclass(candidate) and issubclass(candidate, ModelConfig):
            return candidate
    return None


def _construct(cls: type, config: MemberConfig, name: str) -> nn.Module:
    kwargs = dict(config.args)
    config_cls = _config_class(cls)
    if config_cls is not None and isinstance(kwargs.get("config"), Mapping):
        try:
            kwargs["config"] = config_cls.from_dict(kwargs["config"])
        except KdpipeError as error:
            raise ModelError(f"member {name}: {error}") from None
    call = f"{config.module}({', '.join(f'{k}={v!r}' for k, v in config.args.items())})"
    try:
        model = cls(**kwargs)
    except Exception as error:
        raise ModelError(f"member {name}: building {call} failed: {one_line(error)}") from error
    if not isinstance(model, nn.Module):
        raise ModelError(f"member {name}: {call} is not a torch.nn.Module")
    return model


def _read_state(data: bytes, file: Path, name: str) -> dict[str, torch.Tensor]:
    """The state dict in ``data``: safetensors, or a torch file read with weights_only."""
    if _weights_format(file) == "safetensors":
        from safetensors.torch import load as load_safetensors

        try:
            return load_safetensors(data)
        except Exception as error:
            raise ModelError(
                f"member {name}: {file.name} is not a valid safetensors file: {one_line(error)}"
            ) from None
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as error:
        # torch's weights-only unpickler refusing an object (pickle.UnpicklingError; kdpipe
        # imports no pickle module, so the class is recognised by name)
        if type(error).__name__ == "UnpicklingError":
            raise ModelError(
                f"member {name}: {file.name} holds Python objects besides tensors (a whole "
                "pickled model?), which torch.load(weights_only=True) refuses and kdpipe never "
                "unpickles: save model.state_dict(), or safetensors"
            ) from None
        raise ModelError(
            f"member {name}: {file.name} is not a torch state dict readable with "
            f"weights_only=True (kdpipe never unpickles code): {one_line(error)}"
        ) from None
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        held = f" (it holds keys {sorted(map(str, state))[:SHOWN_KEYS]})" if isinstance(
            state, Mapping
        ) else f" (it holds a {type(state).__name__})"  # fmt: skip
        raise ModelError(
            f"member {name}: {file.name} is not a state dict of tensors{held}: save "
            "model.state_dict() itself"
        )
    return dict(state)


def load(config: MemberConfig, declared: Declared, device: torch.device) -> Network:
    name = config.display_name
    file = existing_file(config.weights, f"member {name}", "weights file")
    state = _read_state(read_checked(file, declared, name), file, name)  # before any code
    try:
        cls = import_class(config.module)
    except ModelError as error:
        raise ModelError(f"member {name}: {error}") from None
    model = _construct(cls, config, name)
    load_state(model, state, f"member {name}: {file.name} does not fit {config.module}")
    model = model.to(device).eval()
    check_attributes(model, config, declared, name)
    network: Network = TorchNetwork(model, name)
    return network
