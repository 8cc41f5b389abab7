"""``kdpipe teach``: run a teacher or an ensemble over a corpus once, into a target store.

- ``ensemble_yaml``: the ensemble.yaml schema (docs/ensemble-yaml.md) as frozen dataclasses;
- ``ensemble``: members, label maps, frame-rate conversion, combination (torch);
- ``members``: the member kinds (checkpoint, module, torchscript, onnx, huggingface) and
  their inputs (the corpus' features, another feature store, the waveform);
- crop windows (``ViewConfig``) and per-utterance seeded generators: ``kdpipe.corpus.views``;
- ``job``: the selection, the store metadata and the shard-independent batch plan;
- ``run``: ``teach(...)``, the inference loop with its background writer thread.

Importing this package imports neither torch nor zarr.
"""

from __future__ import annotations

from typing import Any

from kdpipe.corpus.views import ViewConfig
from kdpipe.teach.ensemble_yaml import (
    EnsembleConfig,
    InputConfig,
    MemberConfig,
    load_ensemble,
    rule_from_flags,
    single_teacher,
)

__all__ = [
    "EnsembleConfig",
    "InputConfig",
    "MemberConfig",
    "TeachSummary",
    "ViewConfig",
    "load_ensemble",
    "rule_from_flags",
    "single_teacher",
    "teach",
]


def __getattr__(name: str) -> Any:
    if name in ("teach", "TeachSummary"):
        # run imports torch; this package must not (pipeline and the CLI import it for
        # ensemble_yaml), so teach and TeachSummary load on first use
        from kdpipe.teach import run

        return getattr(run, name)
    raise AttributeError(f"module 'kdpipe.teach' has no attribute {name!r}")
