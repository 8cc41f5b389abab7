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


REGIMES = {
    **BASE,
    "vars": {**BASE["vars"], "labels": "true", "align": False, "from": "corpus"},
    "regimes": {"aligned": {"labels": "aligned", "align": True, "from": "ali", "n": 7}},
    "stages": [
        {"name": "corpus", "synth": {"task": "phones", "num_utts": "${n}", "labels": "${labels}"}},
        {"name": "ali", "when": "${align}", "align": {"corpus": "corpus"}},
        {"name": "feats", "prepare": {"corpus": "${from}"}},
        {"name": "teacher", "learn": {"corpus": "feats", "student": "dnn",
                                      "eval": {"truth": "corpus"}}},
    ],
}  # fmt: skip


def test_regimes_set_vars_before_the_size_and_when_drops_stages(tmp_path):
    d = write(tmp_path, REGIMES)
    plain, aligned = load_recipe(d), load_recipe(d, regime="aligned")
    assert [s.name for s in plain.stages] == ["corpus", "feats", "teacher"]
    assert [s.name for s in aligned.stages] == ["corpus", "ali", "feats", "teacher"]
    assert plain.stage("feats").refs == ("corpus",) and aligned.stage("feats").refs == ("ali",)
    assert aligned.stage("corpus").options["labels"] == "aligned" and aligned.regime == "aligned"
    assert aligned.stages[0].options["num_utts"] == 7  # the regime's value
    small = load_recipe(d, "small", regime="aligned")
    assert small.stages[0].options["num_utts"] == 2  # ... and the size's over it
    assert aligned.stage("teacher").refs == ("feats", "corpus")  # eval.truth reads a stage


@pytest.mark.parametrize(
    ("change", "msg"),
    [
        ({"regimes": {"x": {"nope": 1}}}, "regime x sets undeclared vars"),
        ({"stages": [{"name": "c", "when": "maybe", "synth": {"task": "phones"}}]},
         "when must be true or false"),
    ],
)  # fmt: skip
def test_bad_regimes_and_when_are_one_line(tmp_path, change, msg):
    with pytest.raises(ConfigError, match=msg):
        load_recipe(write(tmp_path, {**REGIMES, **change}), regime="")
    with pytest.raises(ConfigError, match="no regime 'fast'; regimes: aligned"):
        load_recipe(write(tmp_path, REGIMES), regime="fast")


def test_regime_of_a_shipped_recipe_has_its_own_work_directory(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from kdpipe.cli.main import app

    monkeypatch.chdir(tmp_path)  # the default work directory is relative: exp/...
    recipe = str(ROOT / "pipelines" / "essence_ensemble")
    args = ["run", recipe, "--regime", "aligned", "--size", "small", "--dry-run"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "exp/essence_ensemble-aligned-small/aligned" in result.output.replace("\n", "")
