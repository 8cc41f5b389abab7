"""The target store: teacher targets ("essence") in a Zarr v3 hierarchy (docs/store-format.md).

Public names are imported lazily (``from kdpipe.store import StoreReader``) so that importing
one submodule does not import them all.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "StoreMeta": "spec",
    "Teacher": "spec",
    "FORMAT": "spec",
    "VERSION": "spec",
    "SparseRows": "rows",
    "TargetBlock": "block",
    "StoreWriter": "writer",
    "StoreReader": "reader",
    "verify_store": "verify",
    "VerifyReport": "checks",
    "copy_store": "copy",
    "diff_stores": "diff",
    "seal": "parts",
    "utterance_table": "views",
    "frame_table": "views",
    "summarize": "inspect",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"kdpipe.store.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'kdpipe.store' has no attribute {name!r}")
