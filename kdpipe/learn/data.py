"""Labelled data held in memory: one split of a feature store, batched for a model.

Legend: N utterances, B batch, T frames, F features.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from kdpipe.batching import pad_features, pad_labels
from kdpipe.corpus.featstore import FeatureStore
from kdpipe.corpus.views import ViewConfig, crop_windows
from kdpipe.errors import TrainingError
from kdpipe.host_device import to_device
from kdpipe.levels import FRAME, Level


@dataclass
class SoftTargets:
    """Sparse teacher targets of a batch at the student's output rate (T' = 1 for clips)."""

    idx: torch.Tensor  # (B, T', K) int64 class indices (any value in empty slots)
    logp: torch.Tensor  # (B, T', K) float32 log-probs at T=1, -inf in empty slots
    tail: torch.Tensor  # (B, T') float32 log of the mass not kept (-inf: none)
    valid: torch.Tensor  # (B, T') bool rows that have a target
    weight: torch.Tensor  # (B,) float32 per-utterance loss weight (store mixing)

    def to(self, device: torch.device) -> SoftTargets:
        moved = (to_device(tensor, device) for tensor in vars(self).values())
        return SoftTargets(*moved)


@dataclass
class Batch:
    """A padded batch. ``y`` is (B, T) frame labels (-100 = padding) or (B,) clip labels;
    batches of a target stream carry ``targets`` and labels already at the student's
    output rate (B, T')."""

    x: torch.Tensor  # (B, T, F) float32, zero-padded
    lengths: torch.Tensor  # (B,) int64, valid frames per utterance
    y: torch.Tensor  # (B, T) or (B,) int64
    index: np.ndarray  # (B,) utterance indices into the dataset
    targets: SoftTargets | None = None  # teacher targets (``learn --targets``)
    tokens: torch.Tensor | None = None  # (B, L) int64 CTC token ids, IGNORE-padded

    def to(self, device: torch.device) -> Batch:
        soft = None if self.targets is None else self.targets.to(device)
        tokens = None if self.tokens is None else to_device(self.tokens, device)
        return Batch(
            to_device(self.x, device), to_device(self.lengths, device), to_device(self.y, device),
            self.index, soft, tokens,
        )  # fmt: skip


@dataclass
class LabelledData:
    """Features and hard labels of one split, with utterance ids for reports."""

    ids: list[str]
    feats: list[np.ndarray]  # N x (T_i, F) float32
    labels: list[np.ndarray] | np.ndarray  # frame: N x (T_i,) int; clip: (N,) int
    level: Level
    num_classes: int

    def __post_init__(self) -> None:
        if not self.feats:
            raise TrainingError("no utterances to train or evaluate on (empty split)")

    def __len__(self) -> int:
        return len(self.feats)

    @property
    def lengths(self) -> np.ndarray:
        return np.array([len(feat) for feat in self.feats], dtype=np.int64)

    @property
    def num_features(self) -> int:
        return int(self.feats[0].shape[1])

    def batch(self, index: Sequence[int] | np.ndarray) -> Batch:
        index = np.asarray(index)
        x, lengths = pad_features([self.feats[utt] for utt in index])
        if self.level == "frame":
            y = pad_labels([self.labels[utt] for utt in index])
        else:
            y = torch.as_tensor(np.asarray(self.labels)[index], dtype=torch.int64)
        return Batch(x, lengths, y, index)

    @classmethod
    def from_store(
        cls, store: FeatureStore, split: str, view: ViewConfig | None = None
    ) -> LabelledData:
        """Load ``split`` (a name or a subset such as ``train[:10%]``) of a feature store,
        CMVN applied as the store's config says.

        With ``view``, each utterance is cut to its crop window after CMVN (the windows
        ``teach`` cuts for the same ids: ``kdpipe.corpus.views.crop_windows``), frame
        labels likewise; clip labels are unchanged. ``ConfigError`` names an utterance
        shorter than the window.
        """
        indices = store.indices(split)
        ids = [store.ids[index] for index in indices]
        windows = None
        if view is not None:  # before reading: a too-short utterance fails fast
            frames = store.num_frames[indices]
            windows = crop_windows(view, ids, frames, store.config.frame_shift_ms)
        feats, labels = store.load_split(split)
        if windows is not None:
            crops = [slice(int(start), int(stop)) for start, stop in windows]
            # N x (T_view, F)
            feats = [feat[crop].copy() for feat, crop in zip(feats, crops, strict=True)]
            if store.level == FRAME:
                labels = [frame[crop].copy() for frame, crop in zip(labels, crops, strict=True)]
        return cls(ids, feats, labels, store.level, len(store.labels))
