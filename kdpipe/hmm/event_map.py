"""Kaldi's event maps and ContextDependency, as Python data in Kaldi's own forms.

A decision tree (Kaldi's ``ContextDependency``) maps an *event* (the phone window around a
frame and its pdf class) to a pdf id through an event map: ``Constant`` (Kaldi's
ConstantEventMap: an answer), ``Table`` (TableEventMap: one sub-map per value of a key) and
``Split`` (SplitEventMap: a yes/no question on a key). ``KaldiTree`` writes and reads
Kaldi's binary and text serialisations; ``context_dependency`` hands a tree to
kaldi-hmm-gmm through ``__setstate__`` (the bindings' pickle state is Kaldi's binary
``ContextDependency::Write``, nothing is unpickled), ``kaldi_binary`` takes one back.
``kdpipe.hmm.tree`` builds trees in these terms.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeAlias

import kaldi_hmm_gmm as khg
import numpy as np

from kdpipe.errors import ConfigError, ModelError

PDF_CLASS = -1  # Kaldi's kPdfClass: the key of the HMM state's pdf class in an event
_INT32, _UINT32 = b"\x04", b"\xfc"  # Kaldi's binary size byte: 4, signed; -4, unsigned


@dataclass(frozen=True)
class Constant:
    """Kaldi's ConstantEventMap (``CE``): every event gets ``answer``, a pdf id."""

    answer: int

    def to_kaldi_binary(self) -> bytes:
        return _to_bytes(self)

    def to_kaldi_text(self) -> str:
        return _to_text(self)


@dataclass(frozen=True)
class Table:
    """Kaldi's TableEventMap (``TE``): the event's value for ``key`` picks an entry; ``None``
    (Kaldi's ``NULL``), a value past the end or a missing key: not found."""

    key: int
    entries: tuple[EventMap | None, ...]

    def to_kaldi_binary(self) -> bytes:
        return _to_bytes(self)

    def to_kaldi_text(self) -> str:
        return _to_text(self)


@dataclass(frozen=True)
class Split:
    """Kaldi's SplitEventMap (``SE``): ``yes`` if the event's value for ``key`` is one of
    ``yes_values`` (kept sorted and unique, as Kaldi's ConstIntegerSet), else ``no``."""

    key: int
    yes_values: tuple[int, ...]
    yes: EventMap
    no: EventMap

    def __post_init__(self) -> None:
        object.__setattr__(self, "yes_values", tuple(sorted({int(v) for v in self.yes_values})))

    def to_kaldi_binary(self) -> bytes:
        return _to_bytes(self)

    def to_kaldi_text(self) -> str:
        return _to_text(self)


EventMap: TypeAlias = Constant | Table | Split


def lookup(event_map: EventMap, event: Mapping[int, int]) -> int | None:
    """The answer (pdf id) ``event_map`` gives ``event`` (key -> value), or None where Kaldi's
    ``Map`` returns false."""
    node: EventMap | None = event_map
    while node is not None:
        if isinstance(node, Constant):
            return node.answer
        value = event.get(node.key)
        if value is None:
            return None
        if isinstance(node, Table):
            node = node.entries[value] if 0 <= value < len(node.entries) else None
        else:
            node = node.yes if value in node.yes_values else node.no
    return None


def answers(event_map: EventMap) -> list[int]:
    """Every ``Constant`` answer, depth first ("yes" before "no", table entries in order)."""
    found: list[int] = []
    stack: list[EventMap | None] = [event_map]
    while stack:
        node = stack.pop()
        if isinstance(node, Constant):
            found.append(node.answer)
        elif isinstance(node, Table):
            stack.extend(reversed(node.entries))
        elif isinstance(node, Split):
            stack.extend((node.no, node.yes))
    return found


@dataclass(frozen=True)
class KaldiTree:
    """A Kaldi ``ContextDependency`` as data: window width N, central position P and the
    event map to pdf ids (``ToPdf``)."""

    width: int
    central: int
    to_pdf: EventMap

    @property
    def num_pdfs(self) -> int:
        """As Kaldi: the largest answer plus one."""
        return max(answers(self.to_pdf), default=-1) + 1

    def compute(self, phones: Sequence[int], pdf_class: int) -> int | None:
        """The pdf id of ``pdf_class`` in the phone window ``phones`` (Kaldi's ``Compute``)."""
        if len(phones) != self.width:
            raise ConfigError(f"tree: a window of {self.width} phones, not {len(phones)}")
        event = {PDF_CLASS: int(pdf_class), **{i: int(p) for i, p in enumerate(phones)}}
        return lookup(self.to_pdf, event)

    def to_kaldi_binary(self) -> bytes:
        """Kaldi's ``ContextDependency::Write(os, binary=true)``."""
        head = _token(b"ContextDependency") + _int32(self.width) + _int32(self.central)
        return head + _token(b"ToPdf") + _to_bytes(self.to_pdf) + _token(b"EndContextDependency")

    def to_kaldi_text(self) -> str:
        """Kaldi's text form (``str()`` of a kaldi-hmm-gmm ContextDependency)."""
        head = f"ContextDependency {self.width} {self.central} ToPdf "
        return head + _to_text(self.to_pdf) + "EndContextDependency "

    def to_khg(self) -> khg.ContextDependency:
        return context_dependency(self.width, self.central, self.to_pdf)

    @classmethod
    def from_kaldi_binary(cls, data: bytes) -> KaldiTree:
        reader = _Reader(data)
        reader.expect(b"ContextDependency")
        width, central = reader.int32(), reader.int32()
        reader.expect(b"ToPdf")
        to_pdf = reader.event_map()
        reader.expect(b"EndContextDependency")
        if to_pdf is None or reader.pos != len(data):
            raise ModelError("tree: an empty map or trailing bytes in a ContextDependency")
        return cls(width, central, to_pdf)

    @classmethod
    def from_khg(cls, tree: khg.ContextDependency) -> KaldiTree:
        return cls.from_kaldi_binary(kaldi_binary(tree))


def context_dependency(width: int, central: int, event_map: EventMap) -> khg.ContextDependency:
    """A kaldi-hmm-gmm ContextDependency (N = ``width``, P = ``central``) mapping events by
    ``event_map``: Kaldi reads it from its binary form, the bindings' pickle state."""
    data = KaldiTree(width, central, event_map).to_kaldi_binary()
    tree = khg.ContextDependency.__new__(khg.ContextDependency)
    tree.__setstate__((np.frombuffer(data, dtype=np.int8).tolist(),))
    return tree


def kaldi_binary(tree: khg.ContextDependency) -> bytes:
    """Kaldi's binary serialisation of a kaldi-hmm-gmm ContextDependency."""
    return bytes(np.asarray(tree.__getstate__()[0], dtype=np.int8).view(np.uint8))


def _token(token: bytes) -> bytes:
    return token + b" "


def _int32(value: int) -> bytes:
    return _INT32 + struct.pack("<i", value)


def _to_bytes(event_map: EventMap | None) -> bytes:
    """Kaldi's ``EventMap::Write(os, binary=true)``, without recursion (deep trees)."""
    out: list[bytes] = []
    stack: list[EventMap | bytes | None] = [event_map]
    while stack:
        item = stack.pop()
        if isinstance(item, bytes):
            out.append(item)
        elif item is None:
            out.append(b"NULL ")
        elif isinstance(item, Constant):
            out.append(b"CE " + _int32(item.answer))
        elif isinstance(item, Table):
            out.append(b"TE " + _int32(item.key) + _UINT32 + struct.pack("<I", len(item.entries)))
            out.append(b"( ")
            stack.append(b") ")
            stack.extend(reversed(item.entries))
        else:
            values = item.yes_values
            out.append(b"SE " + _int32(item.key) + _int32(len(values)))
            out.append(struct.pack(f"<{len(values)}i", *values) + b"{ ")
            stack.extend((b"} ", item.no, item.yes))
    return b"".join(out)


def _to_text(event_map: EventMap | None) -> str:
    """Kaldi's ``EventMap::Write(os, binary=false)``."""
    out: list[str] = []
    stack: list[EventMap | str | None] = [event_map]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            out.append(item)
        elif item is None:
            out.append("NULL ")
        elif isinstance(item, Constant):
            out.append(f"CE {item.answer} ")
        elif isinstance(item, Table):
            out.append(f"TE {item.key} {len(item.entries)} ( ")
            stack.append(") \n")
            stack.extend(reversed(item.entries))
        else:
            values = "".join(f"{v} " for v in item.yes_values)
            out.append(f"SE {item.key} [ {values}]\n{{ ")
            stack.extend(("} \n", item.no, item.yes))
    return "".join(out)


class _Reader:
    """Kaldi's binary tokens, integers and integer vectors, read from ``data``."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def fail(self, what: str) -> ModelError:
        return ModelError(f"tree: bad Kaldi binary at byte {self.pos}: {what}")

    def expect(self, token: bytes) -> None:
        end = self.pos + len(token) + 1
        if self.data[self.pos : end] != token + b" ":
            raise self.fail(f"expected {token.decode()!r}")
        self.pos = end

    def take(self, size: int) -> bytes:
        if self.pos + size > len(self.data):
            raise self.fail("unexpected end")
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def integer(self, size_byte: bytes, fmt: str) -> int:
        if self.take(1) != size_byte:
            raise self.fail("not a 4-byte integer")
        (value,) = struct.unpack(fmt, self.take(4))
        return int(value)

    def int32(self) -> int:
        return self.integer(_INT32, "<i")

    def int_vector(self) -> tuple[int, ...]:
        size = self.int32()
        if size < 0:
            raise self.fail("negative vector size")
        return tuple(int(v) for v in struct.unpack(f"<{size}i", self.take(4 * size)))

    def event_map(self) -> EventMap | None:
        """Kaldi's ``EventMap::Read``: ``NULL``, ``CE``, ``TE`` or ``SE``, recursively."""
        kind = self.data[self.pos : self.pos + 1]
        if kind == b"N":
            self.expect(b"NULL")
            return None
        if kind == b"C":
            self.expect(b"CE")
            return Constant(self.int32())
        if kind == b"T":
            self.expect(b"TE")
            key, size = self.int32(), self.integer(_UINT32, "<I")
            self.expect(b"(")
            entries = tuple(self.event_map() for _ in range(size))
            self.expect(b")")
            return Table(key, entries)
        if kind == b"S":
            self.expect(b"SE")
            key, values = self.int32(), self.int_vector()
            self.expect(b"{")
            yes, no = self.event_map(), self.event_map()
            self.expect(b"}")
            if yes is None or no is None:
                raise self.fail("a SplitEventMap with a NULL branch")
            return Split(key, values, yes, no)
        raise self.fail(f"unknown event map {kind!r}")
