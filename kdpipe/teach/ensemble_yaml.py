"""``ensemble.yaml``: the teacher(s) of ``kdpipe teach`` as frozen dataclasses.

The documented schema is docs/ensemble-yaml.md; ``ViewConfig`` (the ``view:`` block) lives
in ``kdpipe.corpus.views`` and is re-exported here. ``load_ensemble(path)`` reads a file with
``yaml.safe_load`` and validates it (unknown keys, bad values and missing checkpoints are
``ConfigError``/``ModelError`` before any work); ``single_teacher(dir, rule)`` is the
one-checkpoint form behind ``kdpipe teach --model exp/teacher1 --topk 8``.
Checkpoint paths in a file are relative to the file's directory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from kdpipe.corpus.views import ViewConfig
from kdpipe.errors import ConfigError
from kdpipe.essence import Rule
from kdpipe.precision import check_precision
from kdpipe.schema import check_keys, load_yaml, to_dict, without_defaults

__all__ = [
    "EnsembleConfig",
    "InputConfig",
    "MemberConfig",
    "ViewConfig",
    "ensemble_from_dict",
    "load_ensemble",
    "rule_from_flags",
    "single_teacher",
]

COMBINE = ("mean-prob", "mean-logprob")
FRAME_RATE = ("average", "decimate")
KINDS = ("checkpoint", "module", "torchscript", "onnx", "huggingface")
OUTPUTS = ("logits", "log_probs", "probs")
PATH_KEY = {"module": "weights", "torchscript": "path", "onnx": "path", "huggingface": "path"}


@dataclass(frozen=True)
class InputConfig:
    """What a member reads: the corpus' features, another feature store of the same
    utterances, or the raw waveform (docs/ensemble-yaml.md, "Inputs")."""

    features: str = ""  # "": the corpus' own features; else a feature store (same ids)
    waveform: int | None = None  # sample rate of a waveform member (e.g. 16000); None: features
    audio: str = ""  # the corpus the audio comes from; "": the one the feature store recorded

    def __post_init__(self) -> None:
        if self.waveform is not None:
            if isinstance(self.waveform, bool) or not isinstance(self.waveform, int):
                raise ConfigError(
                    f"input: waveform must be a sample rate in Hz, got {self.waveform!r}"
                )
            if not 1000 <= self.waveform <= 384000:
                raise ConfigError(f"input: waveform sample rate {self.waveform} Hz is implausible")
            if self.features:
                raise ConfigError("input: give features or waveform, not both")
        elif self.audio:
            raise ConfigError("input: audio names the corpus of a waveform input")
        for key in ("features", "audio"):
            if not isinstance(getattr(self, key), str):
                raise ConfigError(f"input: {key} must be a path")

    @property
    def key(self) -> str:
        """Members with equal keys read the same input tensors."""
        if self.waveform is not None:
            return f"waveform:{self.waveform}:{self.audio}"
        return f"features:{self.features}"

    @property
    def is_default(self) -> bool:
        return self == InputConfig()


def input_from(data: Any, where: str, base: Path) -> InputConfig:
    """``features`` (the corpus'), ``{features: PATH}``, ``{waveform: RATE[, audio: PATH]}``."""
    if data is None or data == "features":
        return InputConfig()
    if not isinstance(data, dict):
        raise ConfigError(
            f"{where}: input must be 'features', {{features: PATH}} or {{waveform: RATE}}"
        )
    check_keys(data, InputConfig, f"{where} input")
    config = InputConfig(**data)
    return replace(
        config, features=_resolve(config.features, base), audio=_resolve(config.audio, base)
    )


def _resolve(path: str, base: Path) -> str:
    """A path relative to the yaml file's folder ("" stays "")."""
    if not path:
        return path
    p = Path(path).expanduser()
    return str(p if p.is_absolute() or "://" in path else base / p)


@dataclass(frozen=True)
class MemberConfig:
    """One ensemble member: a kdpipe checkpoint, or a model from elsewhere (``kind``)."""

    checkpoint: str = ""  # kind checkpoint: a kdpipe learn output (model.safetensors + card)
    name: str = ""  # shown in the store's metadata; "" = the file or directory name
    weight: float = 1.0  # relative weight in the combination (normalised over members)
    temperature: float = 1.0  # logits / T before the softmax (T > 1 flattens)
    label_map: dict[str, str] | str | None = None  # None: same label set; "names": by name
    frame_rate: str = "average"  # how a faster member is brought to the ensemble's rate
    kind: str = ""  # checkpoint, module, torchscript, onnx, huggingface; "": checkpoint
    path: str = ""  # the model file (torchscript, onnx) or directory (huggingface)
    module: str = ""  # kind module: "package.module:Class" (runs user code)
    args: dict[str, Any] = field(default_factory=dict)  # kind module: constructor kwargs
    weights: str = ""  # kind module: safetensors file, or a torch state dict (weights_only)
    labels: str = ""  # the member's labels file (one a line); "": its own, else the corpus'
    output: str = "logits"  # what the network returns: logits, log_probs or probs
    level: str = "frame"  # outside kinds: frame (a posterior per frame) or utt
    subsampling: int = 1  # outside kinds reading features: output frames per input frame
    frame_shift_ms: float | None = None  # output frame shift; None: input shift x subsampling
    input: InputConfig = field(default_factory=InputConfig)  # features or waveform

    def __post_init__(self) -> None:
        kind = self.kind or "checkpoint"
        object.__setattr__(self, "kind", kind)
        if kind not in KINDS:
            raise ConfigError(f"member: kind must be one of {KINDS}, got {kind!r}")
        where = f"member {self.display_name or kind}"
        if kind == "checkpoint":
            if not isinstance(self.checkpoint, str) or not self.checkpoint:
                raise ConfigError("member: checkpoint must be a path")
            given = [key for key in _OUTSIDE if getattr(self, key) != _DEFAULTS[key]]
            if given:
                raise ConfigError(
                    f"{where}: {', '.join(given)} belong to other kinds (a checkpoint's card "
                    "says what it is)"
                )
        else:
            if self.checkpoint:
                raise ConfigError(f"{where}: checkpoint is for kind checkpoint; use path")
            need = PATH_KEY[kind]
            if not isinstance(getattr(self, need), str) or not getattr(self, need):
                raise ConfigError(f"{where}: kind {kind} needs {need}: a path")
            if kind == "module" and (not isinstance(self.module, str) or ":" not in self.module):
                raise ConfigError(f"{where}: kind module needs module: package.module:Class")
            if kind != "module" and (self.module or self.args or self.weights):
                raise ConfigError(f"{where}: module, args and weights are for kind module")
            if kind == "module" and self.path:
                raise ConfigError(f"{where}: kind module reads weights:, not path:")
        if not isinstance(self.args, dict):
            raise ConfigError(f"{where}: args must be a mapping of constructor arguments")
        if not isinstance(self.weight, (int, float)) or not self.weight > 0:
            raise ConfigError(f"{where}: weight must be > 0, got {self.weight}")
        if not isinstance(self.temperature, (int, float)) or not self.temperature > 0:
            raise ConfigError(f"{where}: temperature must be > 0, got {self.temperature}")
        label_map = self.label_map
        if label_map is not None and label_map != "names":
            if not isinstance(label_map, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in label_map.items()
            ):
                raise ConfigError(
                    f"{where}: label_map must be 'names' or a mapping "
                    "member label -> ensemble label"
                )
            object.__setattr__(self, "label_map", dict(label_map))
        if self.frame_rate not in FRAME_RATE:
            raise ConfigError(
                f"{where}: frame_rate must be one of {FRAME_RATE}, got {self.frame_rate!r}"
            )
        if self.output not in OUTPUTS:
            raise ConfigError(f"{where}: output must be one of {OUTPUTS}, got {self.output!r}")
        if self.level not in ("frame", "utt"):
            raise ConfigError(f"{where}: level must be frame or utt, got {self.level!r}")
        if (
            isinstance(self.subsampling, bool)
            or not isinstance(self.subsampling, int)
            or (self.subsampling < 1)
        ):
            raise ConfigError(f"{where}: subsampling must be an integer >= 1")
        if self.frame_shift_ms is not None and (
            not isinstance(self.frame_shift_ms, (int, float)) or not self.frame_shift_ms > 0
        ):
            raise ConfigError(f"{where}: frame_shift_ms must be > 0")
        if isinstance(self.input, (dict, str)):
            object.__setattr__(self, "input", input_from(self.input, where, Path.cwd()))
        if not isinstance(self.input, InputConfig):
            raise ConfigError(f"{where}: bad input {self.input!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain data; the keys of outside kinds only where set, so that a checkpoint
        member (and every fingerprint made of one) reads as it did before they existed."""
        data = to_dict(self)
        for key, default in {"kind": "checkpoint", **_DEFAULTS}.items():
            if data[key] == default:
                del data[key]
        if self.input.is_default:
            del data["input"]
        return data

    @property
    def source(self) -> str:
        """The file or directory the member's network comes from."""
        return self.checkpoint if self.kind == "checkpoint" else getattr(self, PATH_KEY[self.kind])

    @property
    def display_name(self) -> str:
        if self.name:
            return self.name
        source = self.checkpoint or self.path or self.weights
        return Path(source).name if source else ""


# fields that only outside kinds set (a checkpoint's card holds them), with their defaults
_OUTSIDE = ("path", "module", "args", "weights", "labels", "output", "level", "subsampling",
            "frame_shift_ms")  # fmt: skip
_DEFAULTS: dict[str, Any] = {
    "path": "", "module": "", "args": {}, "weights": "", "labels": "", "output": "logits",
    "level": "frame", "subsampling": 1, "frame_shift_ms": None,
}  # fmt: skip


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
    precision: str = "fp32"  # members' forward: fp32 (exact), bf16 (autocast, a GPU's speed)

    def __post_init__(self) -> None:
        if not self.members:
            raise ConfigError("ensemble: at least one member is needed")
        check_precision(self.precision, "ensemble")
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
        data["members"] = [member.to_dict() for member in self.members]
        return without_defaults(data, self, ("precision",))  # older fingerprints hold


def _member(data: Any, where: str, base: Path) -> MemberConfig:
    if isinstance(data, str):
        data = {"checkpoint": data}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: a member is a checkpoint path or a mapping")
    check_keys(data, MemberConfig, where)
    if "checkpoint" not in data and data.get("kind", "checkpoint") == "checkpoint":
        raise ConfigError(f"{where}: missing key 'checkpoint'")
    settings = dict(data)
    try:
        settings["input"] = input_from(settings.get("input"), where, base)
        member = MemberConfig(**settings)
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None
    return replace(
        member,
        checkpoint=_resolve(member.checkpoint, base),
        path=_resolve(member.path, base),
        weights=_resolve(member.weights, base),
        labels=_resolve(member.labels, base),
    )


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


def single_teacher(model: str | Path, rule: Rule, **settings: Any) -> EnsembleConfig:
    """One model as a one-member ensemble (``--model X``): a kdpipe checkpoint directory,
    an ``.onnx`` file, or a Hugging Face model directory (``config.json`` and no kdpipe
    ``card.json``; it reads the waveform at its ``preprocessor_config.json`` sampling rate).
    Anything else needs an ensemble.yaml saying what it is."""
    return EnsembleConfig(members=(_member_of(Path(model)),), rule=rule, **settings)


def _member_of(path: Path) -> MemberConfig:
    if path.is_file() and path.suffix == ".onnx":
        return MemberConfig(kind="onnx", path=str(path))
    if path.is_dir() and (path / "config.json").is_file() and not (path / "card.json").exists():
        rate = 16000  # transformers' default for audio models
        pre = path / "preprocessor_config.json"
        if pre.is_file():
            try:
                rate = json.loads(pre.read_text()).get("sampling_rate", rate)
            except (ValueError, AttributeError):
                raise ConfigError(f"{pre}: not a JSON object") from None
        if isinstance(rate, bool) or not isinstance(rate, int):
            raise ConfigError(f"{pre}: sampling_rate must be an integer, got {rate!r}")
        return MemberConfig(kind="huggingface", path=str(path), input=InputConfig(waveform=rate))
    return MemberConfig(str(path))


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
