"""Settings of the two synthetic corpora, as frozen dataclasses (``from_dict``/``to_dict``)."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeVar

from kdpipe.corpus.synth.channel import CODECS
from kdpipe.corpus.synth.noise import NOISE_TYPES
from kdpipe.corpus.synth.phonemes import PHONES
from kdpipe.corpus.synth.units import STATES, UNITS, Units
from kdpipe.corpus.synth.voices import ACCENTS
from kdpipe.schema import ConfigError, fingerprint, from_dict, to_dict, without_defaults

# Google Speech Commands v2: 20 core words, digits included, plus its 15 auxiliary words.
# fmt: off
SPEECH_COMMANDS_WORDS: tuple[str, ...] = (
    "yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go", "zero", "one", "two",
    "three", "four", "five", "six", "seven", "eight", "nine", "backward", "bed", "bird", "cat",
    "dog", "follow", "forward", "happy", "house", "learn", "marvin", "sheila", "tree", "visual",
    "wow",
)
# fmt: on

SIZES = ("small", "medium", "large")
Labels = Literal["true", "aligned"]
# true: frame labels from eSpeak's phone events; aligned: transcripts and a lexicon only (for
# an aligner to label), the true labels kept apart under reference/
LABELS = ("true", "aligned")
_WORD = re.compile(r"[a-z][a-z']*")

C = TypeVar("C", bound="BaseSynthConfig")

# The recording channel's settings (``channel``): written to ``to_dict`` (so to synth.json
# and the fingerprints) only when one of them is not its default, so corpora and recipes
# made before they existed keep their fingerprints.
CHANNEL_KEYS = (
    "reverb_prob", "rt60", "telephone_prob", "codecs", "speed_prob", "speed", "tempo_prob",
    "tempo", "mic_prob", "mic_gain_db",
)  # fmt: skip
PROBABILITIES = ("reverb_prob", "telephone_prob", "speed_prob", "tempo_prob", "mic_prob")

# ``for_size(realism=True)``, ``--realism``: a mix like that of a varied recorded corpus,
# where about one utterance in nine stays clean (0.5 x 0.8 x 0.7 x 0.8 x 0.5):
REALISM: dict[str, Any] = {
    "reverb_prob": 0.5,  # half far-field (meeting rooms, smart speakers), half close-talk
    "telephone_prob": 0.2,  # a fifth over a phone line, as in call-centre data
    "speed_prob": 0.3,  # Kaldi adds 0.9x and 1.1x copies; no copies here: a third changed
    "tempo_prob": 0.2,  # talkers' own rate changes, pitch kept
    "mic_prob": 0.5,  # half through a coloured (cheap or distant) microphone
}


@dataclass(frozen=True)
class BaseSynthConfig:
    """Settings both tasks share: voices, splits, prosody, noise, level."""

    seed: int = 0  # everything (voices, texts, noise) follows from it
    num_utts: int = 0  # set by the task's size presets
    num_voices: int = 0  # set by the task's size presets
    accents: tuple[str, ...] = ACCENTS  # every English accent eSpeak NG ships
    variants: tuple[str, ...] | None = None  # None: base voice + all of voices/!v; "" = base
    dev_fraction: float = 0.1  # share of voices (by variant) held out for dev
    test_fraction: float = 0.1  # ... and for test: unseen speakers
    wpm: tuple[int, int] = (130, 210)  # base speaking rate per voice (eSpeak default 175)
    pitch: tuple[int, int] = (20, 80)  # base pitch per voice, 0..99 (50 = variant's own)
    pitch_range: tuple[int, int] = (20, 80)  # base intonation range per voice, 0..99
    wpm_jitter: float = 0.08  # per-utterance relative change of the voice's rate
    pitch_jitter: int = 6  # per-utterance +- change of pitch
    pitch_range_jitter: int = 10  # per-utterance +- change of pitch range
    noise_prob: float = 0.5  # share of utterances with background noise
    noise_types: tuple[str, ...] = ("white", "pink")  # drawn uniformly per noisy utterance
    snr_db: tuple[float, float] = (15.0, 40.0)  # speech-to-noise ratio, uniform
    level_db: tuple[float, float] = (-20.0, -3.0)  # peak level of each file, dBFS, uniform
    sample_rate: int = 16000  # what FbankConfig expects
    # the recording channel (``channel``; all off by default: the corpora as they were)
    reverb_prob: float = 0.0  # share of utterances in a reverberant room
    rt60: tuple[float, float] = (0.2, 0.9)  # reverberation time, s: a car to a lecture hall
    telephone_prob: float = 0.0  # share over a telephone line (300-3400 Hz, 8 kHz)
    codecs: tuple[str, ...] = CODECS  # the line's codec, drawn uniformly per such utterance
    speed_prob: float = 0.0  # share speed-perturbed (tempo and pitch)
    speed: tuple[float, float] = (0.9, 1.1)  # speed factor, uniform: Kaldi's 0.9 and 1.1
    tempo_prob: float = 0.0  # share tempo-perturbed (pitch kept)
    tempo: tuple[float, float] = (0.9, 1.1)  # tempo factor, uniform, as for speed
    mic_prob: float = 0.0  # share through a coloured microphone
    mic_gain_db: float = 6.0  # the EQ bands' gains are uniform in +- this: a real mic's

    SIZE_PRESETS: ClassVar[dict[str, tuple[int, int]]] = {}
    TASK: ClassVar[str] = ""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, list):
                object.__setattr__(self, f.name, tuple(v))
        where = f"synth {self.TASK}"
        if self.num_utts < 1 or self.num_voices < 1:
            raise ConfigError(f"{where}: num_utts and num_voices must be >= 1")
        if self.num_voices < 3 and (self.dev_fraction > 0 or self.test_fraction > 0):
            raise ConfigError(f"{where}: need >= 3 voices for train/dev/test speaker splits")
        if not self.accents:
            raise ConfigError(f"{where}: accents must not be empty")
        if self.variants is not None and not self.variants:
            raise ConfigError(f"{where}: variants must not be empty (null = all)")
        if not (0 <= self.dev_fraction < 1 and 0 <= self.test_fraction < 1) or (
            self.dev_fraction + self.test_fraction >= 1
        ):
            raise ConfigError(f"{where}: need 0 <= dev_fraction, test_fraction and sum < 1")
        _check_pair(where, "wpm", self.wpm, 80, 450)
        _check_pair(where, "pitch", self.pitch, 0, 99)
        _check_pair(where, "pitch_range", self.pitch_range, 0, 99)
        _check_pair(where, "snr_db", self.snr_db, -20, 100)
        _check_pair(where, "level_db", self.level_db, -60, 0)
        if not 0 <= self.wpm_jitter < 0.5 or self.pitch_jitter < 0 or self.pitch_range_jitter < 0:
            raise ConfigError(f"{where}: jitters must be >= 0 (wpm_jitter < 0.5)")
        if not 0 <= self.noise_prob <= 1:
            raise ConfigError(f"{where}: noise_prob must be in [0, 1]")
        bad = [t for t in self.noise_types if t not in NOISE_TYPES]
        if bad or (self.noise_prob > 0 and not self.noise_types):
            raise ConfigError(f"{where}: noise_types must be some of {', '.join(NOISE_TYPES)}")
        if self.sample_rate < 8000:
            raise ConfigError(f"{where}: sample_rate must be >= 8000")
        for name in PROBABILITIES:
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"{where}: {name} must be in [0, 1], got {getattr(self, name)}")
        _check_pair(where, "rt60", self.rt60, 0.05, 3.0)
        _check_pair(where, "speed", self.speed, 0.5, 2.0)
        _check_pair(where, "tempo", self.tempo, 0.5, 2.0)
        bad = [c for c in self.codecs if c not in CODECS]
        if bad or not self.codecs:
            raise ConfigError(f"{where}: codecs must be some of {', '.join(CODECS)}, got {bad}")
        if not 0 <= self.mic_gain_db <= 24:
            raise ConfigError(f"{where}: mic_gain_db must be in 0..24, got {self.mic_gain_db}")

    @property
    def has_channel(self) -> bool:
        """Whether any utterance may get a channel effect (reverb, telephone, ...)."""
        return any(getattr(self, name) > 0 for name in PROBABILITIES)

    @classmethod
    def for_size(cls: type[C], size: str = "small", realism: bool = False, **overrides: Any) -> C:
        """The preset for ``size`` (small/medium/large), with ``REALISM``'s channel mix
        when ``realism``, then ``overrides`` (None: not given) applied."""
        if size not in cls.SIZE_PRESETS:
            raise ConfigError(f"unknown size {size!r}; choose {', '.join(SIZES)}")
        if not isinstance(realism, bool):
            raise ConfigError(f"synth {cls.TASK}: realism must be true or false, got {realism!r}")
        num_utts, num_voices = cls.SIZE_PRESETS[size]
        values: dict[str, Any] = {"num_utts": num_utts, "num_voices": num_voices}
        if realism:
            values.update(REALISM)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_dict(values)

    def to_dict(self) -> dict[str, Any]:
        """The settings; the channel's (``CHANNEL_KEYS``) only when one is not its default,
        so that the settings (and fingerprints) of corpora without them stay the same."""
        values = to_dict(self)
        defaults = {f.name: f.default for f in dataclasses.fields(BaseSynthConfig)}
        if all(getattr(self, name) == defaults[name] for name in CHANNEL_KEYS):
            for name in CHANNEL_KEYS:
                del values[name]
        return values

    @classmethod
    def from_dict(cls: type[C], d: dict[str, Any] | None) -> C:
        return from_dict(cls, d, f"synth {cls.TASK}")

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.to_dict())


def _check_pair(where: str, name: str, v: Any, lo: float, hi: float) -> None:
    if len(v) != 2 or not lo <= v[0] <= v[1] <= hi:
        raise ConfigError(f"{where}: {name} must be [low, high] within {lo}..{hi}, got {v}")


@dataclass(frozen=True)
class KeywordSynthConfig(BaseSynthConfig):
    """A Speech-Commands-like keyword set: one word per 1 s clip."""

    num_utts: int = 2400  # ~70 clips per word, builds in seconds
    num_voices: int = 120  # ~96 train / 12 dev / 12 test speakers
    words: tuple[str, ...] = SPEECH_COMMANDS_WORDS  # the 35 words of Speech Commands v2
    clip_seconds: float = 1.0  # Speech Commands clips are 1 s
    noise_prob: float = 0.8  # keyword spotting must cope with background noise
    noise_types: tuple[str, ...] = NOISE_TYPES  # white, pink and babble
    snr_db: tuple[float, float] = (5.0, 30.0)  # from noisy to nearly clean

    SIZE_PRESETS: ClassVar[dict[str, tuple[int, int]]] = {
        "small": (2400, 120),
        "medium": (12000, 400),
        "large": (48000, 800),  # eSpeak has 8 accents x 104 timbres = 832 voices
    }
    TASK: ClassVar[str] = "keywords"

    def __post_init__(self) -> None:
        super().__post_init__()
        bad = [w for w in self.words if not _WORD.fullmatch(w)]
        if not self.words or bad:
            raise ConfigError(f"synth keywords: words must be lower-case a-z words: {bad[:5]}")
        if len(set(self.words)) != len(self.words):
            raise ConfigError("synth keywords: words must be unique")
        if not 0.5 <= self.clip_seconds <= 10:
            raise ConfigError("synth keywords: clip_seconds must be in 0.5..10")


@dataclass(frozen=True)
class PhoneSynthConfig(BaseSynthConfig):
    """Sentences with frame-level phone (or state, or tied triphone state) labels."""

    num_utts: int = 800  # ~40 minutes of speech
    num_voices: int = 80  # ~64 train / 8 dev / 8 test speakers
    min_words: int = 3  # words per random sentence ...
    max_words: int = 8  # ... uniform in [min_words, max_words]
    text_file: str | None = None  # sentences (one per line) instead of random ones
    units: Units = "phones"  # phones | states | cd
    num_states: int = 2000  # cd: target label count, like the senones of a hybrid system
    min_state_frames: int = 5  # cd: fewer train frames than this cannot be a class
    pad_seconds: tuple[float, float] = (0.05, 0.3)  # silence before and after, uniform
    labels: Labels = "true"  # the corpus is labelled as ever unless asked to be transcribed

    SIZE_PRESETS: ClassVar[dict[str, tuple[int, int]]] = {
        "small": (800, 80),
        "medium": (4000, 300),
        "large": (16000, 800),
    }
    TASK: ClassVar[str] = "phones"

    def __post_init__(self) -> None:
        super().__post_init__()
        given: object = self.labels
        if given is True:  # YAML reads `labels: true` as a bool
            object.__setattr__(self, "labels", "true")
        if self.labels not in LABELS:
            raise ConfigError(f"synth phones: labels must be one of {', '.join(LABELS)}")
        if not 1 <= self.min_words <= self.max_words <= 50:
            raise ConfigError("synth phones: need 1 <= min_words <= max_words <= 50")
        if self.units not in UNITS:
            raise ConfigError(f"synth phones: units must be one of {', '.join(UNITS)}")
        floor = STATES * len(PHONES)
        if self.num_states < floor:
            raise ConfigError(f"synth phones: num_states must be >= {floor} (the monophone states)")
        if self.min_state_frames < 1:
            raise ConfigError("synth phones: min_state_frames must be >= 1")
        _check_pair("synth phones", "pad_seconds", self.pad_seconds, 0, 5)

    def to_dict(self) -> dict[str, Any]:
        """The settings; ``labels`` only when not the default, so that the settings (and the
        fingerprints of corpora and recipes) made before it existed stay the same."""
        return without_defaults(super().to_dict(), self, ("labels",))
