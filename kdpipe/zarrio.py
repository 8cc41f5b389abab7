"""Zarr v3 access shared by the feature store and the target store.

The one place that constructs zarr stores: ``open_store`` decides local path vs fsspec URL
(``s3://``, ``http(s)://``, ...) and read-only vs writable, with the checks both stores
need; ``open_group`` opens a group on it.

Neither store uses object or variable-length string dtypes: a column of strings is a
uint8 array of UTF-8 bytes plus an int64 offsets array, readable with plain zarr + numpy::

    raw = group["ids/utf8"][:]; off = group["ids/offsets"][:]
    ids = [bytes(raw[off[i]:off[i + 1]]).decode() for i in range(len(off) - 1)]
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from kdpipe.errors import StoreError, StoreIntegrityError

if TYPE_CHECKING:
    import zarr

Mode = Literal["r", "r+", "a", "w", "w-"]  # zarr's open modes


def is_url(location: str | Path) -> bool:
    """True for ``scheme://...`` locations other than ``file://``."""
    s = str(location)
    return "://" in s and not s.startswith("file://")


def scheme(location: str | Path) -> str:
    s = str(location)
    return s.split("://", 1)[0].lower() if is_url(s) else "file"


def can_list(location: str | Path) -> bool:
    """HTTP(S) cannot list a prefix: such stores are read through their manifest."""
    return scheme(location) not in ("http", "https")


def open_store(
    location: str | Path,
    mode: str,
    storage_options: dict[str, Any] | None,
    *,
    must_exist: bool = True,
) -> Any:
    """A zarr Store at ``location``: read-only for mode ``r`` (and over HTTP, which cannot
    be written: ``StoreError`` for another mode); a local read-only store must exist unless
    ``must_exist`` is False."""
    from zarr.storage import FsspecStore, LocalStore

    read_only = mode == "r" or scheme(location) in ("http", "https")
    if read_only and mode != "r":
        raise StoreError(f"{location}: cannot write a store over {scheme(location)}://")
    try:
        if is_url(location):
            return FsspecStore.from_url(
                str(location), read_only=read_only, storage_options=storage_options or {}
            )
        path = Path(str(location).removeprefix("file://"))
        if read_only and must_exist and not path.is_dir():
            raise StoreError(f"store not found: {location}")
        return LocalStore(path, read_only=read_only)
    except (ImportError, ValueError) as e:
        raise StoreError(f"{location}: cannot open: {e}") from None


def open_group(
    location: str | Path,
    mode: Mode = "r",
    storage_options: dict[str, Any] | None = None,
) -> zarr.Group:
    """Open a Zarr v3 group at a local path or any fsspec URL (``s3://``, ``http://``...).

    ``mode`` is zarr's: ``r`` read-only, ``r+`` read-write existing, ``a`` create if missing,
    ``w`` create (overwriting), ``w-`` create (fail if present). Opening an existing group
    whose ``zarr.json`` is damaged (not JSON, not an object, not group metadata) raises
    ``StoreIntegrityError`` naming it; a missing one zarr's ``FileNotFoundError``.
    """
    import zarr

    store = open_store(location, "r" if mode == "r" else "a", storage_options, must_exist=False)
    try:
        return zarr.open_group(store=store, mode=mode, zarr_format=3)
    except FileNotFoundError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        if mode not in ("r", "r+"):  # creating: zarr's own refusals (ContainsGroupError...)
            raise
        msg = str(error).splitlines()[0][:200] if str(error) else ""
        raise StoreIntegrityError(
            f"{location}: zarr.json is not Zarr v3 group metadata (damaged?): "
            f"{type(error).__name__}{': ' + msg if msg else ''}"
        ) from None
