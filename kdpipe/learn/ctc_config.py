"""The CTC config (``loss: ctc`` with ``ctc:`` in a training YAML, ``--loss ctc --units``).

A CTC run trains on token sequences made from the corpus' transcripts instead of frame
labels; the token units are built from the training split's transcripts
(``kdpipe.corpus.units``) and saved with the checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kdpipe.corpus.units import UnitsSpec
from kdpipe.errors import ConfigError
from kdpipe.schema import from_dict, to_dict

LOSSES = ("ce", "ctc")  # frame (or clip) cross-entropy, or CTC on token sequences


@dataclass(frozen=True)
class CtcConfig:
    """What a CTC run's tokens are; every default with its reason."""

    units: str = "phones"  # phones through the lexicon: the embedded corpora have one
    lexicon: str | None = None  # phones: a lexicon file; None: the one beside the corpus
    g2p: str | None = None  # phones: eSpeak voice for words the lexicon lacks; None: off
    labelled: str | None = None  # distilling: the subset of the train split whose
    # transcripts the CTC term sees (e.g. train[:10%]); None: all. The KL sees every frame.
    decode: str = "greedy"  # dev and eval decoding: greedy or prefix_beam
    beam: int = 8  # prefix_beam: hypotheses kept per frame

    def __post_init__(self) -> None:
        spec = UnitsSpec.parse(self.units)  # ConfigError for a bad spec
        object.__setattr__(self, "units", str(spec))
        if self.decode not in ("greedy", "prefix_beam"):
            raise ConfigError(f"ctc: decode must be greedy or prefix_beam, got {self.decode!r}")
        if isinstance(self.beam, bool) or not isinstance(self.beam, int) or self.beam < 1:
            raise ConfigError(f"ctc: beam must be an integer >= 1, got {self.beam!r}")

    @property
    def spec(self) -> UnitsSpec:
        return UnitsSpec.parse(self.units)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> CtcConfig:
        return from_dict(cls, data, "ctc")
