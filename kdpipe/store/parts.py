"""Parts and their commit records: which parts a reader sees, and sealing a store.

A part is visible once its group's ``kdpipe.part`` attribute (the commit record) exists;
the record is written last, so a part without one is an interrupted writer's leftover and
is ignored. ``seal`` copies every commit record into the ``parts`` group's ``kdpipe.manifest``
attribute, so that stores served over HTTP (which cannot list) can be read, and so that
opening any store costs one request instead of one per part.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdpipe import zarrio
from kdpipe.errors import StoreError, StoreFormatError, StoreIntegrityError
from kdpipe.store import arrayio, spec


@dataclass(frozen=True)
class PartInfo:
    """A committed part: its id and commit record."""

    id: str
    record: dict[str, Any]

    @property
    def num_utterances(self) -> int:
        return int(self.record["num_utterances"])

    @property
    def num_frames(self) -> int:
        return int(self.record["num_frames"])

    @property
    def arrays(self) -> dict[str, dict[str, Any]]:
        return self.record["arrays"]


@dataclass(frozen=True)
class PartScan:
    """What ``scan`` found: committed parts (sorted by id) and uncommitted part ids."""

    parts: list[PartInfo]
    uncommitted: list[str]
    sealed: bool


def check_record(
    pid: str, rec: Any, meta: spec.StoreMeta, where: str, version: int = spec.VERSION
) -> PartInfo:
    """Validate a commit record against the store metadata of format ``version`` (no I/O)."""
    at = f"{where}: part {pid}"
    keys = ("part", "fingerprint", "num_utterances", "num_frames", "arrays")
    if not isinstance(rec, dict) or any(k not in rec for k in keys):
        raise StoreFormatError(f"{at}: malformed commit record")
    if rec["part"] != pid:
        raise StoreIntegrityError(f"{at}: commit record names part {rec['part']!r}")
    if rec["fingerprint"] != meta.fingerprint:
        raise StoreIntegrityError(
            f"{at}: written for other store metadata (fingerprint {rec['fingerprint']} vs "
            f"{meta.fingerprint})"
        )
    expected = spec.expected_arrays(meta, version)
    got = rec["arrays"]
    if not isinstance(got, dict) or set(got) != set(expected):
        missing = sorted(set(expected) - set(got or {}))
        extra = sorted(set(got or {}) - set(expected))
        raise StoreIntegrityError(
            f"{at}: arrays differ from the spec: missing {missing}, unexpected {extra}"
        )
    for path, (dtype, width) in expected.items():
        a = got[path]
        shape = a.get("shape") if isinstance(a, dict) else None
        if (
            not isinstance(shape, list)
            or a.get("dtype") != dtype
            or len(shape) != (1 if width is None else 2)
            or (width is not None and shape[1] != width)
            or not isinstance(a.get("sha256"), str)
        ):
            raise StoreIntegrityError(f"{at}: array {path}: dtype/shape {a} breaks the spec")
    return PartInfo(pid, rec)


def scan(
    store: Any,
    location: str | Path,
    meta: spec.StoreMeta,
    errors: list[str] | None = None,
    version: int = spec.VERSION,
) -> PartScan:
    """Find committed parts through the manifest and (where possible) a listing; their
    records are checked against format ``version`` (the store's).

    A bad commit record raises, or with ``errors`` given is reported there and skipped.
    """
    where = str(location)
    parts_doc = arrayio.read_json_many(store, ["parts/zarr.json"])[0]
    if parts_doc is None:
        raise StoreFormatError(f"{where}: no 'parts' group")
    manifest = (parts_doc.get("attributes") or {}).get(spec.MANIFEST_ATTR)
    known: dict[str, Any] = dict((manifest or {}).get("parts", {}))
    uncommitted: list[str] = []
    if zarrio.can_list(location):
        names = [n for n in arrayio.list_dir(store, "parts") if n != "zarr.json"]
        gone = sorted(set(known) - set(names))
        if gone:
            msg = f"{where}: sealed part(s) missing: {', '.join(gone[:5])}"
            if errors is None:
                raise StoreIntegrityError(msg)
            errors.append(msg)
            known = {k: v for k, v in known.items() if k not in gone}
        new = [n for n in names if n not in known]
        docs = arrayio.read_json_many(store, [f"parts/{n}/zarr.json" for n in new])
        for name, doc in zip(new, docs, strict=True):
            rec = None if doc is None else (doc.get("attributes") or {}).get(spec.PART_ATTR)
            if rec is None:
                uncommitted.append(name)
            else:
                known[name] = rec
    elif manifest is None:
        raise StoreError(
            f"{where}: {zarrio.scheme(location)}:// cannot list the parts of a store and this "
            "store is not sealed; run `kdpipe store seal` on its source before serving it"
        )
    parts = []
    for pid in sorted(known):
        try:
            parts.append(check_record(pid, known[pid], meta, where, version))
        except StoreError as e:
            if errors is None:
                raise
            errors.append(str(e))
    return PartScan(parts, sorted(uncommitted), manifest is not None)


def seal(location: str | Path, storage_options: dict[str, Any] | None = None) -> int:
    """Write the manifest of committed parts; returns how many parts it lists.

    Run it when no writer is running (a part committed during ``seal`` is still found by
    listing readers, but not over HTTP until the next seal).
    """
    import zarr

    # look before opening for writing, which would create a missing folder
    found_root = zarrio.open_store(location, "r", storage_options)  # missing: store not found
    if arrayio.read_json_many(found_root, ["zarr.json"])[0] is None:
        raise StoreError(f"no store at {location}: no zarr.json (not a zarr v3 target store)")
    store = zarrio.open_store(location, "r+", storage_options)
    root = zarr.open_group(store, mode="r+", zarr_format=3)
    meta, rec = spec.parse_root(dict(root.attrs), str(location))
    found = scan(store, location, meta, version=rec["version"])
    root["parts"].update_attributes(
        {spec.MANIFEST_ATTR: {"parts": {p.id: p.record for p in found.parts}}}
    )
    return len(found.parts)


# -- the commit log -------------------------------------------------------------------------
# A writer that commits part ``<id>`` then writes ``commits/<id>/zarr.json`` (a group whose
# ``kdpipe.commit`` attribute holds the part's utterance and frame counts): the log outlives
# the part, so a part deleted whole, or one that lost its commit record, is told from one
# never written. Stores written before the log (no ``commits`` group) cannot tell.


def commit_entry(record: dict[str, Any]) -> dict[str, Any]:
    """The log entry of a commit record."""
    keys = ("part", "num_utterances", "num_frames", "committed_at")
    return {k: record[k] for k in keys if k in record}


def log_commit(store: Any, record: dict[str, Any]) -> None:
    """Add a committed part to the log (after its commit; nothing where there is no log)."""
    if arrayio.read_json_many(store, [f"{spec.COMMITS}/zarr.json"])[0] is None:
        return
    group = {
        "zarr_format": 3,
        "node_type": "group",
        "attributes": {spec.COMMIT_ATTR: commit_entry(record)},
    }
    arrayio.put_many(store, {f"{spec.COMMITS}/{record['part']}/zarr.json": _json(group)})


def read_log(
    store: Any, location: str | Path, expected: bool = False
) -> dict[str, dict[str, Any]] | None:
    """The logged commits (part id -> entry), or None where the store keeps no log or
    cannot be listed (HTTP). ``expected`` (the root record says the store was made with
    a log): a missing log is a ``StoreIntegrityError``, not a store without one."""
    if not zarrio.can_list(location):
        return None
    if arrayio.read_json_many(store, [f"{spec.COMMITS}/zarr.json"])[0] is None:
        if expected:
            raise StoreIntegrityError(
                f"{location}: the commit log ({spec.COMMITS}/zarr.json) is missing, though the "
                "store was made with one: parts lost whole cannot be told"
            )
        return None
    names = [n for n in arrayio.list_dir(store, spec.COMMITS) if n != "zarr.json"]
    docs = arrayio.read_json_many(store, [f"{spec.COMMITS}/{n}/zarr.json" for n in names])
    out = {}
    for name, doc in zip(names, docs, strict=True):
        entry = None if doc is None else (doc.get("attributes") or {}).get(spec.COMMIT_ATTR)
        out[name] = entry if isinstance(entry, dict) else {}
    return out


def log_findings(
    log: dict[str, dict[str, Any]], found: PartScan, where: str
) -> tuple[list[str], list[str]]:
    """(errors, warnings) of the commit log against the committed parts found: a logged
    part that is gone or lost its commit record, or whose counts differ, is an error; a
    committed part not logged (its writer stopped between the two writes) a warning."""
    errors, warnings = [], []
    committed = {p.id: p for p in found.parts}
    for pid in sorted(set(log) - set(committed)):
        if pid in found.uncommitted:
            errors.append(f"{where}: part {pid} was committed (commit log) but lost its record")
        else:
            errors.append(f"{where}: part {pid} was committed (commit log) but is missing")
    for pid in sorted(set(log) & set(committed)):
        part, entry = committed[pid], log[pid]
        if not entry:
            errors.append(f"{where}: part {pid}: its commit-log entry is missing or unreadable")
        elif (entry.get("num_utterances"), entry.get("num_frames")) != (
            part.num_utterances,
            part.num_frames,
        ):
            errors.append(f"{where}: part {pid}: commit record and commit log disagree")
    warnings += [
        f"{where}: part {pid} is committed but not in the commit log (its writer stopped "
        "right after the commit)"
        for pid in sorted(set(committed) - set(log))
    ]
    return errors, warnings


def _json(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode()
