"""Configs, numbers and file-system errors (issue 17, cases 7, 10, 11, 12 and the smaller
learn/checkpoint items): each bad input is one line naming the file, the key or the flag
and the cause, never a traceback, never a silently different run."""

from __future__ import annotations

import errno
import json
import os
import pathlib
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from kdpipe.cli.main import app
from kdpipe.errors import ConfigError, LabelSetError
from kdpipe.labels import LabelSet
from kdpipe.learn.trainer import LAST_STATE
from kdpipe.models import build_model, make_card, save_checkpoint
from kdpipe.models.checkpoint import WEIGHTS_FILE
from kdpipe.pipeline import load_recipe, plan
from kdpipe.schema import load_yaml
from kdpipe.teach import load_ensemble
from kdpipe.testing.corpora import make_feature_store
from kdpipe.testing.teachers import make_teacher, teacher_corpus

TINY = ["--student", "dnn", "-m", "hidden_dim=8", "-m", "num_layers=1", "--epochs", "1",
        "-s", "num_threads=1", "-s", "batch_frames=400"]  # fmt: skip
ROOT_USER = hasattr(os, "geteuid") and os.geteuid() == 0  # root ignores permissions


def cli(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


def one_line_error(r, *fragments: str) -> str:
    """``r`` failed with exit code 1 and one line ``error: ...`` holding every fragment."""
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), r.output  # no traceback
    text = " ".join(r.output.split())
    for fragment in fragments:
        assert fragment in text, r.output
    return text


def learn_config(tmp_path: Path, config: Path):
    """``kdpipe learn --config CONFIG`` on a corpus that is not there (read after it)."""
    return cli(
        "learn", "--corpus", tmp_path / "none.zarr", "--out", tmp_path / "o", "--config", config
    )


@pytest.fixture(scope="module")
def feats(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("feats") / "feats.zarr"
    make_feature_store(path, num_mel_bins=8, per_split={"train": 4, "dev": 2, "test": 2})
    return path


# -- case 10: duplicate keys and types ------------------------------------------------------


def test_duplicate_yaml_key_is_refused_by_every_loader(tmp_path):
    """``train:`` twice used to keep the last one silently (epochs 50 replaced epochs 1)."""
    dup = tmp_path / "learn.yaml"
    dup.write_text("student: dnn\ntrain:\n  epochs: 1\ntrain:\n  epochs: 50\n")
    r = learn_config(tmp_path, dup)
    one_line_error(r, str(dup), "duplicate key 'train'", "line 4", "first at line 2")
    nested = tmp_path / "ensemble.yaml"
    nested.write_text("members:\n  - {checkpoint: a, weight: 1, weight: 2}\n")
    with pytest.raises(ConfigError, match=r"ensemble.yaml: duplicate key 'weight' at line 2"):
        load_ensemble(nested)
    recipe = tmp_path / "recipe"
    recipe.mkdir()
    (recipe / "pipeline.yaml").write_text("name: a\nstages: []\nname: b\n")
    with pytest.raises(ConfigError, match=r"pipeline.yaml: duplicate key 'name' at line 3"):
        load_recipe(recipe)
    anchors = tmp_path / "anchors.yaml"  # merge keys are not duplicates
    anchors.write_text("base: &b {lr: 0.1}\ntrain:\n  <<: *b\n  epochs: 2\n")
    assert load_yaml(anchors)["train"] == {"lr": 0.1, "epochs": 2}


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["-s", "lr=nan"], ["train: lr must be a finite number, got nan"]),
        (["-s", "lr=inf"], ["train: lr must be a finite number, got inf"]),
        (["-s", "epochs=ten"], ["train: epochs must be an integer, got 'ten'"]),
        (["-s", "spec_augment=3"], ["train: spec_augment must be true or false, got 3"]),
        (["-s", "patience=1.5"], ["train: patience must be an integer, got 1.5"]),
        (["--targets", "t.zarr", "-k", "alpha=high"], ["kd: alpha must be a number"]),
    ],
)
def test_type_errors_name_the_key(tmp_path, feats, args, fragments):
    """Used to read "'>' not supported between instances of 'str' and 'int'"."""
    r = cli("learn", "--corpus", feats, "--out", tmp_path / "o",
            "--student", "dnn", *args)  # fmt: skip
    one_line_error(r, *fragments)


def test_type_error_in_a_config_file_names_the_file(tmp_path):
    config = tmp_path / "learn.yaml"
    config.write_text(yaml.safe_dump({"student": "dnn", "train": {"lr": [0.1]}}))
    r = learn_config(tmp_path, config)
    one_line_error(r, f"{config}: train: lr must be a number, got [0.1]")
    config.write_text(yaml.safe_dump({"student": "dnn", "targets": [{"path": "t", "weight": "x"}]}))
    r = learn_config(tmp_path, config)
    one_line_error(r, str(config), "weight must be a finite number > 0, got 'x'")


def test_recipe_type_error_names_the_stage(tmp_path):
    recipe = tmp_path / "recipe"
    recipe.mkdir()
    stages = [
        {"name": "corpus", "synth": {"task": "phones", "num_utts": "${utts}", "num_voices": 10}},
        {"name": "feats", "prepare": {"corpus": "corpus"}},
        {"name": "m", "learn": {"corpus": "feats", "student": "dnn", "train": {"epochs": "two"}}},
    ]
    file = recipe / "pipeline.yaml"
    file.write_text(yaml.safe_dump({"name": "t", "vars": {"utts": "two"}, "stages": stages}))
    with pytest.raises(ConfigError, match=r"stage 'corpus': synth phones: num_utts must be an"):
        plan(load_recipe(recipe), tmp_path / "work")
    file.write_text(yaml.safe_dump({"name": "t", "vars": {"utts": 3}, "stages": stages}))
    r = cli("run", recipe, "--dry-run", "--workdir", tmp_path / "work")
    one_line_error(r, f"{file}: stage 'm'", "train: epochs must be an integer, got 'two'")
    assert not (tmp_path / "work" / "corpus").exists()  # refused before anything ran


# -- case 12 (second half): malformed config files -----------------------------------------


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"student: dnn\nmodel: [1, 2, 3]\n", "model must be a mapping, got [1, 2, 3]"),
        (b"student: dnn\ntrain: 3\n", "train must be a mapping, got 3"),
        (b"student: dnn\n# \xff\n", "not UTF-8 text"),
        (b"student: dnn\ntrain: {lr: 1\n", "not valid YAML"),
    ],
)
def test_malformed_config_is_one_line_naming_the_file(tmp_path, content, fragment):
    config = tmp_path / "learn.yaml"
    config.write_bytes(content)
    r = learn_config(tmp_path, config)
    one_line_error(r, str(config), fragment)


# -- case 7: every number of learn and eval is range-checked where it is parsed ------------


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--targets", "t.zarr", "--weight", "-1"], "--weight must be > 0, got -1"),
        (["--targets", "t.zarr", "--weight", "nan"], "--weight must be a finite number, got nan"),
        (["--targets", "t.zarr", "--alpha", "2"], "--alpha must be in [0, 1], got 2"),
        (["--targets", "t.zarr", "--temperature", "0"], "--temperature must be > 0, got 0"),
        (["--epochs", "0"], "--epochs must be >= 1, got 0"),
        (["--seed", "-3"], "--seed must be >= 0, got -3"),
        (["--view-ms", "nan"], "--view-ms must be a finite number, got nan"),
        (["--view-ms", "100", "--view-offset-ms", "-5"], "--view-offset-ms must be >= 0"),
    ],
)
def test_learn_numbers_name_the_flag(tmp_path, args, fragment):
    r = cli("learn", "--corpus", tmp_path / "none.zarr", "--out", tmp_path / "o",
            "--student", "dnn", *args)  # fmt: skip
    one_line_error(r, fragment)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--jobs", "0"], "--jobs must be >= 1, got 0"),
        (["--beam", "nan"], "--beam must be a finite number, got nan"),
        (["--acoustic-scale", "-1"], "--acoustic-scale must be > 0, got -1"),
        (["--view-ms", "0"], "--view-ms must be > 0, got 0"),
    ],
)
def test_eval_numbers_name_the_flag(tmp_path, args, fragment):
    r = cli("eval", "--model", tmp_path / "m", "--corpus", tmp_path / "none.zarr", *args)
    one_line_error(r, fragment)


# -- case 11: file-system errors at the one boundary ---------------------------------------


def test_out_that_is_a_file(tmp_path, feats):
    file = tmp_path / "taken"
    file.write_text("mine\n")
    r = cli("learn", "--corpus", feats, "--out", file, *TINY)
    one_line_error(r, f"--out {file} is a file")
    r = cli("learn", "--corpus", feats, "--out", file / "sub", *TINY)
    one_line_error(r, f"{file / 'sub'}", "not a directory (errno 20")
    fs = teacher_corpus(tmp_path / "t.zarr", per_split={"train": 2, "test": 2})
    model = make_teacher(tmp_path / "model", fs, "dnn")
    r = cli("eval", "--model", model, "--corpus", tmp_path / "t.zarr", "--out", file)
    one_line_error(r, str(file), "(errno 17")
    assert file.read_text() == "mine\n"


def test_full_disk_is_one_line_naming_the_path(tmp_path, feats, monkeypatch):
    """ENOSPC on the first write of learn (its run record), simulated in-process."""
    real = pathlib.Path.write_text

    def full(self, *args, **kwargs):
        if self.name == "run.json":
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "write_text", full)
    out = tmp_path / "o"
    r = cli("learn", "--corpus", feats, "--out", out, *TINY)
    one_line_error(r, f"{out / 'run.json'}: no space left on device (errno 28, ENOSPC)")


@pytest.mark.skipif(ROOT_USER, reason="root ignores file permissions")
def test_read_only_output_dir(tmp_path, feats):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        r = cli("learn", "--corpus", feats, "--out", parent / "o", *TINY)
        one_line_error(r, str(parent / "o"), "permission denied (errno 13")
    finally:
        parent.chmod(0o755)


def test_os_error_reading_store_json_is_not_called_bad_json(tmp_path, monkeypatch):
    """Only a real decode error says "not readable JSON"; the disk's error keeps its cause."""
    import zarr.storage

    from kdpipe.store.arrayio import read_json_many

    (tmp_path / "zarr.json").write_text("{}")
    store = zarr.storage.LocalStore(tmp_path)

    async def unreadable(self, key, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path / key))

    monkeypatch.setattr(zarr.storage.LocalStore, "get", unreadable)
    with pytest.raises(OSError, match="Read-only file system") as caught:
        read_json_many(store, ["zarr.json"])
    assert caught.value.errno == errno.EROFS


# -- the smaller items ---------------------------------------------------------------------


def test_failed_learn_does_not_block_the_corrected_command(tmp_path, feats):
    out = tmp_path / "o"
    r = cli("learn", "--corpus", feats, "--out", out, *TINY, "-s", "lr=1e30", "-s", "grad_clip=0")
    one_line_error(r, "loss is nan")
    assert not (out / WEIGHTS_FILE).exists()  # failed before its first checkpoint
    r = cli("learn", "--corpus", feats, "--out", out, *TINY)
    assert r.exit_code == 0, r.output
    assert (out / WEIGHTS_FILE).is_file()
    assert json.loads((out / "run.json").read_text())["train"]["lr"] == 2e-3
    r = cli("learn", "--corpus", feats, "--out", out, *TINY)  # a finished run is kept
    one_line_error(r, "already holds a training run")


def test_resume_without_state(tmp_path, feats):
    """``--resume`` with ``last.pt`` gone refuses when a checkpoint is there (retraining would
    replace it) and says so when there is nothing at all (a rerun of a killed command)."""
    out = tmp_path / "o"
    assert cli("learn", "--corpus", feats, "--out", out, *TINY).exit_code == 0
    (out / LAST_STATE).unlink()
    weights = (out / WEIGHTS_FILE).read_bytes()
    r = cli("learn", "--corpus", feats, "--out", out, *TINY, "--resume")
    one_line_error(r, f"--resume: {out} holds a checkpoint but no last.pt")
    assert (out / WEIGHTS_FILE).read_bytes() == weights
    fresh = tmp_path / "fresh"
    r = cli("learn", "--corpus", feats, "--out", fresh, *TINY, "--resume")
    assert r.exit_code == 0, r.output
    assert f"--resume: no last.pt in {fresh}: nothing to resume" in " ".join(r.output.split())


def test_weights_bytes_are_reproducible(tmp_path):
    """safetensors wrote its metadata in hash-map order: same weights, different sha256."""
    import torch

    fs = make_feature_store(None, num_mel_bins=8)
    torch.manual_seed(0)
    model = build_model("dnn", 8, len(fs.labels), {"hidden_dim": 8, "num_layers": 1})
    card = make_card(model, labels=fs.labels, features=fs.config)
    hashes = {save_checkpoint(tmp_path / "c", model, card).weights_sha256 for _ in range(12)}
    assert len(hashes) == 1
    data = (tmp_path / "c" / WEIGHTS_FILE).read_bytes()
    header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
    assert list(header["__metadata__"]) == ["architecture", "format"]


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"a 0\nb 1\na 2\n", "duplicate labels in label set: ['a']"),
        (b"a\n\xff\xfe\n", "not UTF-8 text"),
    ],
)
def test_label_file_errors_name_the_file(tmp_path, content, fragment):
    path = tmp_path / "labels.txt"
    path.write_bytes(content)
    with pytest.raises(LabelSetError) as caught:
        LabelSet.read(path)
    assert str(caught.value).startswith(f"{path}:") and fragment in str(caught.value)


def test_label_file_with_a_bom(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_bytes(b"\xef\xbb\xbfsil\na\n")
    assert LabelSet.read(path).names == ("sil", "a")


@pytest.mark.parametrize(
    ("code", "cause"),
    [(errno.ENOSPC, "no space left on device"), (errno.EROFS, "read-only file system")],
)
def test_disk_errors_of_prepare_and_teach_are_one_line(tmp_path, monkeypatch, code, cause):
    """A full or read-only disk under zarr's writes (simulated at zarr's LocalStore, as
    root ignores permissions): one line naming the chunk path and the cause."""
    import zarr.storage

    from kdpipe.testing.corpora import make_speech_commands

    clips = make_speech_commands(tmp_path / "sc", seconds=0.2)
    corpus = teacher_corpus(tmp_path / "tc.zarr")
    teacher = make_teacher(tmp_path / "teacher", corpus, "dnn")

    async def failing(self, key, value, *args, **kwargs):
        raise OSError(code, os.strerror(code), str(Path(str(self.root)) / key))

    monkeypatch.setattr(zarr.storage.LocalStore, "set", failing)
    r = cli("corpus", "prepare", clips, "--out", tmp_path / "p.zarr")
    one_line_error(r, str(tmp_path / "p.zarr"), f"{cause} (errno {code}")
    r = cli("teach", "--model", teacher, "--corpus", corpus.location, "--out",
            tmp_path / "S.zarr", "--topk", "2", "--no-progress")  # fmt: skip
    one_line_error(r, str(tmp_path / "S.zarr"), f"{cause} (errno {code}")
