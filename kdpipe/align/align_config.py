"""``kdpipe corpus align`` settings: every number that matters, with Kaldi's defaults.

The monophone stage follows ``steps/train_mono.sh``, the triphone stage
``steps/train_deltas.sh`` (iterations, realignment iterations, Gaussian targets, power,
beams, scales). A YAML file (``--config``) gives any of them; ``from_dict`` refuses unknown
keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kdpipe.align.features import MfccConfig
from kdpipe.align.gmm import AlignOptions
from kdpipe.schema import ConfigError, fingerprint, from_dict, to_dict

MONO_REALIGN = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 14, 16, 18, 20, 23, 26, 29, 32, 35, 38)


@dataclass(frozen=True)
class StageConfig:
    """One training stage: EM iterations, when to realign, how many Gaussians."""

    iterations: int  # EM passes
    realign_at: tuple[int, ...]  # passes that realign first (0-based, as Kaldi's x)
    gaussians: int  # total Gaussians reached by mixing up
    mixup_until: int  # Gaussians grow linearly until this pass
    power: float = 0.25  # gmm-est --power: Gaussians per state ~ occupancy^power
    beam: float = 10.0  # alignment beam (train_mono: 6; align_si, train_deltas: 10)
    retry_beam: float = 40.0  # tried when the beam finds no path (Kaldi: 4 x beam)
    boost_silence: float = 1.0  # silence pdf weights scaled for aligning (1 = off)

    def __post_init__(self) -> None:
        object.__setattr__(self, "realign_at", tuple(int(i) for i in self.realign_at))
        if self.iterations < 1 or not 0 <= self.mixup_until <= self.iterations:
            raise ConfigError("align: iterations >= 1 and 0 <= mixup_until <= iterations")
        if any(not 0 <= i < self.iterations for i in self.realign_at):
            raise ConfigError("align: realign_at passes must lie in [0, iterations)")
        if self.gaussians < 1 or self.power <= 0:
            raise ConfigError("align: gaussians >= 1 and power > 0")
        if not 0 < self.beam <= self.retry_beam:
            raise ConfigError("align: need 0 < beam <= retry_beam")

    def options(self, scales: Scales) -> AlignOptions:
        return AlignOptions(
            beam=self.beam,
            retry_beam=self.retry_beam,
            acoustic_scale=scales.acoustic,
            transition_scale=scales.transition,
            self_loop_scale=scales.self_loop,
        )


@dataclass(frozen=True)
class Scales:
    """Kaldi's ``--scale-opts`` for training-graph alignment."""

    acoustic: float = 0.1  # GMM log-likelihoods are ~10x too sharp against transitions
    transition: float = 1.0
    self_loop: float = 0.1  # self-loops scaled apart, as in every Kaldi recipe


def _mono() -> StageConfig:
    # train_mono.sh: 40 passes, realign at its list, totgauss 1000, max_iter_inc 30, beam 6
    return StageConfig(40, MONO_REALIGN, 1000, 30, beam=6.0, retry_beam=24.0)


def _tri() -> StageConfig:
    # train_deltas.sh: 35 passes, realign at 10 20 30, max_iter_inc 25, beam 10 / 40
    return StageConfig(35, (10, 20, 30), 10000, 25)


@dataclass(frozen=True)
class AlignConfig:
    """The whole ``align``: features, lexicon handling, the two stages, the tree."""

    mfcc: MfccConfig = field(default_factory=MfccConfig)  # Kaldi's conf/mfcc.conf
    mono: StageConfig = field(default_factory=_mono)
    tri: StageConfig = field(default_factory=_tri)
    num_leaves: int = 2000  # tied triphone states (the papers' "senones"); 0 = stop at mono
    tree_min_count: float = 100.0  # frames a leaf needs (build-tree --min-count? Kaldi: 100)
    scales: Scales = field(default_factory=Scales)
    silence_prob: float = 0.5  # optional silence between words (prepare_lang.sh's 0.5)
    num_states: int = 3  # emitting states of a non-silence phone (gen_topo.pl)
    num_silence_states: int = 5  # of silence (gen_topo.pl)

    def __post_init__(self) -> None:
        defaults = {"mfcc": MfccConfig(), "mono": _mono(), "tri": _tri(), "scales": Scales()}
        for name, default in defaults.items():
            value = getattr(self, name)
            if isinstance(value, Mapping):  # from YAML: keys not given keep their default
                merged = {**to_dict(default), **value}
                object.__setattr__(self, name, from_dict(type(default), merged, f"align.{name}"))
        if self.num_leaves < 0 or self.tree_min_count <= 0:
            raise ConfigError("align: num_leaves >= 0 (0: monophones only), tree_min_count > 0")
        if not 0 < self.silence_prob < 1:
            raise ConfigError("align: silence_prob must be in (0, 1)")

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> AlignConfig:
        return from_dict(cls, data, "align")

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.to_dict())
