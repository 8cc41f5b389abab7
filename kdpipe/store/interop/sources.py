"""Teacher outputs computed elsewhere, read as (utterance id, rows) in the source's order.

The formats behind ``kdpipe store import`` (``kdpipe.teach.imported``; docs/interop.md,
"Import"). Formats only: no corpus, no store, no torch; numpy, kaldiio and h5py.

``open_source(src, format="auto")`` opens a source and indexes it at once, cheaply: the
utterance ids in the source's order and, where the format tells without reading the data,
each utterance's row count R and class count C (``Entry``), so that a caller checks ids and
frame counts before the long work. ``Source.read(entry)`` then reads one utterance: a dense
(R, C) float matrix, or ``Posteriors`` (sparse (class, probability) pairs per row) for a
Kaldi ``Posterior`` entry.

Formats (``auto`` picks by the name):

- ``kaldi``: a Kaldi table, an ``.scp`` file or an ``.ark`` file, or an rspecifier
  ``scp:FILE`` / ``ark:FILE`` (options such as ``ark,s,cs:`` are accepted and ignored;
  pipes ``... |`` and stdin ``-`` are refused: a source is read twice, once to index and
  hash it). Entries are Kaldi float matrices (``FM``, ``DM``, compressed ``CM``/``CM2``/
  ``CM3``, binary or text, read by kaldiio), vectors (``FV``/``DV``: one row) or binary
  ``Posterior`` (read here: kaldiio has no reader for it and takes its ``\\0B\\4`` header for
  an int32 vector). The index costs: scp, one small header read per entry (kaldiio's lazy
  loaders give no shapes without loading the matrix); ark, one pass that reads the headers
  and seeks over matrix data (a Posterior entry is walked frame by frame). scp row ranges
  ``ark:offset[r1:r2]`` / ``[r1:r2,c1:c2]`` are applied (inclusive, as in Kaldi).
- ``npy``: a folder of ``<name>.npy`` files, one (R, C) float array per utterance, id =
  ``urllib.parse.unquote(name)`` (what ``kdpipe store export --to npy --dense`` writes);
  other files are ignored; order: file names sorted. Shapes come from the headers
  (``np.load(mmap_mode="r")``).
- ``hdf5``: an ``.h5``/``.hdf5`` file; every 2-D dataset anywhere in it is an utterance, id
  = its path without the leading ``/`` (the layout of the HDF5 corpus reader); other
  objects are ignored; order: h5py's (names sorted, or creation order where tracked).
  Shapes from the dataset headers.

``Source.digest()`` is the provenance hash of the source's content (see its docstring).
"""

from __future__ import annotations

import hashlib
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote

import numpy as np

from kdpipe.errors import ConfigError, StoreError

FORMATS = ("auto", "kaldi", "npy", "hdf5")
MATRIX, POSTERIOR = "matrix", "posterior"  # what an entry holds
HASH_BLOCK = 1 << 22  # bytes per read while hashing

# Kaldi binary Posterior (hmm/posterior.cc): "\0B", WriteBasicType(int32 T), per frame
# WriteBasicType(int32 n) then n times WriteBasicType(int32 class), WriteBasicType(float
# prob); WriteBasicType = one size byte (4) + the little-endian value.
_PAIR = np.dtype([("s1", "u1"), ("cls", "<i4"), ("s2", "u1"), ("prob", "<f4")])  # 10 bytes
_ITEM = {"FM": 4, "DM": 8, "FV": 4, "DV": 8}  # bytes per value of plain matrices/vectors
_RSPEC = re.compile(r"^(?P<type>ark|scp)(?P<opts>(,[a-z]+)*):(?P<path>.*)$")
_ARK_PATH = re.compile(r"^(?P<file>.*?)(:(?P<offset>\d+))?(\[(?P<range>[^\]]*)\])?$")


@dataclass(frozen=True)
class Posteriors:
    """One utterance of a Kaldi ``Posterior``: R rows of (class, probability) pairs, CSR:
    row r holds pairs ``offsets[r]:offsets[r + 1]``, in the order the file has them."""

    offsets: np.ndarray  # (R+1,) int64
    classes: np.ndarray  # (nnz,) int64
    probs: np.ndarray  # (nnz,) float32, >= 0 (checked on read)

    @property
    def num_rows(self) -> int:
        return len(self.offsets) - 1

    def dense(self, num_classes: int, where: str) -> np.ndarray:
        """(R, C) float32 probabilities: 0 where a row has no pair for a class, the sum
        where it has several. ``StoreError`` naming ``where`` for a class outside [0, C)."""
        r = self.num_rows
        if self.classes.size:
            bad = np.flatnonzero((self.classes < 0) | (self.classes >= num_classes))
            if len(bad):
                row = int(np.searchsorted(self.offsets, bad[0], side="right")) - 1
                raise StoreError(
                    f"{where}: frame {row}: class index {int(self.classes[bad[0]])} out of "
                    f"range [0, {num_classes}) (the label set has {num_classes} labels)"
                )
        rows = np.repeat(np.arange(r, dtype=np.int64), np.diff(self.offsets))
        flat = np.bincount(
            rows * num_classes + self.classes, weights=self.probs, minlength=r * num_classes
        )
        return flat.reshape(r, num_classes).astype(np.float32)


@dataclass(frozen=True)
class Entry:
    """One utterance of a source, as indexed (before its data is read)."""

    utt_id: str
    file: str  # the file holding it (as named in the source)
    rows: int | None  # R; None: known only once read (a Kaldi text matrix of an scp)
    classes: int | None  # C; None: a Posterior's (known only from its class indices)
    holds: str = MATRIX  # MATRIX (dense rows) or POSTERIOR
    offset: int = 0  # kaldi: byte offset of the object in ``file``
    key: str = ""  # hdf5: the dataset's path
    ranges: tuple[slice, slice] | None = None  # kaldi scp: [rows, cols] of the object
    nbytes: int = 0  # bytes of the stored data, where known (0: unknown)

    @property
    def where(self) -> str:
        """How errors name it: ``utterance ID in FILE``."""
        return f"utterance {self.utt_id} in {self.file}"


Data = np.ndarray | Posteriors


class Source:
    """An opened, indexed source: ``entries`` in the source's order, ``read`` each.
    Use as a context manager or call ``close()``."""

    format = ""

    def __init__(self, location: str, entries: list[Entry], files: list[tuple[str, str]]):
        self.location = location
        self.entries = entries
        self.files = files  # (name, path) of every file the data comes from, digest order
        self.bytes_read = 0  # bytes of stored data read so far (for MB/s)

    @property
    def ids(self) -> list[str]:
        return [e.utt_id for e in self.entries]

    @property
    def holds(self) -> set[str]:
        """What the entries hold: {MATRIX}, {POSTERIOR} or both."""
        return {e.holds for e in self.entries}

    def _read(self, entry: Entry) -> Data:
        raise NotImplementedError

    def read(self, entry: Entry) -> Data:
        """One utterance: (R, C) float matrix (float32 or float64 as stored), or
        ``Posteriors``. ``StoreError`` naming the utterance and file if it is not that, or
        if its shape is not what the index said."""
        data = self._read(entry)
        if isinstance(data, Posteriors):
            rows = data.num_rows
        else:
            data = np.asarray(data)
            if data.ndim != 2 or not np.issubdtype(data.dtype, np.floating):
                raise StoreError(
                    f"{entry.where}: expected a (rows, classes) float matrix, got "
                    f"{data.dtype} of shape {data.shape}"
                )
            rows = data.shape[0]
            if entry.classes is not None and data.shape[1] != entry.classes:
                said = f"{data.shape[1]} columns, its header said {entry.classes}"
                raise StoreError(f"{entry.where}: {said}")
        if entry.rows is not None and rows != entry.rows:
            raise StoreError(f"{entry.where}: {rows} rows, its header said {entry.rows}")
        return data

    def __iter__(self) -> Iterator[tuple[str, Data]]:
        """(utterance id, data) of every entry, in the source's order."""
        for entry in self.entries:
            yield entry.utt_id, self.read(entry)

    def digest(self) -> str:
        """sha256 of the source's content: of the file's bytes for a one-file source (what
        ``sha256sum FILE`` prints), else of the lines ``<sha256>  <name>\\n`` of its files
        (what ``sha256sum`` prints: an scp first, then its archives as the scp names them,
        in order of first use; the ``.npy`` files of a folder by sorted name). Reads every
        byte once (~1.4 GB/s)."""
        if len(self.files) == 1:
            return file_sha256(self.files[0][1])
        lines = "".join(f"{file_sha256(path)}  {name}\n" for name, path in self.files)
        return hashlib.sha256(lines.encode()).hexdigest()

    def close(self) -> None:
        pass

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    buf = bytearray(HASH_BLOCK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            digest.update(view[:n])
    return digest.hexdigest()


# -- opening -------------------------------------------------------------------------------


def open_source(src: str | Path, format: str = "auto") -> Source:
    """Open and index ``src`` (see the module docstring); ``ConfigError`` for a missing
    source or one whose format cannot be told, ``StoreError`` for a malformed one."""
    if format not in FORMATS:
        raise ConfigError(f"unknown source format {format!r}: expected one of {', '.join(FORMATS)}")
    text = str(src)
    spec = _RSPEC.match(text)
    if spec is not None and format in ("auto", "kaldi"):
        return _open_kaldi(spec["path"], spec["type"], text)
    path = Path(text)
    if not path.exists():
        raise ConfigError(f"source not found: {text}")
    if format == "auto":
        if path.is_dir():
            format = "npy"
        elif path.suffix in (".scp", ".ark"):
            format = "kaldi"
        elif path.suffix in (".h5", ".hdf5"):
            format = "hdf5"
        else:
            raise ConfigError(
                f"{text}: cannot tell the source format from the name (.scp, .ark, .h5, "
                ".hdf5, or a folder of .npy files): give --format"
            )
    if format == "kaldi":
        return _open_kaldi(text, "scp" if _looks_like_scp(path) else "ark", text)
    if format == "npy":
        return NpySource(path)
    return Hdf5Source(path)


def _looks_like_scp(path: Path) -> bool:
    if path.suffix in (".scp", ".ark"):
        return path.suffix == ".scp"
    with open(path, "rb") as f:
        head = f.read(4096)
    try:
        line = head.decode().splitlines()[0] if head else ""
    except UnicodeDecodeError:
        return False
    return bool(re.match(r"^\S+\s+\S+:\d+", line))


def _open_kaldi(path: str, kind: str, given: str) -> Source:
    if path in ("", "-") or path.strip().endswith("|") or path.strip().startswith("|"):
        raise ConfigError(
            f"{given}: pipes and stdin cannot be imported (the source is read twice: to "
            "index and hash it, then to import): write the archive to a file first"
        )
    if not Path(path).is_file():
        raise ConfigError(f"source not found: {path}")
    return KaldiScpSource(path) if kind == "scp" else KaldiArkSource(path)


# -- Kaldi -----------------------------------------------------------------------------------


def _int32(b: bytes, where: str) -> int:
    if len(b) != 5 or b[0] != 4:
        raise StoreError(f"{where}: not a Kaldi binary object (bad or truncated integer)")
    return int(struct.unpack("<i", b[1:])[0])


def _read_token(f: IO[bytes]) -> str:
    out = bytearray()
    while (c := f.read(1)) not in (b" ", b""):
        out += c
    return out.decode("latin-1")


def _header(f: IO[bytes], where: str) -> tuple[str, int | None, int | None, int | None]:
    """At the start of a Kaldi object: (holds, rows, classes, bytes after the header) read
    from its header; rows/classes None for a text object, bytes None where not fixed (a
    Posterior, text). Leaves ``f`` after the header."""
    if f.read(2) != b"\0B":
        return MATRIX, None, None, None  # text (kaldiio reads it)
    first = f.read(1)
    if first == b"\4":  # Posterior (an int32 vector has this header too: not a posterior)
        t = int(struct.unpack("<i", _exact(f, 4, where))[0])
        if t < 0:
            raise StoreError(f"{where}: negative frame count {t}")
        return POSTERIOR, t, None, None
    token = (first + _read_token(f).encode("latin-1")).decode("latin-1")
    if token in ("FM", "DM"):
        rows, cols = _int32(f.read(5), where), _int32(f.read(5), where)
        return MATRIX, rows, cols, rows * cols * _ITEM[token]
    if token in ("FV", "DV"):
        dim = _int32(f.read(5), where)
        return MATRIX, 1, dim, dim * _ITEM[token]
    if token in ("CM", "CM2", "CM3"):
        _, _, rows, cols = struct.unpack("<ffii", _exact(f, 16, where))
        size = {"CM": cols * 8 + rows * cols, "CM2": 2 * rows * cols, "CM3": rows * cols}
        return MATRIX, rows, cols, size[token]
    raise StoreError(
        f"{where}: Kaldi object of type {token!r}: expected a float matrix or vector (FM, DM, "
        "CM, CM2, CM3, FV, DV) or a Posterior"
    )


def _exact(f: IO[bytes], n: int, where: str) -> bytes:
    b = f.read(n)
    if len(b) != n:
        raise StoreError(f"{where}: truncated")
    return b


def read_posterior(f: IO[bytes], where: str) -> Posteriors:
    """A binary Kaldi ``Posterior`` at the current position of ``f`` (its ``\\0B\\4``
    header included). ``StoreError`` naming ``where`` (and the frame) if it is malformed,
    truncated, or holds a probability that is negative, NaN or infinite."""
    if f.read(3) != b"\0B\4":
        raise StoreError(f"{where}: not a binary Kaldi Posterior")
    t = int(struct.unpack("<i", _exact(f, 4, where))[0])
    if t < 0:
        raise StoreError(f"{where}: negative frame count {t}")
    widths = np.zeros(t, dtype=np.int64)
    chunks = []
    read = f.read
    for r in range(t):
        head = read(5)
        if len(head) != 5 or head[0] != 4:
            raise StoreError(f"{where}: frame {r}: not a Kaldi Posterior (truncated or corrupt)")
        n = int.from_bytes(head[1:], "little", signed=True)
        body = read(10 * n) if n > 0 else b""
        if n < 0 or len(body) != 10 * n:
            raise StoreError(f"{where}: frame {r}: not a Kaldi Posterior (truncated or corrupt)")
        widths[r] = n
        chunks.append(body)
    pairs = np.frombuffer(b"".join(chunks), dtype=_PAIR)
    offsets = np.zeros(t + 1, dtype=np.int64)
    np.cumsum(widths, out=offsets[1:])
    if len(pairs) and ((pairs["s1"] != 4).any() or (pairs["s2"] != 4).any()):
        raise StoreError(f"{where}: not a Kaldi Posterior (corrupt pair)")
    probs = pairs["prob"].astype(np.float32)
    bad = np.flatnonzero(~np.isfinite(probs) | (probs < 0))
    if len(bad):
        row = int(np.searchsorted(offsets, bad[0], side="right")) - 1
        raise StoreError(
            f"{where}: frame {row}: probability {float(probs[bad[0]])!r} (a Posterior holds "
            "probabilities >= 0)"
        )
    return Posteriors(offsets, pairs["cls"].astype(np.int64), probs)


class _KaldiSource(Source):
    format = "kaldi"

    def __init__(self, location: str, entries: list[Entry], files: list[tuple[str, str]]):
        super().__init__(location, entries, files)
        self._fd: IO[bytes] | None = None
        self._fd_name = ""

    def _file(self, name: str) -> IO[bytes]:
        if self._fd is None or self._fd_name != name:
            self.close()
            self._fd, self._fd_name = open(name, "rb"), name  # noqa: SIM115 (closed in close())
        return self._fd

    def _read(self, entry: Entry) -> Data:
        from kaldiio.matio import read_kaldi

        f = self._file(entry.file)
        f.seek(entry.offset)
        data: Data
        if entry.holds == POSTERIOR:
            data = read_posterior(f, entry.where)
        else:
            try:
                data = read_kaldi(f)
            except (ValueError, AssertionError, RuntimeError, struct.error) as error:
                raise StoreError(f"{entry.where}: unreadable Kaldi matrix ({error})") from None
            if isinstance(data, tuple):  # audio
                raise StoreError(f"{entry.where}: holds audio, not posteriors")
            data = np.asarray(data)
            if data.ndim == 1:
                data = data[None, :]  # a Kaldi vector: one row
            if entry.ranges is not None:
                data = data[entry.ranges]
        self.bytes_read += f.tell() - entry.offset
        return data

    def close(self) -> None:
        if self._fd is not None:
            self._fd.close()
            self._fd = None


class KaldiArkSource(_KaldiSource):
    """A Kaldi archive, indexed by one pass over it (headers read, matrix data skipped)."""

    def __init__(self, path: str) -> None:
        from kaldiio.matio import read_kaldi

        entries = []
        end = Path(path).stat().st_size
        with open(path, "rb") as f:
            while True:
                c = f.read(1)
                while c in (b" ", b"\n", b"\r", b"\t"):
                    c = f.read(1)
                if not c:
                    break
                utt_id = (c + _read_token(f).encode("latin-1")).decode("utf-8", "replace")
                offset = f.tell()
                where = f"utterance {utt_id} in {path}"
                holds, rows, cols, size = _header(f, where)
                if holds == POSTERIOR:
                    f.seek(offset)
                    read_posterior(f, where)  # walks it (checks the probabilities too)
                elif size is not None:
                    f.seek(size, 1)
                    if f.tell() > end:
                        raise StoreError(f"{where}: truncated")
                else:  # text: parse it to find its end
                    f.seek(offset)
                    try:
                        text = np.asarray(read_kaldi(f))
                    except (ValueError, AssertionError, RuntimeError) as error:
                        raise StoreError(f"{where}: unreadable Kaldi object ({error})") from None
                    text = text[None, :] if text.ndim == 1 else text
                    rows, cols = (text.shape[0], text.shape[1]) if text.ndim == 2 else (None, None)
                entries.append(
                    Entry(utt_id, path, rows, cols, holds, offset, nbytes=f.tell() - offset)
                )
        super().__init__(path, entries, [(path, path)])


class KaldiScpSource(_KaldiSource):
    """A Kaldi script file: ``key ark:offset`` lines, each object's header read."""

    def __init__(self, path: str) -> None:
        entries: list[Entry] = []
        files: dict[str, None] = {}
        with open(path, encoding="utf-8") as lines:
            for n, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                fields = line.split(None, 1)
                if len(fields) != 2:
                    raise StoreError(f"{path}:{n}: expected 'utterance-id rxfilename'")
                utt_id, rx = fields[0], fields[1].strip()
                entries.append(self._entry(utt_id, rx, f"{path}:{n}"))
                files.setdefault(entries[-1].file)
        super().__init__(path, entries, [(path, path)] + [(a, a) for a in files])
        self._index_headers()

    @staticmethod
    def _entry(utt_id: str, rx: str, where: str) -> Entry:
        if rx.endswith("|") or rx.startswith("|") or rx == "-":
            raise ConfigError(f"{where}: pipes cannot be imported: write the archive first")
        m = _ARK_PATH.match(rx)
        assert m is not None  # the pattern matches every string
        ranges = _ranges(m["range"], where) if m["range"] is not None else None
        offset = int(m["offset"]) if m["offset"] is not None else 0
        return Entry(utt_id, m["file"], None, None, MATRIX, offset, ranges=ranges)

    def _index_headers(self) -> None:
        out = []
        for e in self.entries:
            if not Path(e.file).is_file():
                raise ConfigError(
                    f"{self.location}: utterance {e.utt_id}: archive {e.file} not found (paths "
                    "in an scp are relative to the working directory, as in Kaldi)"
                )
            f = self._file(e.file)
            f.seek(e.offset)
            holds, rows, cols, size = _header(f, e.where)
            if e.ranges is not None:
                if holds == POSTERIOR:
                    raise StoreError(f"{e.where}: row ranges of a Posterior are not supported")
                rows = None if rows is None else len(range(rows)[e.ranges[0]])
                cols = None if cols is None else len(range(cols)[e.ranges[1]])
            nbytes = 0 if size is None else f.tell() - e.offset + size
            out.append(replace(e, rows=rows, classes=cols, holds=holds, nbytes=nbytes))
        self.close()
        self.entries = out


def _ranges(text: str, where: str) -> tuple[slice, slice]:
    """Kaldi's ``[r1:r2]`` / ``[r1:r2,c1:c2]`` (inclusive; empty = all) as slices."""
    parts = text.split(",")
    if len(parts) > 2:
        raise StoreError(f"{where}: bad range [{text}]")
    out = []
    for part in [*parts, ""][:2]:
        part = part.strip()
        if part in ("", ":"):
            out.append(slice(None))
            continue
        lo, sep, hi = part.partition(":")
        try:
            out.append(slice(int(lo), int(hi) + 1) if sep else slice(int(lo), int(lo) + 1))
        except ValueError:
            raise StoreError(f"{where}: bad range [{text}]") from None
    return out[0], out[1]


# -- NumPy ------------------------------------------------------------------------------------


class NpySource(Source):
    """A folder of ``<name>.npy`` files (see the module docstring)."""

    format = "npy"

    def __init__(self, folder: Path) -> None:
        paths = sorted(p for p in folder.iterdir() if p.suffix == ".npy" and p.is_file())
        if not paths:
            raise ConfigError(f"{folder}: holds no .npy files")
        entries = []
        for p in paths:
            where = f"{p}"
            try:
                a = np.load(p, mmap_mode="r", allow_pickle=False)
            except (ValueError, OSError) as error:
                raise StoreError(f"{where}: not a readable .npy file ({error})") from None
            if a.ndim != 2 or not np.issubdtype(a.dtype, np.floating):
                raise StoreError(
                    f"{where}: expected a (rows, classes) float array, got {a.dtype} of "
                    f"shape {a.shape}"
                )
            entries.append(
                Entry(unquote(p.name[: -len(".npy")]), str(p), int(a.shape[0]),
                      int(a.shape[1]), nbytes=p.stat().st_size)
            )  # fmt: skip
            del a
        super().__init__(str(folder), entries, [(p.name, str(p)) for p in paths])

    def _read(self, entry: Entry) -> Data:
        try:
            a = np.load(entry.file, allow_pickle=False)
        except (ValueError, OSError) as error:
            raise StoreError(f"{entry.where}: not a readable .npy file ({error})") from None
        self.bytes_read += entry.nbytes
        return np.asarray(a)


# -- HDF5 -------------------------------------------------------------------------------------


class Hdf5Source(Source):
    """An HDF5 file of 2-D datasets, one per utterance (see the module docstring)."""

    format = "hdf5"

    def __init__(self, path: Path) -> None:
        import h5py

        try:
            self._f = h5py.File(path, "r")
        except OSError as error:
            raise StoreError(f"{path}: not a readable HDF5 file ({error})") from None
        entries: list[Entry] = []

        def visit(name: str, obj: Any) -> None:
            if isinstance(obj, h5py.Dataset) and obj.ndim == 2:
                if not np.issubdtype(obj.dtype, np.floating):
                    raise StoreError(f"{path}:{name}: expected floats, got {obj.dtype}")
                rows, cols = (int(n) for n in obj.shape)
                size = int(obj.id.get_storage_size())
                entries.append(Entry(name, str(path), rows, cols, key=name, nbytes=size))

        try:
            self._f.visititems(visit)
        except BaseException:
            self._f.close()
            raise
        if not entries:
            self._f.close()
            raise ConfigError(f"{path}: holds no 2-D datasets (one per utterance)")
        super().__init__(str(path), entries, [(str(path), str(path))])

    def _read(self, entry: Entry) -> Data:
        data = np.asarray(self._f[entry.key][()])
        self.bytes_read += entry.nbytes
        return data

    def close(self) -> None:
        self._f.close()
