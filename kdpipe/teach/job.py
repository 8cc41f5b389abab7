"""What a teach run will do, decided before any inference: the utterances, their views,
the store metadata, and a batch plan that every shard and every resumed run shares.

Batches are planned over the whole selection, independently of the shard and of what is
already in the store: consecutive runs of utterances (store order, at most
``WINDOW_FRAMES`` frames each, so one slice of the feature store feeds them) are split into
length-bucketed batches. Shard i of N takes batches i, i + N, ... A resumed run recomputes
the same plan and skips batches that are fully committed, so every utterance is always
computed in the same padded batch: resumed and sharded stores hold identical values.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from kdpipe.batching import bucket_batches
from kdpipe.corpus.featstore import FeatureStore
from kdpipe.corpus.manifest import TRANSCRIBED
from kdpipe.errors import ConfigError, CorpusError
from kdpipe.schema import fingerprint, to_dict
from kdpipe.store.spec import StoreMeta, Teacher
from kdpipe.teach.ensemble import Member, Plan
from kdpipe.teach.ensemble_yaml import EnsembleConfig

WINDOW_FRAMES = 1 << 18  # input frames read in one slice: 40 MB of 40-dim float32


@dataclass(frozen=True)
class Selection:
    """Which utterances to label: feature-store indices in store order, and how named."""

    index: np.ndarray  # (N,) int64, increasing
    what: dict[str, Any]  # recorded in the store: {"split": name} or {"ids": n, ...}


def select(store: FeatureStore, split: str | None, ids: list[str] | None) -> Selection:
    """A split (``train``), a list of utterance ids, or (both None) the whole corpus."""
    if split is not None and ids is not None:
        raise ConfigError("select utterances by a split or by ids, not both")
    if ids is not None:
        if not ids:
            raise CorpusError("no utterance ids given")
        index = np.unique(np.array([store.index_of(utt_id) for utt_id in ids], dtype=np.int64))
        if len(index) != len(ids):
            raise CorpusError("the utterance id list has duplicates")
        what = {"ids": len(index), "ids_fingerprint": fingerprint(sorted(ids))}
        return Selection(index, what)
    if split is None:
        return Selection(store.indices(None), {"split": None})
    return Selection(store.indices(split), {"split": split})


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"i/N"`` (or None: from torchrun's RANK/WORLD_SIZE, else 0/1) -> (i, N)."""
    env_world = int(os.environ.get("WORLD_SIZE", "1"))
    if text is None:
        if env_world > 1:
            return int(os.environ.get("RANK", "0")), env_world
        return 0, 1
    if env_world > 1:
        raise ConfigError("--shard cannot be combined with torchrun (it shards by rank)")
    rank_text, sep, world_text = text.partition("/")
    try:
        rank, world = int(rank_text), int(world_text)
    except ValueError:
        raise ConfigError(f"--shard must be i/N (e.g. 0/4), got {text!r}") from None
    if not sep or world < 1 or not 0 <= rank < world:
        raise ConfigError(f"--shard must be i/N with 0 <= i < N, got {text!r}")
    return rank, world


def plan_batches(
    index: np.ndarray, lengths: np.ndarray, batch_frames: int, window_frames: int = WINDOW_FRAMES
) -> list[tuple[int, np.ndarray]]:
    """(window number, batch of feature-store indices) pairs (see the module docstring);
    ``lengths`` are the input frames the teacher sees, aligned with ``index``."""
    if batch_frames < 1:
        raise ConfigError(f"batch_frames must be >= 1, got {batch_frames}")
    plan: list[tuple[int, np.ndarray]] = []
    start, window = 0, 0
    frames_before = np.concatenate([[0], np.cumsum(lengths)])  # (N + 1,)
    while start < len(index):
        limit = frames_before[start] + window_frames
        stop = int(np.searchsorted(frames_before, limit, side="right")) - 1
        stop = max(stop, start + 1)
        for batch in bucket_batches(lengths[start:stop], batch_frames):
            plan.append((window, index[start:stop][batch]))
        start, window = stop, window + 1
    return plan


def store_meta(
    ens: EnsembleConfig, plan: Plan, store: FeatureStore, selection: Selection
) -> StoreMeta:
    """The target store's metadata: everything ``learn`` must agree with (fingerprinted)."""
    level, subsampling = plan.level, plan.subsampling
    # a CTC ensemble's labels are tokens: the corpus' frame labels are not in their space
    has_hard = store.task != TRANSCRIBED and store.level == level and plan.ctc is None
    teach = {
        "combine": ens.combine_name,
        "members": [_member_record(member) for member in plan.members],
        "view": None if ens.view is None else ens.to_dict()["view"],
        "seed": ens.seed,
        "selection": selection.what,
        "feature_cmvn": store.config.cmvn,
        **({"precision": ens.precision} if ens.precision != "fp32" else {}),  # older stores: fp32
    }
    return StoreMeta(
        labels=plan.labels.names,
        rule=ens.rule,
        levels=(level,),
        values=ens.values,
        hard_labels=(level,) if has_hard and ens.hard_labels else (),
        members=tuple(member.name for member in plan.members) if ens.keep_members else (),
        teachers=tuple(
            Teacher(member.name, member.declared.weights_sha256, member.declared.card)
            for member in plan.members
        ),
        combine=ens.combine_name,
        frame_shift_ms=store.config.frame_shift_ms * subsampling,
        subsampling=subsampling,
        features={"fingerprint": store.feature_fingerprint, "config": store.config.to_dict()},
        corpus_fingerprint=store.fingerprint,
        extra={"teach": teach, **({"ctc": plan.ctc} if plan.ctc is not None else {})},
    )


def _member_record(member: Member) -> dict[str, Any]:
    """How a member went in (``extra.teach.members``); the keys of outside kinds and
    inputs only where set, so a checkpoint member's record is what it always was."""
    config = member.config
    record: dict[str, Any] = {
        "name": member.name,
        "weight": config.weight,
        "temperature": config.temperature,
        "label_map": config.label_map,
        "frame_rate": config.frame_rate,
        "subsampling": member.declared.subsampling,
    }
    if config.kind != "checkpoint":
        record.update(kind=config.kind, output=member.declared.output, shift=member.shift)
    if not config.input.is_default:
        record["input"] = to_dict(config.input)
    return record
