"""Text files users hand kdpipe (configs, label lists, lexicons, Kaldi tables, id lists,
sentences, manifests): UTF-8, a byte-order mark (Windows editors) dropped, or a one-line
error naming the file, the line and the byte."""

from __future__ import annotations

from pathlib import Path

from kdpipe.errors import KdpipeError


def read_text(path: str | Path, error: type[KdpipeError], what: str = "file") -> str:
    """The text of ``path``; ``error`` (the caller's kind: ``ConfigError``,
    ``CorpusError``, ...) if it is missing (``"<what> not found: <path>"``), unreadable
    or not UTF-8."""
    p = Path(path)
    if not p.is_file():
        raise error(f"{what} not found: {p}")
    try:
        data = p.read_bytes()
    except OSError as e:
        raise error(f"{p}: cannot read: {e.strerror or e}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise error(
            f"{p}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); "
            "convert the file to UTF-8 (e.g. with iconv)"
        ) from None
