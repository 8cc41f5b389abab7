"""What a command may write over: the one check every command that creates an artefact runs.

``claim_output(out, makes=..., inputs=...)`` runs before anything is created or removed:

- ``out`` must not be one of the command's inputs, lie inside one, or hold one (two paths
  are compared resolved, symlinks included; fsspec URLs as normalised ``scheme://bucket/key``
  prefixes), so that ``--overwrite`` never deletes what the command is about to read;
- ``out`` must be missing, an empty folder, or an artefact of the kind the command makes
  (recognised by its metadata, ``kind_of``): ``--overwrite`` replaces a target store with
  a target store, never a feature store, a checkpoint folder or a file.

Light: no zarr, no torch (a local ``zarr.json`` is read as JSON; a URL through fsspec).
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from kdpipe.errors import ConfigError, KdpipeError

TARGET_STORE = "target store"
FEATURE_STORE = "feature store"
CHECKPOINT = "checkpoint folder"
MISSING, EMPTY = "missing", "empty folder"
INCOMPLETE = "zarr group without attributes"  # a feature store whose writer died (format last)
CHECKPOINT_FILES = ("card.json", "run.json", "last.pt")  # models.card, learn.session/trainer
_ROOT_ATTR, _FEATURES_FORMAT = "kdpipe.store", "kdpipe.features"  # store.spec, corpus.featstore


def _is_url(location: str) -> bool:
    return "://" in location and not location.startswith("file://")


def normalise(location: str | Path) -> tuple[str, str]:
    """(scheme, path): a local path resolved (symlinks followed), a URL's bucket/key with
    duplicate slashes and ``.``/``..`` segments collapsed."""
    s = str(location)
    if _is_url(s):
        scheme, _, rest = s.partition("://")
        path = posixpath.normpath("/" + rest.split("?", 1)[0]).lstrip("/")
        return scheme.lower(), path.rstrip("/")
    return "file", str(Path(s.removeprefix("file://")).expanduser().resolve())


def _within(inner: tuple[str, str], outer: tuple[str, str]) -> bool:
    """``inner`` is ``outer`` or lies below it."""
    return inner[0] == outer[0] and (
        inner[1] == outer[1] or inner[1].startswith(outer[1].rstrip("/") + "/")
    )


def overlap(a: str | Path, b: str | Path) -> str | None:
    """How ``a`` and ``b`` overlap: ``"is"``, ``"lies inside"``, ``"holds"``, or None."""
    na, nb = normalise(a), normalise(b)
    if na == nb:
        return "is"
    if _within(na, nb):
        return "lies inside"
    if _within(nb, na):
        return "holds"
    return None


def _zarr_kind(doc: Any) -> str:
    attrs = (doc.get("attributes") or {}) if isinstance(doc, dict) else {}
    if isinstance(attrs.get(_ROOT_ATTR), dict):
        return TARGET_STORE
    if attrs.get("format") == _FEATURES_FORMAT:
        return FEATURE_STORE
    if isinstance(doc, dict) and not attrs:
        return INCOMPLETE
    return "zarr store not made by kdpipe"


def kind_of(location: str | Path, storage_options: dict[str, Any] | None = None) -> str:
    """What ``location`` holds: ``MISSING``, ``EMPTY``, ``TARGET_STORE``, ``FEATURE_STORE``,
    ``CHECKPOINT`` (a folder with a card or a training run), or a description of anything
    else (a file, a folder of other things, a foreign zarr store)."""
    s = str(location)
    if _is_url(s):
        return _url_kind(s, storage_options)
    p = Path(s.removeprefix("file://")).expanduser()
    if not p.exists():
        return "a broken symlink" if p.is_symlink() else MISSING
    if not p.is_dir():
        return "a file"
    if (p / "zarr.json").is_file():
        try:
            doc = json.loads((p / "zarr.json").read_bytes())
        except (OSError, ValueError):
            doc = None
        return _zarr_kind(doc)
    if any((p / name).is_file() for name in CHECKPOINT_FILES):
        return CHECKPOINT
    try:
        empty = next(p.iterdir(), None) is None
    except OSError as e:
        raise ConfigError(f"{p}: cannot list: {e.strerror or e}") from None
    return EMPTY if empty else "a folder of other files"


def _url_kind(url: str, storage_options: dict[str, Any] | None) -> str:
    from fsspec.core import url_to_fs  # fsspec comes with zarr; only URLs need it

    try:
        fs, root = url_to_fs(url, **(storage_options or {}))
        root = root.rstrip("/")
        try:
            doc = json.loads(fs.cat_file(f"{root}/zarr.json"))
            return _zarr_kind(doc)
        except FileNotFoundError:
            pass
        if any(fs.exists(f"{root}/{name}") for name in CHECKPOINT_FILES):
            return CHECKPOINT
        try:
            return EMPTY if not fs.ls(root) else "a prefix of other objects"
        except FileNotFoundError:
            return MISSING
    except (OSError, ValueError) as e:  # unreachable, refused: the command reports it itself
        return f"unknown ({type(e).__name__})"


def refuse_inputs(
    out: str | Path,
    inputs: Iterable[str | Path | None],
    makes: str,
    error: type[KdpipeError] = ConfigError,
) -> None:
    """``error`` if ``out`` is one of ``inputs``, lies inside one or holds one: what a
    command reads is never what it writes, deletes or fills (``None``/empty are skipped)."""
    for given in inputs:
        if given is None or str(given) == "":
            continue
        how = overlap(out, given)
        if how is not None:
            raise error(
                f"{out}: the output {how} the input {given} of this command; write the "
                f"{makes} elsewhere"
            )


def claim_output(
    out: str | Path,
    *,
    makes: str,
    inputs: Iterable[str | Path | None] = (),
    overwrite: bool = False,
    storage_options: dict[str, Any] | None = None,
) -> str:
    """Refuse ``out`` unless the command making a ``makes`` may write there (see the module
    docstring); returns what is there now (``kind_of``). Creates and removes nothing."""
    refuse_inputs(out, inputs, makes)
    local = None if _is_url(str(out)) else Path(str(out).removeprefix("file://")).expanduser()
    if overwrite and local is not None and local.is_symlink() and local.exists():
        raise ConfigError(
            f"{out} is a symbolic link (to {local.resolve()}); --overwrite does not delete "
            "through links: remove the link or choose another path"
        )
    found = kind_of(out, storage_options)
    if found in (MISSING, EMPTY, makes) or found.startswith("unknown"):
        return found
    if found == INCOMPLETE and makes == FEATURE_STORE:  # what a killed prepare leaves
        return found
    refusal = "--overwrite replaces only a " + makes if overwrite else f"not a {makes}"
    raise ConfigError(
        f"{out} holds {_article(found)}; {refusal}: remove it yourself or choose another path"
    )


def _article(kind: str) -> str:
    return kind if kind.startswith(("a ", "an ")) else f"a {kind}"
