"""``kdpipe teach`` from the command line: the example ensemble.yaml, shards, bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from kdpipe.cli.main import app
from kdpipe.store.reader import StoreReader
from kdpipe.teach import load_ensemble
from kdpipe.testing.stores import assert_same_store, store_values
from kdpipe.testing.teachers import LABELS, make_teacher, teacher_corpus

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "pipelines" / "examples" / "ensemble.yaml"
ARCH = {"phones-blstm": "blstm", "phones-dnn": "dnn", "phones-tdnn": "tdnn"}


def invoke(*args: str):
    return CliRunner().invoke(app, ["teach", "--no-progress", *map(str, args)])


def one_line_error(r, *fragments: str) -> None:
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), r.output  # one line, no traceback
    for f in fragments:
        assert f in " ".join(r.output.split()), r.output


def test_example_ensemble_runs(tmp_path):
    """The documented example, copied with checkpoints where its relative paths point."""
    labels = tuple(f"p{i}" for i in range(12))
    fs = teacher_corpus(tmp_path / "feats.zarr", labels=labels, per_split={"train": 4, "dev": 2})
    where = tmp_path / "pipelines" / "examples"
    where.mkdir(parents=True)
    shutil.copy(EXAMPLE, where / "ensemble.yaml")
    ens = load_ensemble(where / "ensemble.yaml")
    for k, m in enumerate(ens.members):
        make_teacher(Path(m.checkpoint), fs, ARCH[Path(m.checkpoint).name], labels=labels, seed=k)
    out = tmp_path / "targets.zarr"
    r = invoke("--model", where / "ensemble.yaml", "--corpus", fs.location, "--out", out)
    assert r.exit_code == 0, r.output
    assert "4 utterances" in r.output and "bytes/frame" in r.output and "accuracy" in r.output
    s = StoreReader(out)
    assert s.meta.members == ("phones-blstm", "phones-dnn", "phones-tdnn")
    assert s.meta.rule.to_dict() == {"name": "topk", "params": {"k": 8}}
    assert s.meta.subsampling == 2 and s.meta.hard_labels == ("frame",)
    verify = ["store", "verify", str(out), "--corpus", fs.location]
    v = CliRunner().invoke(app, [*verify, "--split", "train"])
    assert v.exit_code == 0 and "OK" in v.output, v.output
    v = CliRunner().invoke(app, verify)  # the dev split was not labelled
    assert v.exit_code == 1 and "2 corpus utterance(s) missing" in v.output, v.output


def test_cli_shards_make_the_same_store(tmp_path, corpus, teachers):
    common = ["--model", teachers["dnn"], "--corpus", corpus.location, "--mass", "0.9",
              "--batch-frames", "80"]  # fmt: skip
    one, two = tmp_path / "one.zarr", tmp_path / "two.zarr"
    assert invoke(*common, "--out", one).exit_code == 0
    for i in (1, 0):
        r = invoke(*common, "--out", two, "--shard", f"{i}/2")
        assert r.exit_code == 0 and f"shard {i}/2" in r.output, r.output
    assert_same_store(store_values(one), store_values(two))
    assert StoreReader(two).meta.rule.name == "cumulative"


def test_ids_file_selects_utterances(tmp_path, corpus, teachers):
    ids = tmp_path / "ids.txt"
    ids.write_text("dev-u1\ntrain-u3\n")
    out = tmp_path / "s.zarr"
    r = invoke("--model", teachers["dnn"], "--corpus", corpus.location, "--out", out,
               "--ids", ids, "--full")  # fmt: skip
    assert r.exit_code == 0, r.output
    s = StoreReader(out)
    assert sorted(s.ids) == ["dev-u1", "train-u3"] and s.meta.rule.name == "full"
    assert s.meta.extra["teach"]["selection"]["ids"] == 2


def _yaml(tmp_path: Path, data: dict) -> Path:
    p = tmp_path / "ens.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


@pytest.mark.parametrize(
    ("data", "fragments"),
    [
        ({"members": [{"checkpoint": "X", "weigth": 2}]}, ["unknown key(s) 'weigth'"]),
        ({"members": ["X"], "combne": "mean-prob"}, ["unknown key(s) 'combne'"]),
        ({"members": ["does-not-exist"]}, ["member 0", "checkpoint directory not found"]),
        ({"members": ["X"], "combine": "median"}, ["combine must be one of"]),
        ({"members": ["X", "SUB"]}, ["member 1", "label"]),
        ({"members": ["X"], "view": {"length_ms": 5000}}, ["crop window", "longer than"]),
        ({"members": ["X"], "rule": {"name": "topk", "params": {"n": 3}}}, ["topk takes"]),
    ],
)
def test_bad_input_fails_before_work(tmp_path, corpus, teachers, data, fragments):
    def fix(m):
        return {"X": str(teachers["blstm"]), "SUB": str(teachers["subset"])}.get(m, m)

    for k, m in enumerate(data["members"]):
        if isinstance(m, str):
            data["members"][k] = fix(m)
        else:
            m["checkpoint"] = fix(m["checkpoint"])
    out = tmp_path / "s.zarr"
    r = invoke("--model", _yaml(tmp_path, data), "--corpus", corpus.location, "--out", out)
    one_line_error(r, *fragments)
    assert not out.exists()  # refused before any work


def test_nan_member_names_the_utterance(tmp_path, corpus):
    broken = make_teacher(tmp_path / "broken", corpus, "dnn", nan=True)
    out = tmp_path / "s.zarr"
    r = invoke("--model", broken, "--corpus", corpus.location, "--out", out, "--topk", "2")
    one_line_error(r, "NaN or infinite logits for utterance train-u", "member broken")


def test_rule_flags(tmp_path, corpus, teachers):
    base = ["--corpus", corpus.location, "--out", tmp_path / "s.zarr"]
    r = invoke("--model", teachers["dnn"], *base, "--topk", "2", "--full")
    one_line_error(r, "at most one of")
    r = invoke("--model", EXAMPLE, *base, "--topk", "2")
    one_line_error(r, "come from the file")
    r = invoke("--model", teachers["dnn"], *base, "--topk", str(len(LABELS) + 1))
    one_line_error(r, "topk k=6 > 5 labels")


def test_clip_teacher(tmp_path):
    """An utterance-level teacher on a clip corpus: one row per clip, clip hard labels."""
    fs = teacher_corpus(tmp_path / "clips.zarr", task="clip", per_split={"train": 6})
    ck = make_teacher(tmp_path / "cnn", fs, "cnn")
    out = tmp_path / "s.zarr"
    r = invoke("--model", ck, "--corpus", fs.location, "--out", out, "--topk", "2")
    assert r.exit_code == 0, r.output
    s = StoreReader(out)
    assert s.meta.levels == ("utt",) and s.meta.hard_labels == ("utt",)
    b = s.read(list(fs.ids))
    np.testing.assert_array_equal(b.hard_utt, fs.clip_labels)
    assert b.utt.indices.shape == (6, 2)


def test_threads_sets_torchs_threads_and_refuses_a_negative_count(tmp_path):
    import torch

    fs = teacher_corpus(tmp_path / "feats.zarr")
    teacher = make_teacher(tmp_path / "t", fs, "dnn")
    before = torch.get_num_threads()
    try:
        r = invoke("--model", teacher, "--corpus", fs.location, "--out", tmp_path / "s.zarr",
                   "--topk", "2", "--threads", "1")  # fmt: skip
        assert r.exit_code == 0, r.output
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    one_line_error(invoke("--model", teacher, "--corpus", fs.location, "--out",
                          tmp_path / "x.zarr", "--threads", "-1"), "--threads")  # fmt: skip
