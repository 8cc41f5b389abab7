"""The target store: teacher targets ("essence") in a Zarr v3 hierarchy (docs/store-format.md).

Public names are imported lazily (``from kdpipe.store import StoreReader``) so that importing
one submodule does not import them all.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "StoreMeta": "kdpipe.store.spec",
    "Teacher": "kdpipe.store.spec",
    "FORMAT": "kdpipe.store.spec",
    "VERSION": "kdpipe.store.spec",
    "SparseRows": "kdpipe.sparse",
    "TargetBlock": "kdpipe.store.block",
    "StoreWriter": "kdpipe.store.writer",
    "StoreReader": "kdpipe.store.reader",
    "verify_store": "kdpipe.store.verify",
    "VerifyReport": "kdpipe.store.verify",
    "copy_store": "kdpipe.store.transfer",
    "diff_stores": "kdpipe.store.diff",
    "seal": "kdpipe.store.parts",
    "utterance_table": "kdpipe.store.tables",
    "frame_table": "kdpipe.store.tables",
    "summarize": "kdpipe.store.summary",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'kdpipe.store' has no attribute {name!r}")
