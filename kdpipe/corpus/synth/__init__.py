"""Offline synthetic corpora from eSpeak NG: ``kdpipe corpus synth keywords|phones``.

- ``synth_keywords``: a Speech-Commands-like keyword set (1 s clips, many voices, noise),
  split by speaker, in the Google Speech Commands layout;
- ``synth_phones``: sentences with frame-level phone / state / tied-triphone labels from
  eSpeak's phoneme events, as Kaldi data folders; or (``labels="aligned"``) transcripts
  and a lexicon as spoken only, for an aligner, with the true labels kept apart;
- ``speak``: one text, one voice -> (16 kHz float32 audio, [(phone, start_s, end_s)]).

Either corpus can be made harder (``REALISM``, ``--realism``, ``reverb_prob`` and the
other channel settings): reverberation, telephone band and codecs, speed and tempo
perturbation, microphone colouring, the labels kept true to the audio.

Everything follows from the seed: the same seed and size give byte-identical files,
whatever the number of worker processes (see ``espeak`` for how).

Modules: ``settings`` (the two tasks' configs), ``draws`` (every random choice, up front),
``voices`` (accents x variants, split by variant), ``espeak`` and ``private`` (the eSpeak NG
binding and its private copies), ``phonemes`` and ``align`` (eSpeak's events to clean phone
spans), ``spoken`` (eSpeak's word events to each word's phones, the lexicon as spoken),
``audio`` (``speak``, resampling), ``noise``, ``channel`` (the recording channel: speed
and tempo perturbation, room, microphone, telephone line; off unless asked, ``--realism``),
``worker`` (one utterance: speak, place, channel and noise, write), ``runner`` (output
folder, babble bank, worker processes, summary), ``keywords`` and ``phones`` (the two
tasks), ``units`` (phone, state and tied-triphone frame labels).
"""

from kdpipe.corpus.synth.audio import Speech, speak
from kdpipe.corpus.synth.keywords import synth_keywords
from kdpipe.corpus.synth.phonemes import PHONES, SIL, normalize_phone
from kdpipe.corpus.synth.phones import synth_phones
from kdpipe.corpus.synth.runner import SynthSummary
from kdpipe.corpus.synth.settings import (
    REALISM,
    SIZES,
    SPEECH_COMMANDS_WORDS,
    KeywordSynthConfig,
    PhoneSynthConfig,
)
from kdpipe.corpus.synth.voices import ACCENTS, available_variants, check_voice

__all__ = [
    "ACCENTS",
    "PHONES",
    "REALISM",
    "SIL",
    "SIZES",
    "SPEECH_COMMANDS_WORDS",
    "KeywordSynthConfig",
    "PhoneSynthConfig",
    "Speech",
    "SynthSummary",
    "available_variants",
    "check_voice",
    "normalize_phone",
    "speak",
    "synth_keywords",
    "synth_phones",
]
