"""Helpers to build frozen dataclass configs from plain data (YAML, JSON, CLI).

Configs are data: ``yaml.safe_load`` gives dicts, ``from_dict`` validates them into frozen
dataclasses, ``to_dict`` gives them back. Unknown keys are errors (a typo must not silently
fall back to a default).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from kdpipe.errors import ConfigError

T = TypeVar("T")


def check_keys(data: Mapping[str, Any], cls: type, where: str) -> None:
    """Raise ``ConfigError`` if ``data`` has keys that are not fields of dataclass ``cls``."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; "
            f"known keys: {', '.join(sorted(names))}"
        )


def to_dict(obj: Any) -> dict[str, Any]:
    """A frozen dataclass config as plain JSON-able data (tuples become lists)."""

    def plain(x: Any) -> Any:
        if dataclasses.is_dataclass(x) and not isinstance(x, type):
            return {f.name: plain(getattr(x, f.name)) for f in dataclasses.fields(x)}
        if isinstance(x, (list, tuple)):
            return [plain(v) for v in x]
        if isinstance(x, dict):
            return {str(k): plain(v) for k, v in x.items()}
        return x

    return plain(obj)


def from_dict(cls: type[T], data: Mapping[str, Any] | None, where: str | None = None) -> T:
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys.

    Field values are passed as given; each config class validates its own values in
    ``__post_init__`` and raises ``ConfigError`` naming the field.
    """
    where = where or cls.__name__
    data = dict(data or {})
    check_keys(data, cls, where)
    try:
        return cls(**data)
    except TypeError as e:  # missing required field
        raise ConfigError(f"{where}: {e}") from None


def fingerprint(data: Any, length: int = 16) -> str:
    """A short stable hash of JSON-able data (key order does not matter)."""
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def load_yaml(path: str | Path) -> Any:
    """Read a YAML file with ``yaml.safe_load``, with a clear error if missing or malformed."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        return yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from None
