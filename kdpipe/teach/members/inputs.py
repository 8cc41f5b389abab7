"""What a member reads, per batch: the corpus' features, another feature store of the same
utterances, or the raw waveform (docs/ensemble-yaml.md, "Inputs").

Legend: B batch, T frames of the corpus' features, T_o of another store's, F its
dimension, S samples. Every source cuts the batch's view windows (input frames
[start, stop) of the corpus' features) out of its own input:

- ``CorpusFeatures``: the features the student reads, CMVN applied over the whole
  utterance, then cut (what teach always did);
- ``OtherFeatures``: a feature store at the same frame shift (e.g. Kaldi MFCC for a
  Kaldi-trained teacher); every utterance must be there with a frame count within
  ``FRAME_TOLERANCE`` of the corpus' (checked before inference); the window is cut the
  same way and clipped to its frames;
- ``Waveform``: the audio, read from the corpus the feature store was prepared from (or
  ``input.audio``), mono, resampled with soxr to the member's rate (``load_audio``, as
  ``prepare`` does); a window of frames [start, stop) is samples
  [start * hop, (stop - 1) * hop + window) of the corpus' frame shift (hop) and length
  (both (window - hop) / 2 earlier, clamped at 0, without ``snip_edges``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from kdpipe.batching import pad_features
from kdpipe.corpus.audio import load_audio
from kdpipe.corpus.featstore import FeatureStore
from kdpipe.corpus.manifest import Utterance
from kdpipe.corpus.readers import read_corpus
from kdpipe.errors import ConfigError, CorpusError
from kdpipe.host_device import to_device
from kdpipe.teach.ensemble_yaml import InputConfig

FRAME_TOLERANCE = 2  # frames two feature extractions of one utterance may differ by (edges)
READ_GAP = 16384  # frames between two utterances that still share one read

Windows = dict[int, tuple[int, int]]  # corpus index -> input frames [start, stop); -1: end
Raw = dict[int, np.ndarray]  # corpus index -> raw (T, F) features of the corpus


class InputSource(Protocol):
    """One kind of input; ``batch`` pads the inputs of corpus utterances ``index``."""

    @property
    def dim(self) -> int | None: ...  # F for features, None for the waveform

    @property
    def what(self) -> str: ...  # "features" or "waveform", in messages

    def batch(
        self, index: Sequence[int], windows: Windows, raw: Raw, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


def _cut(x: np.ndarray, window: tuple[int, int]) -> np.ndarray:
    start, stop = window
    return x[start : None if stop < 0 else stop]


class CorpusFeatures:
    """The corpus' own features (CMVN over the whole utterance, then the window)."""

    what = "features"

    def __init__(self, corpus: FeatureStore) -> None:
        self.corpus, self.dim, self.store = corpus, corpus.dim, corpus

    def batch(
        self, index: Sequence[int], windows: Windows, raw: Raw, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        inputs = [_cut(self.corpus.normalize(raw[i]), windows[i]) for i in index]  # (T_view, F)
        x, lengths = pad_features(inputs)  # (B, T, F), (B,)
        return to_device(x, device), to_device(lengths, device)


class OtherFeatures:
    """Another feature store of the corpus' utterances, at the same frame shift."""

    what = "features"

    def __init__(self, corpus: FeatureStore, path: str, selection: np.ndarray) -> None:
        try:
            self.store = FeatureStore.open(path)
        except CorpusError as error:
            raise ConfigError(f"input features: {error}") from None
        store = self.store
        self.dim = store.dim
        if abs(store.config.frame_shift_ms - corpus.config.frame_shift_ms) > 1e-6:
            raise ConfigError(
                f"input features {path}: frame shift {store.config.frame_shift_ms} ms, the "
                f"corpus' is {corpus.config.frame_shift_ms} ms (windows are cut in frames)"
            )
        self.index = np.empty(len(corpus), dtype=np.int64)  # corpus index -> own index
        self.index.fill(-1)
        own_index = {utt_id: j for j, utt_id in enumerate(store.ids)}
        missing = []
        for i in selection.tolist():
            own = own_index.get(corpus.ids[i])
            if own is None:
                missing.append(corpus.ids[i])
                continue
            self.index[i] = own
            if abs(int(store.num_frames[own]) - int(corpus.num_frames[i])) > FRAME_TOLERANCE:
                raise ConfigError(
                    f"input features {path}: utterance {corpus.ids[i]} has "
                    f"{int(store.num_frames[own])} frames, the corpus "
                    f"{int(corpus.num_frames[i])} (tolerance {FRAME_TOLERANCE})"
                )
        if missing:
            raise ConfigError(
                f"input features {path}: {len(missing)} utterances of the selection are "
                f"missing (first: {missing[0]})"
            )

    def batch(
        self, index: Sequence[int], windows: Windows, raw: Raw, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        own = self.index[np.asarray(index, dtype=np.int64)]  # (B,)
        order = np.argsort(own)
        read = self.store.read_utterances(own[order], gap=READ_GAP)
        feats: list[np.ndarray] = [np.empty(0)] * len(own)
        for position, (stored, _labels) in zip(order.tolist(), read, strict=True):
            feats[position] = stored
        inputs = []
        for i, own_feats in zip(index, feats, strict=True):
            normalized = self.store.normalize(own_feats)
            cut = _cut(normalized, windows[i])  # (T_view', F)
            inputs.append(cut if len(cut) else normalized[-1:])
        x, lengths = pad_features(inputs)  # (B, T_o, F), (B,)
        return to_device(x, device), to_device(lengths, device)


class Waveform:
    """The utterances' audio at ``sample_rate`` (see the module docstring)."""

    what = "waveform"
    dim = None

    def __init__(self, corpus: FeatureStore, config: InputConfig, selection: np.ndarray) -> None:
        assert config.waveform is not None
        self.rate = config.waveform
        source = config.audio or str(corpus.attrs.get("source", ""))
        fmt = None if config.audio else corpus.attrs.get("source_format")
        if not source or not Path(source).exists():
            raise ConfigError(
                f"waveform input: the corpus' audio {source!r} (recorded by prepare) is not "
                "here; give input: {waveform: RATE, audio: PATH}"
            )
        try:
            utts = read_corpus(source, fmt, sample_rate=self.rate).utterances
        except CorpusError as error:
            raise ConfigError(f"waveform input: {error}") from None
        by_id = {utt.id: utt for utt in utts}
        self.utts: dict[int, Utterance] = {}
        missing = []
        for i in selection.tolist():
            utt = by_id.get(corpus.ids[i])
            if utt is None or utt.audio is None:
                missing.append(corpus.ids[i])
            else:
                self.utts[i] = utt
        if missing:
            raise ConfigError(
                f"waveform input {source}: no audio for {len(missing)} utterances of the "
                f"selection (first: {missing[0]})"
            )
        cfg = corpus.config
        self.hop = cfg.frame_shift_ms * self.rate / 1000  # samples per corpus frame
        self.window = cfg.frame_length_ms * self.rate / 1000
        # frame i starts at i * hop with snip_edges (Kaldi's default), else it is centred on
        # i * hop + hop / 2, so it starts (window - hop) / 2 earlier
        self.offset = 0.0 if cfg.snip_edges else (self.window - self.hop) / 2

    def samples(self, window: tuple[int, int]) -> tuple[int, int | None]:
        """Samples [first, last) of input frames [start, stop) (stop -1: to the end)."""
        start, stop = window
        first = max(0, round(start * self.hop - self.offset))
        if stop < 0:
            return first, None
        return first, max(first + 1, round((stop - 1) * self.hop + self.window - self.offset))

    def batch(
        self, index: Sequence[int], windows: Windows, raw: Raw, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        waves = []
        for i in index:
            utt = self.utts[i]
            assert utt.audio is not None
            wave = load_audio(utt.audio, self.rate, utt.start, utt.end, utt.id)  # (S,)
            first, last = self.samples(windows[i])
            waves.append(wave[first:last][:, None])  # (S_view, 1)
        x, lengths = pad_features(waves)  # (B, S, 1)
        return to_device(x[..., 0], device), to_device(lengths, device)  # (B, S), (B,)


def input_source(config: InputConfig, corpus: FeatureStore, selection: np.ndarray) -> InputSource:
    """The source that reads ``config``'s input for the selected corpus utterances."""
    if config.waveform is not None:
        return Waveform(corpus, config, selection)
    if config.features:
        return OtherFeatures(corpus, config.features, selection)
    return CorpusFeatures(corpus)
