"""Config plumbing shared by the built-in models: dict round trips and value checks.

Each built-in model has a frozen dataclass config; ``from_dict`` rejects unknown keys,
``__post_init__`` rejects bad values with a ``ConfigError`` naming the model and field.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, TypeVar

from kdpipe.errors import ConfigError
from kdpipe.schema import from_dict, to_dict

C = TypeVar("C", bound="ModelConfig")


class ModelConfig:
    """Mixin for frozen dataclass model configs; ``model_name`` prefixes error messages."""

    model_name: ClassVar[str] = "model"

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls: type[C], data: Mapping[str, Any] | None) -> C:
        return from_dict(cls, data, f"{cls.model_name} config")

    # -- value checks, used by subclasses' __post_init__ --------------------------------

    def _int(self, name: str, minimum: int) -> None:
        value = getattr(self, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ConfigError(
                f"{self.model_name} config: {name} must be an integer >= {minimum}, got {value!r}"
            )

    def _dropout(self, name: str = "dropout") -> None:
        value = getattr(self, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
            raise ConfigError(
                f"{self.model_name} config: {name} must be a number in [0, 1), got {value!r}"
            )

    def _choice(self, name: str, choices: Sequence[str]) -> None:
        value = getattr(self, name)
        if value not in choices:
            raise ConfigError(
                f"{self.model_name} config: {name} must be one of {', '.join(choices)}, "
                f"got {value!r}"
            )

    def _bool(self, name: str) -> None:
        value = getattr(self, name)
        if not isinstance(value, bool):
            raise ConfigError(
                f"{self.model_name} config: {name} must be true or false, got {value!r}"
            )

    def _int_tuple(self, name: str, minimum: int) -> None:
        """Check a non-empty list of ints and store it as a tuple (YAML gives lists)."""
        value = getattr(self, name)
        ok = isinstance(value, (list, tuple)) and len(value) > 0
        ok = ok and all(
            isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in value
        )
        if not ok:
            raise ConfigError(
                f"{self.model_name} config: {name} must be a non-empty list of integers "
                f">= {minimum}, got {value!r}"
            )
        object.__setattr__(self, name, tuple(value))
