"""Small Zarr v3 helpers shared by the feature store and the target store.

Neither store uses object or variable-length string dtypes: a column of strings is a
uint8 array of UTF-8 bytes plus an int64 offsets array, readable with plain zarr + numpy::

    raw = group["ids/utf8"][:]; off = group["ids/offsets"][:]
    ids = [bytes(raw[off[i]:off[i + 1]]).decode() for i in range(len(off) - 1)]
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import zarr


def is_url(location: str | Path) -> bool:
    """True for ``scheme://...`` locations other than ``file://``."""
    s = str(location)
    return "://" in s and not s.startswith("file://")


def open_group(
    location: str | Path,
    mode: str = "r",
    storage_options: dict[str, Any] | None = None,
) -> zarr.Group:
    """Open a Zarr v3 group at a local path or any fsspec URL (``s3://``, ``http://``...).

    ``mode`` is zarr's: ``r`` read-only, ``r+`` read-write existing, ``a`` create if missing,
    ``w`` create (overwriting), ``w-`` create (fail if present).
    """
    import zarr
    from zarr.storage import FsspecStore, LocalStore

    read_only = mode == "r"
    if is_url(location):
        store = FsspecStore.from_url(
            str(location), read_only=read_only, storage_options=storage_options or {}
        )
    else:
        path = str(location).removeprefix("file://")
        store = LocalStore(path, read_only=read_only)
    return zarr.open_group(store=store, mode=mode, zarr_format=3)


def write_strings(group: zarr.Group, name: str, values: Sequence[str]) -> None:
    """Write ``values`` as ``name/utf8`` (uint8) and ``name/offsets`` (int64, len N+1)."""
    import numpy as np

    encoded = [v.encode("utf-8") for v in values]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    if encoded:
        offsets[1:] = np.cumsum([len(b) for b in encoded])
    raw = np.frombuffer(b"".join(encoded), dtype=np.uint8)
    sub = group.require_group(name)
    sub.create_array("utf8", data=raw, chunks=(max(1, min(len(raw), 1 << 20)),), overwrite=True)
    sub.create_array(
        "offsets", data=offsets, chunks=(max(1, min(len(offsets), 1 << 18)),), overwrite=True
    )


def read_strings(group: zarr.Group, name: str) -> list[str]:
    """Read a string column written by ``write_strings``."""
    sub = group[name]
    raw = sub["utf8"][:].tobytes()
    off = sub["offsets"][:]
    return [raw[off[i] : off[i + 1]].decode("utf-8") for i in range(len(off) - 1)]
