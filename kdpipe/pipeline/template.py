"""Variables in recipes: ``${name}`` substitution and ``foreach`` list expansion.

A recipe is data (YAML), never code; these two rules are all the logic it can hold:

- ``"${frac}"`` (the whole string) becomes the variable's value with its type (a number, a
  list...); ``"train[:${frac}%]"`` interpolates it as text. ``$${`` writes a literal ``${``.
- An item ``{foreach: {frac: [10, 30]}, stages: [...]}`` (or ``rows:``, ``claims:``) in a
  list is replaced by its body once per position of the ``foreach`` lists (zipped, so
  ``{ms: [900, 800], prev: [1000, 900]}`` gives two copies), with those variables set.
"""

from __future__ import annotations

import re
from typing import Any

from kdpipe.errors import ConfigError

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_WHOLE = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")


def substitute(data: Any, env: dict[str, Any], where: str) -> Any:
    """``data`` with every ``${name}`` replaced from ``env`` (recursively).

    ``ConfigError`` naming ``where`` and the variable when it is not defined.
    """
    if isinstance(data, dict):
        return {k: substitute(v, env, f"{where}.{k}") for k, v in data.items()}
    if isinstance(data, list):
        return [substitute(v, env, f"{where}[{i}]") for i, v in enumerate(data)]
    if not isinstance(data, str) or "${" not in data:
        return data

    def lookup(name: str) -> Any:
        if name not in env:
            known = ", ".join(sorted(env)) or "none"
            raise ConfigError(f"{where}: unknown variable ${{{name}}} (defined: {known})")
        return env[name]

    whole = _WHOLE.match(data)
    if whole:
        return lookup(whole.group(1))
    escaped = data.replace("$${", "\0")
    text = _VAR.sub(lambda m: str(lookup(m.group(1))), escaped)
    return text.replace("\0", "${")


def expand(items: Any, env: dict[str, Any], body: str, where: str) -> list[Any]:
    """The list ``items`` with its ``foreach`` items unrolled and every item substituted.

    ``body`` names the key holding a ``foreach`` item's list (``stages``, ``rows``...).
    """
    if items is None:
        return []
    if not isinstance(items, list):
        raise ConfigError(f"{where}: expected a list, got {type(items).__name__}")
    out: list[Any] = []
    for i, item in enumerate(items):
        here = f"{where}[{i}]"
        if isinstance(item, dict) and "foreach" in item:
            if set(item) != {"foreach", body}:
                raise ConfigError(f"{here}: a foreach item has exactly the keys foreach, {body}")
            for values in _positions(substitute(item["foreach"], env, here), here):
                out += expand(item[body], {**env, **values}, body, here)
        else:
            out.append(substitute(item, env, here))
    return out


def _positions(spec: Any, where: str) -> list[dict[str, Any]]:
    """``{a: [1, 2], b: [3, 4]}`` -> ``[{a: 1, b: 3}, {a: 2, b: 4}]`` (zipped, equal lengths)."""
    if not isinstance(spec, dict) or not spec:
        raise ConfigError(f"{where}: foreach must map variable names to lists")
    lists = {}
    for name, values in spec.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}: foreach {name} must be a non-empty list")
        lists[name] = values
    lengths = {len(v) for v in lists.values()}
    if len(lengths) != 1:
        sizes = ", ".join(f"{k}: {len(v)}" for k, v in lists.items())
        raise ConfigError(f"{where}: foreach lists must have equal lengths ({sizes})")
    n = lengths.pop()
    return [{k: v[j] for k, v in lists.items()} for j in range(n)]
