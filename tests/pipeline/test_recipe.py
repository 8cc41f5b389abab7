"""Recipe files: sizes, seeds, references, seeded stages, and clear errors for bad ones."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kdpipe.errors import ConfigError
from kdpipe.pipeline import load_recipe

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted(p.parent for p in (ROOT / "pipelines").glob("*/pipeline.yaml"))

BASE = {
    "name": "t",
    "vars": {"n": 10, "seeds": [0, 1]},
    "sizes": {"small": {"n": 2, "seeds": [5]}},
    "stages": [
        {"name": "corpus", "synth": {"task": "phones", "num_utts": "${n}"}},
        {"name": "feats", "prepare": {"corpus": "corpus"}},
        {"name": "teacher", "learn": {"corpus": "feats", "student": "dnn"}},
        {"name": "student", "learn": {"corpus": "feats", "student": "dnn", "seeds": True}},
        {"name": "again", "teach": {"corpus": "feats", "model": "student"}},
    ],
    "results": {"rows": [{"label": "T", "stage": "teacher"}]},
}


def write(tmp_path: Path, data: dict) -> Path:
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump(data))
    return tmp_path


def test_shipped_recipes_load_at_every_size():
    assert {p.name for p in RECIPES} >= {
        "rnn_to_dnn", "dark_knowledge_lstm", "essence_ensemble",
        "progressive_label_distillation", "storage_budget",
    }  # fmt: skip
    for p in RECIPES:
        data = yaml.safe_load((p / "pipeline.yaml").read_text())
        for size in ["full", *data.get("sizes", {})]:
            r = load_recipe(p, size)
            assert r.rows and r.claims, p


def test_sizes_seeds_and_seeded_stages(tmp_path):
    d = write(tmp_path, BASE)
    full, small = load_recipe(d), load_recipe(d, "small")
    assert full.stages[0].options["num_utts"] == 10 and full.seeds == (0, 1)
    assert small.stages[0].options["num_utts"] == 2 and small.seeds == (5,)
    assert load_recipe(d, "small", seeds=[1, 2, 3]).seeds == (1, 2, 3)
    seeded = {s.name: s.seeded for s in full.stages}
    # a stage reading a seeded stage is seeded too
    assert seeded == {
        "corpus": False,
        "feats": False,
        "teacher": False,
        "student": True,
        "again": True,
    }
    assert full.stage("again").refs == ("feats", "student")


@pytest.mark.parametrize(
    "change, msg",
    [
        (
            lambda d: d["stages"].append({"name": "x", "learn": {"corpus": "nope"}}),
            "not defined before",
        ),
        (
            lambda d: d["stages"].append({"name": "feats", "prepare": {"corpus": "corpus"}}),
            "comes earlier",
        ),
        (
            lambda d: d["stages"].append({"name": "x", "learn": {"corpus": "feats", "lr": 1}}),
            r"unknown learn option",
        ),
        (lambda d: d["stages"].append({"name": "x", "prepare": {}, "learn": {}}), "exactly one of"),
        (lambda d: d["stages"].append({"name": "x", "teach": {"corpus": "feats"}}), "model"),
        (
            lambda d: d["stages"].append({"name": "x y", "prepare": {"corpus": "corpus"}}),
            "names are",
        ),
        (
            lambda d: d["results"]["rows"].append({"label": "x", "stage": "zzz"}),
            "unknown stage 'zzz'",
        ),
        (
            lambda d: d["results"].update(claims=[{"text": "t", "better": "a"}]),
            "text, better, than",
        ),
        (lambda d: d.update(extra=1), "expected a mapping with keys"),
        (lambda d: d["sizes"]["small"].update(undeclared=1), "undeclared vars"),
        (lambda d: d["vars"].update(seeds="0,1"), "seeds must be a list of integers"),
    ],
)
def test_bad_recipes(tmp_path, change, msg):
    import copy

    data = copy.deepcopy(BASE)
    change(data)
    with pytest.raises(ConfigError, match=msg):
        load_recipe(write(tmp_path, data))


def test_missing_recipe_and_unknown_size(tmp_path):
    with pytest.raises(ConfigError, match="no recipe at"):
        load_recipe(tmp_path / "nothing")
    with pytest.raises(ConfigError, match="no size 'huge'"):
        load_recipe(write(tmp_path, BASE), "huge")


def test_every_key_and_option_is_documented():
    from kdpipe.pipeline.recipe import KINDS, OPTIONS, TOP_KEYS

    doc = (ROOT / "docs" / "recipes.md").read_text()
    for key in TOP_KEYS:
        assert f"| `{key}` |" in doc, key
    for kind in KINDS:
        row = next(line for line in doc.splitlines() if line.startswith(f"| `{kind}` |"))
        for opt in OPTIONS[kind]:
            assert f"`{opt}`" in row, (kind, opt)
    for name in RECIPES:
        assert f"| `{name.name}` |" in doc, name
