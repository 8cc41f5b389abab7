"""Label sets: the ordered class names a model predicts and a store indexes into.

Every stage records its label set; ``LabelSet.check_same`` is how a later stage refuses
targets or checkpoints made for another label space.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kdpipe.errors import LabelSetError
from kdpipe.schema import fingerprint
from kdpipe.textfile import read_text


@dataclass(frozen=True)
class LabelSet:
    """An ordered tuple of unique class names; index ``i`` is class ``names[i]``."""

    names: tuple[str, ...]
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = tuple(str(n) for n in self.names)
        object.__setattr__(self, "names", names)
        if not names:
            raise LabelSetError("a label set needs at least one label")
        index = {n: i for i, n in enumerate(names)}
        if len(index) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise LabelSetError(f"duplicate labels in label set: {dup[:5]}")
        bad = [n for n in names if not n or n != n.strip() or "\n" in n]
        if bad:
            raise LabelSetError(f"labels must be non-empty with no surrounding spaces: {bad[:5]}")
        object.__setattr__(self, "_index", index)

    @classmethod
    def from_names(cls, names: Iterable[str]) -> LabelSet:
        return cls(tuple(names))

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def index(self, name: str) -> int:
        """The index of ``name``; ``LabelSetError`` if it is not in the set."""
        try:
            return self._index[name]
        except KeyError:
            raise LabelSetError(
                f"label {name!r} is not in the label set ({len(self)} labels)"
            ) from None

    def encode(self, names: Sequence[str], where: str = "") -> list[int]:
        """Indices of ``names``; the error names ``where`` (an utterance, a file)."""
        out = []
        for n in names:
            i = self._index.get(n)
            if i is None:
                at = f"{where}: " if where else ""
                raise LabelSetError(f"{at}label {n!r} is not in the label set ({len(self)} labels)")
            out.append(i)
        return out

    @property
    def fingerprint(self) -> str:
        return fingerprint(list(self.names))

    def check_same(self, other: LabelSet, what: str, other_what: str) -> None:
        """Raise a ``LabelSetError`` saying how ``self`` (of ``what``) and ``other`` differ."""
        if self.names == other.names:
            return
        if len(self) != len(other):
            detail = f"{len(self)} vs {len(other)} labels"
        else:
            i = next(
                i for i, (a, b) in enumerate(zip(self.names, other.names, strict=True)) if a != b
            )
            detail = f"label {i} is {self.names[i]!r} vs {other.names[i]!r}"
        raise LabelSetError(f"label set of {what} disagrees with {other_what}: {detail}")

    def to_list(self) -> list[str]:
        return list(self.names)

    def write(self, path: str | Path) -> None:
        """One label per line, in index order."""
        Path(path).write_text("".join(n + "\n" for n in self.names))

    @classmethod
    def read(cls, path: str | Path) -> LabelSet:
        """One label a line (index order), or a Kaldi symbol table (``name id`` lines,
        e.g. phones.txt, pdf or token tables): names ordered by id, ids 0..C-1."""
        p = Path(path)
        text = read_text(p, LabelSetError, "label file")  # a BOM is not part of the first label
        lines = [line.split() for line in text.splitlines() if line.strip()]
        try:
            if lines and all(len(f) == 2 and f[1].lstrip("-").isdigit() for f in lines):
                ids = sorted((int(i), name) for name, i in lines)
                if [i for i, _ in ids] != list(range(len(ids))):
                    raise LabelSetError(f"symbol ids must be 0..{len(ids) - 1}, each once")
                return cls(tuple(name for _, name in ids))
            if any(len(f) != 1 for f in lines):
                raise LabelSetError("one label a line (or 'name id' lines), no spaces in names")
            return cls(tuple(f[0] for f in lines))
        except LabelSetError as error:
            raise LabelSetError(f"{p}: {error}") from None
