"""``ensemble.yaml``: the teacher(s) of ``kdpipe teach`` as frozen dataclasses.

The documented schema is docs/ensemble-yaml.md; ``ViewConfig`` (the ``view:`` block) lives
in ``kdpipe.corpus.views`` and is re-exported here. ``load_ensemble(path)`` reads a file with
``yaml.safe_load`` and validates it (unknown keys, bad values and missing checkpoints are
``ConfigError``/``ModelError`` before any work); ``single_teacher(dir, rule)`` is the
one-checkpoint form behind ``kdpipe teach --model exp/teacher1 --topk 8``.
Checkpoint paths in a file are relative to the file's directory.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from kdpipe.corpus.views import ViewConfig
from kdpipe.errors import ConfigError
from kdpipe.essence import Rule
from kdpipe.schema import check_keys, load_yaml, to_dict

__all__ = [
    "EnsembleConfig",
    "MemberConfig",
    "ViewConfig",
    "ensemble_from_dict",
    "load_ensemble",
    "rule_from_flags",
    "single_teacher",
]

COMBINE = ("mean-prob", "mean-logprob")
FRAME_RATE = ("average", "decimate")


@dataclass(frozen=True)
class MemberConfig:
    """One ensemble member: a checkpoint directory (model.safetensors + card.json)."""

    checkpoint: str
    name: str = ""  # shown in the store's metadata; "" = the checkpoint directory name
    weight: float = 1.0  # relative weight in the combination (normalised over members)
    temperature: float = 1.0  # logits / T before the softmax (T > 1 flattens)
    label_map: dict[str, str] | str | None = None  # None: same label set; "names": by name
    frame_rate: str = "average"  # how a faster member is brought to the ensemble's rate

    def __post_init__(self) -> None:
        if not isinstance(self.checkpoint, str) or not self.checkpoint:
            raise ConfigError("member: checkpoint must be a path")
        if not isinstance(self.weight, (int, float)) or not self.weight > 0:
            raise ConfigError(f"member {self.checkpoint}: weight must be > 0, got {self.weight}")
        if not isinstance(self.temperature, (int, float)) or not self.temperature > 0:
            raise ConfigError(
                f"member {self.checkpoint}: temperature must be > 0, got {self.temperature}"
            )
        label_map = self.label_map
        if label_map is not None and label_map != "names":
            if not isinstance(label_map, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in label_map.items()
            ):
                raise ConfigError(
                    f"member {self.checkpoint}: label_map must be 'names' or a mapping "
                    "member label -> ensemble label"
                )
            object.__setattr__(self, "label_map", dict(label_map))
        if self.frame_rate not in FRAME_RATE:
            raise ConfigError(
                f"member {self.checkpoint}: frame_rate must be one of {FRAME_RATE}, "
                f"got {self.frame_rate!r}"
            )

    @property
    def display_name(self) -> str:
        return self.name or Path(self.checkpoint).name


@dataclass(frozen=True)
class EnsembleConfig:
    """The teacher side of ``kdpipe teach``: members, combination, rule, view."""

    members: tuple[MemberConfig, ...]
    combine: str = "mean-prob"  # arithmetic mean of probabilities: the usual ensemble
    rule: Rule = field(default_factory=Rule)  # top-8: ~0.9 of the mass in ~14 bytes/frame
    values: str = "uint8"  # store encoding: uint8 codes (error <= 0.032 nats) or float16
    keep_members: bool = False  # also store each member's own targets (more bytes)
    subsampling: int | None = None  # ensemble output rate; None = the slowest member's
    view: ViewConfig | None = None  # None: the whole utterance
    seed: int = 0  # seeds the sample rule (per utterance, from (seed, utt id))
    hard_labels: bool = True  # store the corpus' hard labels when it has them

    def __post_init__(self) -> None:
        if not self.members:
            raise ConfigError("ensemble: at least one member is needed")
        if self.combine not in COMBINE:
            raise ConfigError(f"ensemble: combine must be one of {COMBINE}, got {self.combine!r}")
        if self.values not in ("uint8", "float16"):
            raise ConfigError(f"ensemble: values must be uint8 or float16, got {self.values!r}")
        if self.subsampling is not None and (
            not isinstance(self.subsampling, int) or self.subsampling < 1
        ):
            raise ConfigError(f"ensemble: subsampling must be >= 1, got {self.subsampling}")
        names = [member.display_name for member in self.members]
        if len(set(names)) != len(names):
            raise ConfigError(f"ensemble: member names must be distinct (set name:): {names}")
        for flag in ("keep_members", "hard_labels"):
            if not isinstance(getattr(self, flag), bool):
                raise ConfigError(f"ensemble: {flag} must be true or false")

    @property
    def combine_name(self) -> str:
        """What the store records as ``combine``."""
        return "single" if len(self.members) == 1 else self.combine

    def to_dict(self) -> dict[str, Any]:
        data = to_dict(self)
        data["rule"] = self.rule.to_dict()
        return data


def _member(data: Any, where: str, base: Path) -> MemberConfig:
    if isinstance(data, str):
        data = {"checkpoint": data}
    check_keys(data, MemberConfig, where)
    if "checkpoint" not in data:
        raise ConfigError(f"{where}: missing key 'checkpoint'")
    try:
        member = MemberConfig(**data)
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None
    path = Path(member.checkpoint).expanduser()
    path = path if path.is_absolute() else base / path
    return replace(member, checkpoint=str(path))


def ensemble_from_dict(data: Any, where: str, base: Path | None = None) -> EnsembleConfig:
    """Validate plain data (a parsed ensemble.yaml) into an ``EnsembleConfig``."""
    base = base or Path.cwd()
    check_keys(data, EnsembleConfig, where)
    settings = dict(data)
    members = settings.pop("members", None)
    if not isinstance(members, list) or not members:
        raise ConfigError(f"{where}: 'members' must be a non-empty list of checkpoints")
    try:
        rule = settings.pop("rule", None)
        if rule is not None:
            if not isinstance(rule, dict):
                raise ConfigError("rule must be a mapping {name: ..., params: {...}}")
            check_keys(rule, Rule, "rule")
            settings["rule"] = Rule(rule.get("name", "topk"), dict(rule.get("params") or {}))
        view = settings.pop("view", None)
        if view is not None:
            settings["view"] = ViewConfig.from_dict(view)
        configs = tuple(_member(member, f"member {i}", base) for i, member in enumerate(members))
        return EnsembleConfig(members=configs, **settings)
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None


def load_ensemble(path: str | Path) -> EnsembleConfig:
    """Read and validate an ensemble.yaml (``yaml.safe_load``); see docs/ensemble-yaml.md."""
    file = Path(path)
    data = load_yaml(file)
    return ensemble_from_dict(data, str(file), file.parent)


def single_teacher(checkpoint: str | Path, rule: Rule, **settings: Any) -> EnsembleConfig:
    """One checkpoint as a one-member ensemble (``--model exp/teacher1``)."""
    return EnsembleConfig(members=(MemberConfig(str(checkpoint)),), rule=rule, **settings)


def rule_from_flags(
    topk: int | None = None,
    threshold: float | None = None,
    mass: float | None = None,
    sample: int | None = None,
    full: bool = False,
) -> Rule | None:
    """The rule named by CLI flags (at most one), or None when none is given."""
    given = [
        (name, params)
        for name, params, on in (
            ("topk", {"k": topk}, topk is not None),
            ("threshold", {"p_min": threshold}, threshold is not None),
            ("cumulative", {"mass": mass}, mass is not None),
            ("sample", {"n": sample}, sample is not None),
            ("full", {}, full),
        )
        if on
    ]
    if len(given) > 1:
        raise ConfigError("give at most one of --topk, --threshold, --mass, --sample, --full")
    return Rule(*given[0]) if given else None
