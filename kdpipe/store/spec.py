"""Target store format 3 (reads 1 and 2 too): names, encodings, codecs and the metadata record.

docs/store-format.md is the normative description; this module and ``coding`` (codecs, the
row-delta transform) are its executable form and the two must agree
(tests/store/test_spec_plain_zarr.py reads a store with zarr + numpy only).
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import re
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from kdpipe import __version__
from kdpipe.errors import ConfigError, StoreFormatError
from kdpipe.essence import Rule
from kdpipe.labels import LabelSet
from kdpipe.schema import fingerprint as _fingerprint
from kdpipe.schema import from_dict
from kdpipe.store.coding import CODE_LEVELS, LOGP_MIN, NO_TRANSFORM, TRANSFORMS, values_transform

FORMAT = "kdpipe.store"
VERSION = 3  # what this kdpipe writes (3: per-utterance teacher quality; see the spec)
READ_VERSIONS = (1, 2, 3)  # what it reads: 1 stores values as plain codes, 1-2 no quality
QUALITY = ("entropy", "agreement")  # per-utterance teacher quality columns (format 3)
ROOT_ATTR = "kdpipe.store"  # root zarr.json attribute: the store record
PART_ATTR = "kdpipe.part"  # parts/<id>/zarr.json attribute: the commit record
MANIFEST_ATTR = "kdpipe.manifest"  # parts/zarr.json attribute: commit records of a sealed store
COMMITS = "commits"  # group of the commit log: commits/<part id>/zarr.json per committed part
COMMIT_ATTR = "kdpipe.commit"  # commits/<id>/zarr.json attribute: the part's counts
COMMIT_LOG_KEY = "commit_log"  # root record key: True where the store was made with a log
LOCKS = "locks"  # group of writer locks: locks/<shard>/zarr.json while a writer runs
LOCK_ATTR = "kdpipe.lock"  # locks/<shard>/zarr.json attribute: who holds it (host, pid)
LEVELS = ("frame", "utt")
VALUE_ENCODINGS = ("uint8", "float16")
CHUNK_ROWS = 131072  # rows per chunk: 2 MB of uint16 indices at k=8; bigger compress better
PART_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
HARD_NONE_DOC = "the largest value of the hard-label dtype means 'no label'"


def smallest_uint(max_value: int) -> np.dtype:
    """The smallest unsigned dtype holding ``max_value``."""
    for dt in (np.uint8, np.uint16, np.uint32):
        if max_value <= np.iinfo(dt).max:
            return np.dtype(dt)
    return np.dtype(np.uint64)


def index_dtype(num_classes: int) -> np.dtype:
    """Class indices 0..C-1: uint8 up to 256 classes, uint16 up to 65536, else uint32."""
    return smallest_uint(num_classes - 1)


def hard_dtype(num_classes: int) -> np.dtype:
    """Hard labels 0..C-1 plus the 'no label' sentinel (the dtype's max, always >= C)."""
    return smallest_uint(num_classes)


@dataclass(frozen=True)
class Teacher:
    """A teacher (or ensemble member) whose posteriors went into the store."""

    name: str
    weights_sha256: str = ""  # sha256 of the weights file: names the exact network
    card: dict[str, Any] = field(default_factory=dict)  # model card / config, free-form


@dataclass(frozen=True)
class StoreMeta:
    """What a student must agree with; recorded in the root attributes."""

    labels: tuple[str, ...]
    rule: Rule = field(default_factory=Rule)  # top-k, k=8 (see kdpipe.essence.Rule)
    levels: tuple[str, ...] = ("frame",)  # frame-level targets (ASR); add "utt" for clips
    values: str = "uint8"  # uint8 codes: half the bytes of float16, error <= 0.032 nats
    hard_labels: tuple[str, ...] = ()  # levels that also carry hard labels (alignments)
    members: tuple[str, ...] = ()  # ensemble members whose own targets are stored too
    teachers: tuple[Teacher, ...] = ()  # provenance: cards and weight hashes
    combine: str = "single"  # how member posteriors were combined (e.g. mean-prob)
    frame_shift_ms: float = 10.0  # teacher output frame shift (input shift x subsampling)
    subsampling: int = 1  # teacher output frames per input frame
    features: dict[str, Any] = field(default_factory=dict)  # {"fingerprint", "config"}
    corpus_fingerprint: str = ""  # the corpus the targets were computed on
    extra: dict[str, Any] = field(default_factory=dict)  # anything else worth keeping

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "labels", tuple(self.labels))
        LabelSet(self.labels)  # validates
        if isinstance(self.rule, dict):
            set_(self, "rule", Rule.from_dict(self.rule))
        for name in ("levels", "hard_labels", "members"):
            set_(self, name, tuple(getattr(self, name)))
        set_(
            self,
            "teachers",
            tuple(
                from_dict(Teacher, t, "teacher") if isinstance(t, dict) else t
                for t in self.teachers
            ),
        )
        if not self.levels or len(set(self.levels)) != len(self.levels):
            raise ConfigError(f"store levels must be distinct and non-empty: {self.levels}")
        if not set(self.levels) <= set(LEVELS) or not set(self.hard_labels) <= set(self.levels):
            raise ConfigError(f"store levels must be among {LEVELS} (hard labels among levels)")
        if self.values not in VALUE_ENCODINGS:
            raise ConfigError(f"store values must be one of {VALUE_ENCODINGS}: {self.values!r}")
        if self.subsampling < 1 or self.frame_shift_ms <= 0:
            raise ConfigError("store subsampling must be >= 1 and frame_shift_ms > 0")
        if self.rule.layout == "fixed" and self.rule.params["k"] > len(self.labels):
            raise ConfigError(f"topk k={self.rule.params['k']} > {len(self.labels)} labels")
        if len(set(self.members)) != len(self.members):
            raise ConfigError(f"duplicate ensemble member names: {self.members}")

    @property
    def label_set(self) -> LabelSet:
        return LabelSet(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def to_dict(self) -> dict[str, Any]:
        """As ``kdpipe.schema.to_dict`` (tuples become lists), via one JSON round trip: the
        label set and the teacher cards hold thousands of items; this runs on every open."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["rule"] = self.rule.to_dict()
        d["teachers"] = [{f.name: getattr(t, f.name) for f in fields(t)} for t in self.teachers]
        return json.loads(json.dumps(d))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StoreMeta:
        return from_dict(cls, data, "store metadata")

    @functools.cached_property
    def fingerprint(self) -> str:
        """Identity of the targets: equal metadata, interchangeable parts."""
        return _fingerprint(self.to_dict())

    def encoding(self, version: int = VERSION) -> dict[str, Any]:
        """The derived on-disk encoding of format ``version``, recorded so that plain
        readers need no logic; format 2 adds the values' ``transform``."""
        tail: dict[str, Any] = {"dtype": self.values}
        if self.values == "uint8":
            tail["codebook"] = {
                "kind": "log-linear",
                "min": LOGP_MIN,
                "max": 0.0,
                "levels": CODE_LEVELS,
                "zero_code": 0,
            }
        values = dict(tail)
        if version >= 2:
            values["transform"] = values_transform(self.rule.layout, self.values)
        return {
            "layout": self.rule.layout,
            "width": self.rule.width(self.num_classes),
            "index_dtype": index_dtype(self.num_classes).name,
            "hard_dtype": hard_dtype(self.num_classes).name,
            "values": values,
            "tail": tail,
        }


def root_record(meta: StoreMeta) -> dict[str, Any]:
    """The root attribute ``kdpipe.store``."""
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "format": FORMAT,
        "version": VERSION,
        "kdpipe_version": __version__,
        "created_at": now,
        "fingerprint": meta.fingerprint,
        "meta": meta.to_dict(),
        "encoding": meta.encoding(),
    }


def parse_root(attrs: dict[str, Any], where: str) -> tuple[StoreMeta, dict[str, Any]]:
    """Check a root attribute record and return (metadata, record)."""
    rec = attrs.get(ROOT_ATTR)
    if not isinstance(rec, dict) or rec.get("format") != FORMAT:
        raise StoreFormatError(f"{where}: not a kdpipe target store (no {ROOT_ATTR!r} record)")
    version = rec.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise StoreFormatError(f"{where}: bad format version {version!r}")
    if version not in READ_VERSIONS:
        raise StoreFormatError(
            f"{where}: written in {FORMAT} format version {version} (kdpipe "
            f"{rec.get('kdpipe_version', '?')}); this kdpipe {__version__} reads versions "
            f"{', '.join(map(str, READ_VERSIONS))} only: upgrade kdpipe"
        )
    try:
        meta = StoreMeta.from_dict(rec["meta"])
    except (ConfigError, KeyError, TypeError) as e:
        raise StoreFormatError(f"{where}: malformed store metadata: {e}") from None
    enc = rec.get("encoding")
    transform = (enc.get("values") or {}).get("transform") if isinstance(enc, dict) else None
    if transform is not None and transform not in TRANSFORMS:
        raise StoreFormatError(
            f"{where}: values stored with transform {transform!r}, which this kdpipe "
            f"{__version__} does not know ({', '.join(TRANSFORMS)}): upgrade kdpipe"
        )
    if enc != _jsonable(meta.encoding(version)):
        raise StoreFormatError(
            f"{where}: recorded encoding disagrees with the metadata (format version {version})"
        )
    if rec.get("fingerprint") != meta.fingerprint:
        raise StoreFormatError(f"{where}: recorded fingerprint disagrees with the metadata")
    return meta, rec


def stored_transform(rec: dict[str, Any]) -> str:
    """The transform of the values arrays of a store, from its root record (format 1
    records none)."""
    return rec["encoding"]["values"].get("transform", NO_TRANSFORM)


def _jsonable(x: Any) -> Any:
    """``x`` as it comes back from JSON (tuples become lists)."""
    return json.loads(json.dumps(x))


def expected_arrays(meta: StoreMeta, version: int = VERSION) -> dict[str, tuple[str, int | None]]:
    """Array path within a part -> (dtype, width): width is the 2nd dim, None for 1-D;
    the arrays of format ``version`` (3 adds ``index/quality/*``)."""
    enc = meta.encoding()
    idx, val, hard = enc["index_dtype"], meta.values, enc["hard_dtype"]
    out: dict[str, tuple[str, int | None]] = {
        "index/ids/utf8": ("uint8", None),
        "index/ids/offsets": ("int64", None),
        "index/frame_offsets": ("int64", None),
        "index/subsampling": ("uint16", None),
        "index/frame_shift_ms": ("float32", None),
        "index/input_window": ("int64", 2),
    }
    if version >= 3:
        out.update({f"index/quality/{name}": ("float32", None) for name in QUALITY})
    sources = [""] + [f"members/{j}/" for j in range(len(meta.members))]
    for src in sources:
        for level in meta.levels:
            base = f"{src}{level}/"
            width = enc["width"]
            if enc["layout"] == "variable":
                out[base + "row_offsets"] = ("int64", None)
            if enc["layout"] != "dense":
                out[base + "indices"] = (idx, width)
            out[base + "values"] = (val, width)
            out[base + "tail"] = (val, None)
            if not src and level in meta.hard_labels:
                out[base + "hard"] = (hard, None)
    return out
