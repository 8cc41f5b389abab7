"""Helpers to build frozen dataclass configs from plain data (YAML, JSON, CLI).

Configs are data: ``yaml.safe_load`` gives dicts, ``from_dict`` validates them into frozen
dataclasses, ``to_dict`` gives them back. Unknown keys are errors (a typo must not silently
fall back to a default).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from kdpipe.errors import ConfigError
from kdpipe.textfile import read_text

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


def without_defaults(values: dict[str, Any], obj: Any, names: tuple[str, ...]) -> dict[str, Any]:
    """``values`` (``to_dict(obj)``) without the fields ``names`` where ``obj`` holds their
    defaults: fields added to a config later, left out at their defaults so that the
    fingerprints of what was made before they existed stay the same."""
    defaults = {f.name: f.default for f in dataclasses.fields(obj)}
    return {k: v for k, v in values.items() if k not in names or getattr(obj, k) != defaults[k]}


def from_dict(cls: type[T], data: Mapping[str, Any] | None, where: str | None = None) -> T:
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys.

    Field values are passed as given; each config class validates its own values in
    ``__post_init__`` and raises ``ConfigError`` naming the field.
    """
    where = where or cls.__name__
    if data is not None and not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__} {data!r}")
    data = dict(data or {})
    check_keys(data, cls, where)
    check_types(data, cls, where)
    try:
        return cls(**data)
    except TypeError as e:  # missing required field
        raise ConfigError(f"{where}: {e}") from None


def check_types(data: Mapping[str, Any], cls: type, where: str) -> None:
    """Raise ``ConfigError`` "``where``: KEY must be ..., got VALUE" for a value that does not
    fit its field's annotation (``int``, ``float``, ``bool``, ``str``, tuples, lists,
    mappings and unions of these; other annotations, ``Literal`` choices among them, are the
    class's own business).

    A ``float`` field refuses NaN and infinity: no setting means anything there (a learning
    rate of NaN trains to NaN). Runs before the class's ``__post_init__``, so its range
    checks compare numbers, not ``'two' >= 1``.
    """
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # an annotation only a type checker can resolve: skip the check
        return
    for key, value in data.items():
        hint = hints.get(key)
        if hint is None:
            continue
        problem = _type_problem(value, hint)
        if problem is not None:
            raise ConfigError(f"{where}: {key} must be {problem}, got {value!r}")


_NUMBER_WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def _type_problem(value: Any, hint: Any) -> str | None:
    """What ``value`` should be to fit ``hint`` (a phrase), or None when it fits or
    ``hint`` is not one this check knows."""
    origin = typing.get_origin(hint)
    if hint is Any or hint is object:
        return None
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        problems = [_type_problem(value, option) for option in options if option is not type(None)]
        if any(problem is None for problem in problems):
            return None
        return " or ".join(str(p) for p in problems) + (
            " (or null)" if type(None) in options else ""
        )
    if hint is bool:
        return None if isinstance(value, bool) else _NUMBER_WORDS[bool]
    if hint is int:
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        return None if ok else _NUMBER_WORDS[int]
    if hint is float:
        if not isinstance(value, numbers.Real) or isinstance(value, bool):
            return _NUMBER_WORDS[float]
        return None if math.isfinite(float(value)) else "a finite number"
    if hint is str:
        return None if isinstance(value, str) else _NUMBER_WORDS[str]
    if origin in (tuple, list, Sequence) or hint in (tuple, list):
        if not isinstance(value, (list, tuple)):
            return "a list"
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        if len(args) == 1 or (args and len(set(args)) == 1):
            for item in value:
                problem = _type_problem(item, args[0])
                if problem is not None:
                    return f"a list of {_plural(problem)}"
        return None
    if origin in (dict, Mapping) or hint in (dict, Mapping):
        return None if isinstance(value, Mapping) else "a mapping"
    return None


def _plural(phrase: str) -> str:
    words = {"an integer": "integers", "a number": "numbers", "a string": "strings"}
    return words.get(phrase, phrase)


def fingerprint(data: Any, length: int = 16) -> str:
    """A short stable hash of JSON-able data (key order does not matter)."""
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


class _DuplicateKey(Exception):
    def __init__(self, key: Any, line: int, first: int) -> None:
        super().__init__(key, line, first)
        self.key, self.line, self.first = key, line, first


def parse_yaml(text: str, where: str) -> Any:
    """``yaml.safe_load`` of ``text``, refusing a key given twice in one mapping (YAML would
    keep the last silently); ``ConfigError`` naming ``where``, the key and its line."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        pass

    def mapping(loader: UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = loader.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: construct_mapping names it
                continue
            line = key_node.start_mark.line + 1
            if first is not None:
                raise _DuplicateKey(key, line, first)
            seen[key] = line
        return yaml.SafeLoader.construct_mapping(loader, node, deep)

    UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    loader = UniqueKeyLoader(text)  # a SafeLoader: yaml.safe_load's loader, plus the check
    try:
        return loader.get_single_data()
    except _DuplicateKey as dup:
        raise ConfigError(
            f"{where}: duplicate key {dup.key!r} at line {dup.line} (first at line {dup.first})"
        ) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: not valid YAML: {' '.join(str(e).split())}") from None
    finally:
        loader.dispose()


def load_yaml(path: str | Path) -> Any:
    """Read a YAML file (``parse_yaml``: ``yaml.safe_load`` refusing duplicate keys), with a
    one-line ``ConfigError`` naming the file if it is missing, not UTF-8 or malformed."""
    text = read_text(path, ConfigError, "config file")
    return parse_yaml(text, str(path))
