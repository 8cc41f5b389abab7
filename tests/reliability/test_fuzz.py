"""Damage fuzz (issue 17): random damage to feature stores, target stores and checkpoints.

Each case copies one undamaged artefact, damages it at a seeded random place (a chunk, an
array's or group's ``zarr.json``, a part's commit record, the commit log, ``card.json``,
``run.json``, the safetensors header or data) in a seeded random way (a flipped bit, an
overwritten byte range, a truncation, a deletion, valid JSON of another shape, a duplicated
part or chunk) and runs every command that reads that artefact. Each command must either
succeed with exactly the numbers the undamaged artefact gives (damage to bytes that do not
matter) or fail with one line: exit 1 and a single ``error: ...`` line on stderr. Never a
traceback, never a silently different number. (A ``verify`` is a report: it may fail with
several ``error:`` lines, one per problem.) ``learn``'s curve plot is stubbed: it reads no
artefact and costs a second a run.

The artefacts are built once (module fixture) and copied per case; the case list is fixed
by ``SEED`` and each case is a test of its own, so a failure names it (and its damage).
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner, Result

import kdpipe.learn.trainer
from kdpipe.cli.main import app
from kdpipe.testing.stores import assert_same_store, store_values
from kdpipe.testing.teachers import make_teacher, teacher_corpus

SEED = 7
# cases per artefact: every site of each artefact comes up in turn, the rest is drawn
CASES = {"features": 16, "targets": 18, "checkpoint": 14}
SITES = {
    "features": ("chunk", "array-json", "root-json", "group-json", "chunk", "duplicate"),
    "targets": (
        "chunk",
        "array-json",
        "part-record",
        "commit-log",
        "root-json",
        "chunk",
        "duplicate",
        "group-json",
    ),
    "checkpoint": ("card", "weights-header", "weights-data", "run", "card", "weights-header"),
}
BYTE_DAMAGE = ("flip", "overwrite", "truncate", "delete")
JSON_SHAPES: tuple[Any, ...] = ([], {}, 0, "zarr", None, {"zarr_format": 3}, [1, 2])


@dataclass(frozen=True)
class Case:
    artefact: str
    index: int  # within the artefact's cases

    @property
    def name(self) -> str:
        return f"{self.artefact}-{self.index:02d}"


ALL_CASES = [Case(a, i) for a, n in CASES.items() for i in range(n)]


# -- the artefacts and what the commands say about them undamaged --------------------------
def _cli(*args: Any) -> Result:
    return CliRunner().invoke(app, [str(a) for a in args])


def _no_plots(monkeypatch: pytest.MonkeyPatch) -> None:
    """``learn`` draws its curves with matplotlib (~1 s a run), which reads no artefact."""
    monkeypatch.setattr(kdpipe.learn.trainer, "plot_curves", lambda rows, out: None)


LEARN = ("--student", "dnn", "--epochs", "1", "-m", "hidden_dim=8", "-m", "num_layers=1")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The undamaged corpus, teacher, target store and student, and each command's
    numbers on them."""
    mp = pytest.MonkeyPatch()
    _no_plots(mp)
    root = tmp_path_factory.mktemp("fuzz")
    fs = teacher_corpus(root / "fs.zarr", per_split={"train": 4, "dev": 2, "test": 2},
                        frames=(10, 20))  # fmt: skip
    teacher = make_teacher(root / "teacher", fs, arch="dnn")
    store = root / "S.zarr"
    r = _cli("teach", "--no-progress", "--model", teacher, "--corpus", fs.location,
             "--out", store, "--split", "all", "--topk", "2", "--part-frames", "40")  # fmt: skip
    assert r.exit_code == 0, r.output
    student = root / "student"
    r = _cli("learn", "--corpus", fs.location, "--targets", store, "--out", student, *LEARN)
    assert r.exit_code == 0, r.output
    paths = {"features": Path(fs.location), "targets": store, "checkpoint": student}
    base = {
        "features": features_results(paths["features"], teacher),
        "targets": targets_results(store, Path(fs.location), root / "b-t"),
        "checkpoint": checkpoint_results(student, Path(fs.location), root / "b-c"),
    }
    yield {"paths": paths, "base": base, "teacher": teacher, "corpus": Path(fs.location)}
    mp.undo()


def _outcome(r: Result, what: str) -> bool:
    """True if the command succeeded; else it failed with one ``error:`` line, exit 1.

    A ``verify`` is a report: it may list several problems, one ``error:`` line each (and
    its ``not checked:`` notes), under a ``FAILED`` summary on stdout."""
    assert r.exception is None or isinstance(r.exception, SystemExit), (
        f"{what}: {type(r.exception).__name__}: {r.exception}\n{r.output}"
    )
    assert "Traceback" not in r.output, f"{what}:\n{r.output}"
    if r.exit_code == 0:
        return True
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    if what.endswith("verify"):
        lines = [line for line in lines if not line.startswith("not checked: ")]
        one_line = bool(lines) and all(line.startswith("error: ") for line in lines)
    else:
        one_line = len(lines) == 1 and lines[0].startswith("error: ")
    assert r.exit_code == 1 and one_line, (
        f"{what}: exit {r.exit_code}, stderr {r.stderr!r}, stdout {r.stdout!r}"
    )
    return False


def _text(r: Result, *paths: Path) -> str:
    """stdout with the artefacts' locations blanked (a damaged copy lives elsewhere) and
    the bytes on disk (``store inspect``) left out."""
    out = r.stdout
    for p in paths:
        out = out.replace(str(p), "<artefact>")
    out = re.sub(r"on disk\s*│[^│]*│", "on disk", out)  # the files' sizes, not the data
    return re.sub(r"\s+", " ", out)


def _eval(model: Path, corpus: Path, what: str) -> dict[str, Any] | None:
    r = _cli("eval", "--model", model, "--corpus", corpus, "--json")
    if not _outcome(r, what):
        return None
    metrics = json.loads(r.stdout)
    return {k: v for k, v in metrics.items() if k not in ("model", "corpus")}


def features_results(fs: Path, teacher: Path) -> dict[str, Any]:
    r = _cli("corpus", "verify", fs)
    return {
        "corpus verify": _text(r, fs) if _outcome(r, "corpus verify") else None,
        "eval": _eval(teacher, fs, "eval --corpus"),
    }


def targets_results(store: Path, corpus: Path, work: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for cmd in ("verify", "inspect"):
        r = _cli("store", cmd, store)
        out[f"store {cmd}"] = _text(r, store) if _outcome(r, f"store {cmd}") else None
    r = _cli("learn", "--corpus", corpus, "--targets", store, "--out", work / "L", *LEARN)
    out["learn"] = None
    if _outcome(r, "learn --targets"):
        card = json.loads((work / "L" / "card.json").read_text())
        out["learn"] = card["weights_sha256"]
    return out


def checkpoint_results(model: Path, corpus: Path, work: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"eval": _eval(model, corpus, "eval --model")}
    store = work / "T.zarr"
    r = _cli("teach", "--no-progress", "--model", model, "--corpus", corpus, "--out", store,
             "--split", "test", "--topk", "2", "--json")  # fmt: skip
    out["teach"] = None
    if _outcome(r, "teach --model"):
        summary = json.loads(r.stdout.strip().splitlines()[-1])
        keep = ("utterances", "frames", "mean_entropy", "mean_tail_mass", "accuracy")
        out["teach"] = ({k: summary[k] for k in keep}, store_values(store))
    return out


# -- damage ---------------------------------------------------------------------------------
def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _site_files(artefact: str, site: str, root: Path) -> list[Path]:
    files = _files(root)
    rel = {f: f.relative_to(root).as_posix() for f in files}
    if artefact == "checkpoint":
        name = {
            "card": "card.json",
            "run": "run.json",
            "weights-header": "model.safetensors",
            "weights-data": "model.safetensors",
        }[site]
        return [root / name]
    jsons = [f for f in files if f.name == "zarr.json"]
    arrays = [f for f in jsons if json.loads(f.read_text()).get("node_type") == "array"]
    if site in ("chunk", "duplicate"):
        return [f for f in files if "/c/" in f"/{rel[f]}"]
    if site == "array-json":
        return arrays
    if site == "root-json":
        return [root / "zarr.json"]
    if site == "part-record":  # a part's root group: its commit record (arrays, sha256s)
        return [f for f in jsons if re.fullmatch(r"parts/[^/]+/zarr\.json", rel[f])]
    if site == "commit-log":
        return [f for f in jsons if rel[f].startswith("commits/")]
    if site == "group-json":
        return [f for f in jsons if f not in arrays and f != root / "zarr.json"]
    raise AssertionError(site)


def _damage_bytes(path: Path, rng: np.random.Generator, lo: int = 0, hi: int | None = None) -> str:
    """One of ``BYTE_DAMAGE`` inside bytes [lo, hi) of ``path``; returns what it did."""
    raw = bytearray(path.read_bytes())
    hi = len(raw) if hi is None else hi
    kind = BYTE_DAMAGE[int(rng.integers(len(BYTE_DAMAGE)))]
    if kind == "delete":
        path.unlink()
        return "deleted"
    if not raw or hi <= lo:
        path.write_bytes(b"")
        return "emptied"
    at = int(rng.integers(lo, hi))
    if kind == "flip":
        bit = int(rng.integers(8))
        raw[at] ^= 1 << bit
        what = f"bit {bit} of byte {at} flipped"
    elif kind == "overwrite":
        n = int(rng.integers(1, min(16, hi - at) + 1))
        raw[at : at + n] = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        what = f"bytes {at}..{at + n} overwritten"
    else:
        raw = raw[:at]
        what = f"truncated to {at} bytes"
    path.write_bytes(bytes(raw))
    return what


def _edit_json(path: Path, rng: np.random.Generator) -> str:
    """Valid JSON of the same shape with one value changed (a number, a string, a flag),
    one list's items swapped or dropped, or one key removed; returns what it did."""
    doc = json.loads(path.read_text())
    spots: list[tuple[Any, Any]] = []  # (container, key or index) of every value

    def walk(node: Any) -> None:
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in items:
            spots.append((node, key))
            if isinstance(value, (dict, list)) and value:
                walk(value)

    if not isinstance(doc, (dict, list)) or not doc:
        path.write_text(json.dumps([doc]))
        return "wrapped in a list"
    walk(doc)
    node, key = spots[int(rng.integers(len(spots)))]
    value = node[key]
    if isinstance(node, dict) and rng.random() < 0.2:
        del node[key]
        what = f"key {key!r} removed"
    elif isinstance(value, bool) or value is None:
        node[key] = not value
        what = f"{key!r}: {value!r} -> {node[key]!r}"
    elif isinstance(value, (int, float)):
        options = [v for v in (value + 1, value - 1, value * 2, 0, -value) if v != value]
        node[key] = options[int(rng.integers(len(options)))]
        what = f"{key!r}: {value!r} -> {node[key]!r}"
    elif isinstance(value, str):
        chars = list(value or "x")
        at = int(rng.integers(len(chars)))
        chars[at] = "0123456789abcdef"[int(rng.integers(16))] if chars[at] != "0" else "1"
        node[key] = "".join(chars)
        what = f"{key!r}: {value!r} -> {node[key]!r}"
    elif isinstance(value, list) and len(value) > 1 and rng.random() < 0.5:
        i, j = rng.choice(len(value), 2, replace=False)
        value[int(i)], value[int(j)] = value[int(j)], value[int(i)]
        what = f"{key!r}: items {int(i)} and {int(j)} swapped"
    elif isinstance(value, (list, dict)) and value:
        first = next(iter(value)) if isinstance(value, dict) else 0
        del value[first]
        what = f"{key!r}: item {first!r} dropped"
    else:
        node[key] = 1
        what = f"{key!r}: {value!r} -> 1"
    path.write_text(json.dumps(doc))
    return what


def damage(case: Case, root: Path) -> str:
    """Damage the artefact copy at ``root`` as ``case`` says; returns a description."""
    rng = np.random.default_rng([SEED, list(CASES).index(case.artefact), case.index])
    sites = SITES[case.artefact]
    site = sites[case.index] if case.index < len(sites) else sites[int(rng.integers(len(sites)))]
    files = _site_files(case.artefact, site, root)
    path = files[int(rng.integers(len(files)))]
    rel = path.relative_to(root).as_posix()
    if site == "duplicate":
        if case.artefact == "targets":  # a whole part again, under another name
            part = root / "parts" / rel.split("/")[1]
            twin = part.with_name(part.name[:-6] + "ffffff")
            shutil.copytree(part, twin)
            with_log = bool(rng.integers(2))
            if with_log:  # and its entry in the commit log
                shutil.copytree(root / "commits" / part.name, root / "commits" / twin.name)
            return f"part {part.name} duplicated as {twin.name} (commit log: {with_log})"
        index = rel.split("/c/")[1].split("/")  # a chunk again, past the array's end
        index[0] = str(int(index[0]) + 1 + int(rng.integers(3)))
        twin = root / rel.split("/c/")[0] / "c" / "/".join(index)
        twin.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, twin)
        return f"chunk {rel} copied to {twin.relative_to(root).as_posix()}"
    draw = rng.random()
    if path.suffix == ".json" and draw < 0.3:
        shape = JSON_SHAPES[int(rng.integers(len(JSON_SHAPES)))]
        path.write_text(json.dumps(shape))
        return f"{rel} replaced by {json.dumps(shape)}"
    if path.suffix == ".json" and draw < 0.6:
        return f"{rel}: {_edit_json(path, rng)}"
    if "/c/" in f"/{rel}" and draw < 0.25:  # another chunk of the artefact in its place
        others = [f for f in files if f != path]
        other = others[int(rng.integers(len(others)))]
        shutil.copyfile(other, path)
        return f"chunk {rel} replaced by chunk {other.relative_to(root).as_posix()}"
    if site.startswith("weights-"):  # the header (8-byte length + JSON) or the tensors
        size = 8 + int.from_bytes(path.read_bytes()[:8], "little")
        lo, hi = (0, size) if site == "weights-header" else (size, None)
        return f"{rel}: {_damage_bytes(path, rng, lo, hi)}"
    return f"{rel}: {_damage_bytes(path, rng)}"


# -- the test -------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ALL_CASES, ids=[c.name for c in ALL_CASES])
def test_damage_gives_the_same_numbers_or_one_line(
    case: Case, built: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_plots(monkeypatch)
    art = tmp_path / built["paths"][case.artefact].name
    shutil.copytree(built["paths"][case.artefact], art)
    what = damage(case, art)
    if case.artefact == "features":
        got = features_results(art, built["teacher"])
    elif case.artefact == "targets":
        got = targets_results(art, built["corpus"], tmp_path)
    else:
        got = checkpoint_results(art, built["corpus"], tmp_path)
    base = built["base"][case.artefact]
    for command, result in got.items():
        if result is None:
            continue  # failed with one line: right for any damage
        if command == "teach":
            summary, values = result
            assert summary == base[command][0], f"{what}: {command} gave other numbers"
            assert_same_store(values, base[command][1])
        else:
            assert result == base[command], (
                f"{what}: {command} succeeded with other numbers:\n{result}\nvs\n{base[command]}"
            )


def test_the_undamaged_artefacts_pass_every_command(built: dict[str, Any]) -> None:
    """The baselines the cases compare with are successes, so that a damaged artefact that
    fails cannot hide behind an undamaged one that failed too."""
    for artefact, results in built["base"].items():
        for command, result in results.items():
            assert result is not None, f"{artefact}: {command} fails undamaged"
