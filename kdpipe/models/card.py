"""The model card: everything needed to rebuild, trust and match a checkpoint, as JSON.

A card says which architecture and config built the weights, which labels and features
the model expects, what data and hyper-parameters trained it, how well it did, and the
sha256 of its weights file. No torch: stores and the CLI read cards cheaply.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kdpipe import __version__
from kdpipe.corpus.features import FbankConfig
from kdpipe.errors import ConfigError, FingerprintMismatch, LabelSetError, ModelError
from kdpipe.labels import LabelSet
from kdpipe.levels import LEVEL_WORDS, UTT, Level, parse_level
from kdpipe.schema import check_keys, to_dict

CARD_FORMAT = 1  # bump when a field changes meaning; readers refuse newer formats
CARD_FILE = "card.json"
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class ModelCard:
    """Metadata of a checkpoint; ``weights_sha256`` is filled in by ``save_checkpoint``."""

    architecture: str  # built-in name ("blstm") or "package.module:Class"
    num_features: int  # F of the (B, T, F) input
    num_classes: int  # C of the logits; equals len(labels)
    labels: tuple[str, ...]  # label set names, index order
    level: Level  # "frame" or "utt"; written as LEVEL_WORDS[level] ("utterance"), see levels
    feature_fingerprint: str  # fingerprint of the features the model was trained on
    model_config: dict[str, Any] = field(default_factory=dict)  # kwargs that rebuild it
    subsampling: int = 1  # frame subsampling factor (1 for utterance level)
    features: dict[str, Any] | None = None  # FbankConfig dict; None for external features
    data_fingerprint: str = ""  # fingerprint of the training data / target store
    training: dict[str, Any] = field(default_factory=dict)  # hyper-parameters
    metrics: dict[str, Any] = field(default_factory=dict)  # e.g. {"dev_accuracy": 0.93}
    weights_sha256: str = ""  # sha256 of model.safetensors; "" until saved
    kdpipe_version: str = __version__  # the kdpipe that wrote it
    created: str = field(default_factory=_now)  # ISO 8601, UTC
    format_version: int = CARD_FORMAT  # card layout version
    ctc: dict[str, Any] | None = None  # a CTC model: {"blank": index, "units": its units'
    # record (kdpipe.corpus.units.TokenUnits.record)}; the units' files lie in units/

    def __post_init__(self) -> None:
        if not isinstance(self.labels, (list, tuple)):
            raise ModelError(f"model card: labels must be a list of names, got {self.labels!r}")
        object.__setattr__(self, "labels", tuple(self.labels))
        if not isinstance(self.architecture, str) or not self.architecture:
            raise ModelError("model card: architecture must be a non-empty string")
        for name in ("num_features", "num_classes", "subsampling", "format_version"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ModelError(f"model card: {name} must be an integer >= 1, got {v!r}")
        try:
            LabelSet(self.labels)
        except LabelSetError as error:
            raise ModelError(f"model card: bad label set: {error}") from None
        if len(self.labels) != self.num_classes:
            raise ModelError(
                f"model card: {len(self.labels)} labels but num_classes is {self.num_classes}"
            )
        try:
            object.__setattr__(self, "level", parse_level(self.level, "model card"))
        except ConfigError as error:
            raise ModelError(str(error)) from None
        if self.level == UTT and self.subsampling != 1:
            raise ModelError("model card: an utterance-level model has subsampling 1")
        if not isinstance(self.feature_fingerprint, str) or not self.feature_fingerprint:
            raise ModelError("model card: feature_fingerprint must be a non-empty string")
        if self.features is not None:
            try:
                fbank = FbankConfig.from_dict(self.features)
            except ConfigError as error:
                raise ModelError(f"model card: {error}") from None
            if fbank.num_mel_bins != self.num_features:
                raise ModelError(
                    f"model card: features have {fbank.num_mel_bins} mel bins but "
                    f"num_features is {self.num_features}"
                )
            object.__setattr__(self, "features", fbank.to_dict())
        if self.weights_sha256 and not _SHA256.fullmatch(self.weights_sha256):
            raise ModelError(f"model card: weights_sha256 is not a sha256: {self.weights_sha256!r}")
        if self.ctc is not None:
            blank = self.ctc.get("blank") if isinstance(self.ctc, Mapping) else None
            if isinstance(blank, bool) or not isinstance(blank, int):
                raise ModelError("model card: ctc must be a mapping with an integer blank")
            if not 0 <= blank < self.num_classes or self.level == UTT:
                raise ModelError(
                    f"model card: ctc blank {blank} is not a class of this frame-level model"
                )
        for name in ("model_config", "training", "metrics"):
            value = getattr(self, name)
            if not isinstance(value, Mapping):
                raise ModelError(f"model card: {name} must be a mapping")
            try:
                json.dumps(value, allow_nan=False)
            except (TypeError, ValueError) as error:
                raise ModelError(f"model card: {name} must be plain JSON data: {error}") from None
            object.__setattr__(self, name, dict(value))

    # -- views --------------------------------------------------------------------------

    @property
    def label_set(self) -> LabelSet:
        return LabelSet(self.labels)

    @property
    def feature_config(self) -> FbankConfig | None:
        return None if self.features is None else FbankConfig.from_dict(self.features)

    @property
    def weights_fingerprint(self) -> str:
        """The weights' sha256, the identity stores record for a teacher."""
        if not self.weights_sha256:
            raise ModelError("model card has no weights_sha256: the checkpoint was never saved")
        return self.weights_sha256

    def replace(self, **changes: Any) -> ModelCard:
        return dataclasses.replace(self, **changes)

    # -- checks -------------------------------------------------------------------------

    def check_compatible(
        self,
        labels: LabelSet,
        feature_fingerprint: str,
        what: str,
        *,
        features: FbankConfig | None = None,
        level: Level | None = None,
        name: str = "the checkpoint",
    ) -> None:
        """Refuse to pair this model with ``what`` (a store, a corpus) made differently.

        ``LabelSetError`` if the label sets differ, ``FingerprintMismatch`` if the feature
        fingerprints differ (naming the differing settings when ``features`` is given),
        ``ModelError`` if ``level`` is given and differs.
        """
        self.label_set.check_same(labels, name, what)
        if feature_fingerprint != self.feature_fingerprint:
            detail = ""
            if features is not None and self.features is not None:
                theirs = features.to_dict()
                diffs = [
                    f"{k} {self.features.get(k)!r} vs {theirs.get(k)!r}"
                    for k in sorted(set(self.features) | set(theirs))
                    if self.features.get(k) != theirs.get(k)
                ]
                if diffs:
                    detail = f"; differing settings: {', '.join(diffs)}"
            raise FingerprintMismatch(
                f"features of {name} (fingerprint {self.feature_fingerprint}) disagree with "
                f"{what} (fingerprint {feature_fingerprint}){detail}"
            )
        if level is not None and level != self.level:
            raise ModelError(
                f"{name} is a {LEVEL_WORDS[self.level]}-level model but {what} is "
                f"{LEVEL_WORDS[level]} level"
            )

    # -- (de)serialisation --------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        out = {**to_dict(self), "level": LEVEL_WORDS[self.level]}
        if self.ctc is None:
            del out["ctc"]  # the card of every other model is what it always was
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "model card") -> ModelCard:
        if not isinstance(data, Mapping):
            raise ModelError(f"{where}: expected a JSON object, got {type(data).__name__}")
        version = data.get("format_version", CARD_FORMAT)
        if isinstance(version, int) and version > CARD_FORMAT:
            raise ModelError(
                f"{where}: card format {version} is newer than this kdpipe reads "
                f"({CARD_FORMAT}); upgrade kdpipe"
            )
        try:
            check_keys(data, cls, where)
            return cls(**data)
        except (ConfigError, TypeError) as error:
            raise ModelError(f"{where}: {error}") from None
        except ModelError as error:
            raise ModelError(f"{where}: {error}") from None

    def write(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def read(cls, path: str | Path) -> ModelCard:
        p = Path(path)
        if not p.is_file():
            raise ModelError(f"model card not found: {p}")
        try:
            data = json.loads(p.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ModelError(f"{p}: not valid JSON: {error}") from None
        return cls.from_dict(data, str(p))
