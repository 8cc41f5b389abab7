"""Model names -> classes: ``build_model`` for the built-in zoo and ``package.module:Class``.

A built model carries ``model.kdpipe_spec`` (a ``ModelSpec``): the architecture name and
the full config it was built from, which is what a checkpoint card records so the model
can be rebuilt.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kdpipe.errors import ModelError
from kdpipe.models.base import ModelConfig

if TYPE_CHECKING:
    from torch import nn

# A built-in model class: Model(num_features, num_classes, config) -> nn.Module.
BuiltinModel = Callable[[int, int, Any], "nn.Module"]


def _builtins() -> dict[str, tuple[BuiltinModel, type[ModelConfig]]]:
    """name -> (model class, config class). Imported here, not at the top: these modules
    import torch and kdpipe.models must not (cards and checkpoints are read without it)."""
    from kdpipe.models.cnn import Cnn, CnnConfig
    from kdpipe.models.dnn import Dnn, DnnConfig, DnnPool, DnnPoolConfig
    from kdpipe.models.lstm import Blstm, BlstmConfig, Lstm, LstmConfig, LstmPool, LstmPoolConfig
    from kdpipe.models.tdnn import Tdnn, TdnnConfig

    return {
        "dnn": (Dnn, DnnConfig),
        "lstm": (Lstm, LstmConfig),
        "blstm": (Blstm, BlstmConfig),
        "tdnn": (Tdnn, TdnnConfig),
        "cnn": (Cnn, CnnConfig),
        "dnn_pool": (DnnPool, DnnPoolConfig),
        "lstm_pool": (LstmPool, LstmPoolConfig),
    }


BUILTIN_NAMES = ("dnn", "lstm", "blstm", "tdnn", "cnn", "dnn_pool", "lstm_pool")


def known_models() -> list[str]:
    """The built-in model names."""
    return list(BUILTIN_NAMES)


def is_custom(architecture: str) -> bool:
    """True for a user's ``package.module:Class`` reference."""
    return ":" in architecture


@dataclass(frozen=True)
class ModelSpec:
    """What ``build_model`` was called with, config filled in with defaults (built-ins)."""

    architecture: str  # a built-in name or "package.module:Class"
    num_features: int
    num_classes: int
    config: dict[str, Any] = field(default_factory=dict)

    def build(self, check: bool = True) -> nn.Module:
        return build_model(
            self.architecture, self.num_features, self.num_classes, self.config, check=check
        )


def build_model(
    name: str,
    num_features: int,
    num_classes: int,
    config: Mapping[str, Any] | None = None,
    check: bool = True,
) -> nn.Module:
    """Build model ``name`` for (B, T, ``num_features``) inputs and ``num_classes`` outputs.

    ``name`` is a built-in (see ``known_models()``; ``config`` is validated into its config
    dataclass) or ``package.module:Class`` (built as ``Class(num_features=...,
    num_classes=..., **config)`` and, with ``check``, tested with ``check_protocol``).
    """
    for what, value in (("num_features", num_features), ("num_classes", num_classes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ModelError(f"model {name!r}: {what} must be an integer >= 1, got {value!r}")
    if config is not None and not isinstance(config, Mapping):
        raise ModelError(f"model {name!r}: config must be a mapping, got {type(config).__name__}")
    if is_custom(name):
        model, cfg = _build_custom(name, num_features, num_classes, dict(config or {}), check)
    else:
        table = _builtins()
        if name not in table:
            raise ModelError(
                f"unknown model {name!r}; known models: {', '.join(BUILTIN_NAMES)} "
                "(or your own as 'package.module:Class')"
            )
        model_cls, config_cls = table[name]
        config_obj = config_cls.from_dict(config)
        model = model_cls(num_features, num_classes, config_obj)
        cfg = config_obj.to_dict()
    # torch types module attributes as Tensor | Module; a plain attribute is fine at runtime
    model.kdpipe_spec = ModelSpec(name, num_features, num_classes, cfg)  # type: ignore[assignment]
    return model


def import_class(ref: str) -> type:
    """Import ``package.module:Class`` and check it is an ``nn.Module`` subclass."""
    from torch import nn  # kdpipe.models imports without torch (see _builtins)

    module_name, _, class_name = ref.partition(":")
    if not module_name or not class_name or ":" in class_name:
        raise ModelError(f"custom model {ref!r} must look like 'package.module:Class'")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        raise ModelError(
            f"cannot import module {module_name!r} for model {ref!r}: {error} "
            "(is it installed or on PYTHONPATH?)"
        ) from error
    except Exception as error:
        raise ModelError(
            f"importing module {module_name!r} for model {ref!r} failed: "
            f"{type(error).__name__}: {error}"
        ) from error
    obj: Any = module
    for part in class_name.split("."):
        if not hasattr(obj, part):
            raise ModelError(f"module {module_name!r} has no class {class_name!r} (model {ref!r})")
        obj = getattr(obj, part)
    if not (isinstance(obj, type) and issubclass(obj, nn.Module)):
        raise ModelError(f"{ref!r} is not a torch.nn.Module subclass (got {obj!r})")
    return obj


def _build_custom(
    ref: str, num_features: int, num_classes: int, config: dict[str, Any], check: bool
) -> tuple[nn.Module, dict[str, Any]]:
    from kdpipe.models.protocol import check_protocol  # imports torch (see _builtins)

    cls = import_class(ref)
    try:  # build from the JSON form, as load_checkpoint will (tuples become lists)
        config = json.loads(json.dumps(config, allow_nan=False))
    except (TypeError, ValueError) as error:
        raise ModelError(f"config of model {ref!r} must be plain JSON data: {error}") from None
    call = f"{ref}(num_features={num_features}, num_classes={num_classes}, **{config!r})"
    try:
        model = cls(num_features=num_features, num_classes=num_classes, **config)
    except Exception as error:
        raise ModelError(f"building {call} failed: {type(error).__name__}: {error}") from error
    if check:
        check_protocol(model, num_features, num_classes)
    return model, config


def config_diffs(card_config: dict[str, Any], built_config: dict[str, Any]) -> list[str]:
    """``"key card-value vs built-value"`` for each setting a card and a built model disagree
    on. A key the built model has and the card lacks is a field added after the card was
    written; new fields default to the old behaviour, so it is no difference."""
    built = json.loads(json.dumps(built_config))  # the JSON form, as a card holds it
    return [
        f"{key} {card_config.get(key)!r} vs {built.get(key)!r}"
        for key in sorted(set(card_config) | set(built))
        if key in card_config and card_config.get(key) != built.get(key)
    ]
