"""No command destroys its input, replaces an artefact of another kind, duplicates work,
records a rule it then fails on, or loses a committed part without a word (issue 17)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
from typer.testing import CliRunner

from kdpipe.cli.main import app
from kdpipe.errors import ConfigError, StoreError, StoreIntegrityError
from kdpipe.store.reader import StoreReader
from kdpipe.store.verify import verify_store
from kdpipe.store.writer import StoreWriter
from kdpipe.testing.stores import random_utterances, small_meta, write_store
from kdpipe.testing.teachers import make_teacher, teacher_corpus


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def refused(r, *fragments):
    assert r.exit_code in (1, 2) and isinstance(r.exception, SystemExit), r.output
    assert "Traceback" not in r.output
    for f in fragments:
        assert f in " ".join(r.output.split()), r.output


@pytest.fixture
def store(tmp_path):
    """A 3-part store of 12 utterances."""
    meta = small_meta()
    path = tmp_path / "S.zarr"
    write_store(path, meta, random_utterances(meta, 12, seed=1), part_frames=60)
    return path


def one_line_error(r, *fragments):
    """``r`` failed with exit code 1 and one line ``error: ...`` holding every fragment."""
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), r.output
    for f in fragments:
        assert f in " ".join(r.output.split()), r.output


def parts_of(path):
    return sorted(p.name for p in (path / "parts").iterdir() if p.is_dir())


# -- case 1: store copy onto or into its source ---------------------------------------------
def test_copy_onto_its_source_is_refused(store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    link = tmp_path / "link.zarr"
    link.symlink_to(store)
    before = parts_of(store)
    for dst in ("./S.zarr", store, f"{store}/../S.zarr", link, store / "inner.zarr"):
        r = cli("store", "copy", "S.zarr", dst, "--overwrite")
        refused(r, "the output", "the input")
        assert parts_of(store) == before and not (store / "inner.zarr").exists()
    assert verify_store(store).utterances == 12


# -- case 2: --overwrite replaces only what the command makes ------------------------------
def test_overwrite_replaces_only_its_own_kind(store, tmp_path):
    fs = teacher_corpus(tmp_path / "feats.zarr", per_split={"train": 2, "dev": 1})
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "card.json").write_text("{}")
    # teach over its own corpus, over a checkpoint folder; copy over a feature store
    r = cli("teach", "--no-progress", "--model", ckpt, "--corpus", fs.location,
            "--out", fs.location, "--overwrite")  # fmt: skip
    refused(r, "the input")
    r = cli("store", "copy", store, fs.location, "--overwrite")
    refused(r, "holds a feature store", "--overwrite replaces only a target store")
    r = cli("store", "copy", store, ckpt, "--overwrite")
    refused(r, "holds a checkpoint folder")
    with pytest.raises(ConfigError, match="holds a feature store"):
        StoreWriter(fs.location, small_meta(), overwrite=True)
    assert (tmp_path / "feats.zarr" / "zarr.json").is_file() and (ckpt / "card.json").is_file()
    # prepare over a target store
    r = cli("corpus", "prepare", tmp_path / "nowhere", "--out", store, "--overwrite")
    refused(r, "holds a target store")
    assert verify_store(store).utterances == 12
    # a target store over a target store is what --overwrite is for
    r = cli("store", "copy", store, tmp_path / "T.zarr")
    assert r.exit_code == 0, r.output
    r = cli("store", "copy", store, tmp_path / "T.zarr", "--overwrite")
    assert r.exit_code == 0 and "copied 3 parts" in r.output, r.output
    # --overwrite through a symbolic link (to a store of the right kind): refused, kept
    link = tmp_path / "link.zarr"
    link.symlink_to(tmp_path / "T.zarr")
    r = cli("store", "copy", store, link, "--overwrite")
    refused(r, "is a symbolic link", "does not delete through links")
    r = cli("corpus", "prepare", tmp_path / "nowhere", "--out", link, "--overwrite")
    refused(r, "is a symbolic link")
    assert verify_store(tmp_path / "T.zarr").utterances == 12


# -- case 3: overlapping writers -------------------------------------------------------------
def test_copy_into_a_store_that_has_the_utterances_adds_nothing(store, tmp_path):
    dst = tmp_path / "D.zarr"
    assert cli("store", "copy", store, dst).exit_code == 0
    meta = small_meta()
    again = tmp_path / "again.zarr"  # same utterances, other part ids
    write_store(again, meta, random_utterances(meta, 12, seed=1), part_frames=60)
    r = cli("store", "copy", again, dst)
    assert r.exit_code == 0 and "copied 0 parts" in r.output, r.output
    rep = verify_store(dst)
    assert rep.ok and rep.utterances == 12, rep.errors


def test_writer_drops_what_another_writer_committed_meanwhile(tmp_path):
    meta = small_meta()
    utts = random_utterances(meta, 6, seed=2)
    path = tmp_path / "S.zarr"
    a = StoreWriter(path, meta, shard="a")
    b = StoreWriter(path, meta, shard="b")
    for w in (a, b):
        for utt_id, kw in utts.items():
            assert w.add(utt_id, **kw)
    a.close()
    b.close()  # commits nothing: a committed every utterance first
    assert b.parts_written == [] and b.dropped_at_commit == 6
    assert len(StoreReader(path).ids) == 6 and verify_store(path).ok


def test_second_writer_of_a_shard_is_refused_and_a_dead_ones_lock_taken_over(tmp_path):
    meta = small_meta()
    path = tmp_path / "S.zarr"
    script = textwrap.dedent(f"""
        import sys, time
        from kdpipe.store.writer import StoreWriter
        from kdpipe.testing.stores import small_meta
        w = StoreWriter({str(path)!r}, small_meta(), shard="shard0of1")
        print("locked", flush=True)
        time.sleep(float(sys.argv[1]))
    """)
    holder = subprocess.Popen([sys.executable, "-c", script, "30"], stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"locked"
        with pytest.raises(StoreError, match=f"being written by pid {holder.pid}"):
            StoreWriter(path, meta, shard="shard0of1")
        StoreWriter(path, meta, shard="shard1of2").close()  # other work goes on
    finally:
        holder.kill()
        holder.wait()
        assert holder.stdout is not None
        holder.stdout.close()
    lock = path / "locks" / "shard0of1" / "zarr.json"
    assert json.loads(lock.read_text())["attributes"]["kdpipe.lock"]["pid"] == holder.pid
    StoreWriter(path, meta, shard="shard0of1").close()  # a dead process's lock
    assert not lock.exists()


def test_a_store_with_an_utterance_twice_is_not_resumed(store):
    part = parts_of(store)[0]
    twin = store / "parts" / f"{part}x"
    shutil.copytree(store / "parts" / part, twin)
    rec = json.loads((twin / "zarr.json").read_text())
    rec["attributes"]["kdpipe.part"]["part"] = twin.name
    (twin / "zarr.json").write_text(json.dumps(rec))
    with pytest.raises(StoreIntegrityError, match="twice"):
        StoreWriter(store, small_meta())


# -- case 8: a bad rule creates nothing --------------------------------------------------------
@pytest.mark.parametrize(
    "flags",
    [["--threshold", "0"], ["--topk", "0"], ["--mass", "1.5"], ["--sample", "0"], ["yaml"]],
)
def test_a_bad_rule_is_refused_before_the_store_exists(tmp_path, flags):
    fs = teacher_corpus(tmp_path / "feats.zarr", per_split={"train": 2, "dev": 1})
    ckpt = tmp_path / "ckpt"
    (ckpt).mkdir()
    model = ckpt
    if flags == ["yaml"]:
        model = tmp_path / "ens.yaml"
        model.write_text(
            f"members:\n  - checkpoint: {ckpt}\nrule: {{name: topk, params: {{k: 0}}}}\n"
        )
        flags = []
    out = tmp_path / "out.zarr"
    r = cli("teach", "--no-progress", "--model", model, "--corpus", fs.location, "--out", out,
            *flags)  # fmt: skip
    refused(r, "rule")
    assert not out.exists()


# -- case 9: lost parts are told ---------------------------------------------------------------
@pytest.mark.parametrize("damage", ["part", "record"])
def test_a_lost_part_fails_verify_and_reading(store, damage):
    part = store / "parts" / parts_of(store)[1]
    if damage == "part":
        shutil.rmtree(part)
    else:
        (part / "zarr.json").unlink()
    r = cli("store", "verify", store)
    assert r.exit_code == 1 and "FAILED" in r.output, r.output
    what = "is missing" if damage == "part" else "lost its record"
    assert f"part {part.name} was committed (commit log) but {what}" in r.output, r.output
    with pytest.raises(StoreIntegrityError, match="committed part"):
        StoreReader(store)
    refused(cli("store", "inspect", store), "committed part")


def test_verify_says_what_it_could_not_check(store):
    r = cli("store", "verify", store)
    assert r.exit_code == 0 and "not checked: coverage" in r.output, r.output
    shutil.rmtree(store / "commits")  # the log lost: the root record says there was one
    r = cli("store", "verify", store)
    assert r.exit_code == 1 and "the commit log (commits/zarr.json) is missing" in r.output
    root = json.loads((store / "zarr.json").read_text())
    del root["attributes"]["kdpipe.store"]["commit_log"]  # a store written before the log
    (store / "zarr.json").write_text(json.dumps(root))
    r = cli("store", "verify", store)
    assert r.exit_code == 0 and "no commit log" in r.output, r.output


# -- case 7: numbers are range-checked where parsed --------------------------------------------
@pytest.mark.parametrize(
    "args",
    [
        ["copy", "{s}", "{t}", "--chunk-rows", "0"],
        ["copy", "{s}", "{t}", "--chunk-rows", "-5"],
        ["verify", "{s}", "--frame-tolerance", "-1"],
        ["diff", "{s}", "{s}", "--max-frames", "0"],
        ["inspect", "{s}", "--max-frames", "0"],
    ],
)
def test_store_numbers_out_of_range_are_refused(store, tmp_path, args):
    t = tmp_path / "T.zarr"
    r = cli("store", *(a.format(s=store, t=t) for a in args))
    one_line_error(r, args[-2], f"got {args[-1]}")
    assert not t.exists()


def test_teach_numbers_out_of_range_are_refused(tmp_path):
    for flag in ("--batch-frames", "--part-frames"):
        r = cli("teach", "--model", tmp_path, "--corpus", tmp_path, "--out", tmp_path / "o",
                flag, "0")  # fmt: skip
        one_line_error(r, f"{flag} must be >= 1, got 0")
        assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("flag", ["--subsampling", "--part-frames", "--threads"])
def test_import_numbers_out_of_range_are_refused(tmp_path, flag):
    r = cli("store", "import", tmp_path, "--out", tmp_path / "o", "--corpus", tmp_path,
            "--kind", "logits", flag, "0")  # fmt: skip
    one_line_error(r, f"{flag} must be >= 1, got 0")
    assert not (tmp_path / "o").exists()


def test_library_range_checks(store, tmp_path):
    from kdpipe.store.diff import diff_stores
    from kdpipe.store.transfer import copy_store

    with pytest.raises(ConfigError):
        copy_store(store, tmp_path / "T.zarr", chunk_rows=0)
    with pytest.raises(ConfigError):
        verify_store(store, frame_tolerance=-1)
    with pytest.raises(ConfigError):
        diff_stores(store, store, max_frames=0)
    assert not (tmp_path / "T.zarr").exists() and os.path.isdir(store)


@pytest.mark.slow
def test_two_teach_processes_leave_each_utterance_once(tmp_path):
    """Two identical teach commands at once: one writes, the other is refused or adds
    nothing; the store holds every utterance once."""
    fs = teacher_corpus(tmp_path / "feats.zarr", per_split={"train": 4, "dev": 1})
    ckpt = make_teacher(tmp_path / "dnn", fs, "dnn", seed=2)
    out = tmp_path / "S.zarr"
    cmd = [sys.executable, "-m", "kdpipe", "teach", "--no-progress", "--model", str(ckpt),
           "--corpus", fs.location, "--out", str(out), "--device", "cpu",
           "--topk", "2"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
             for _ in range(2)]  # fmt: skip
    outs = [p.communicate(timeout=120)[0].decode() for p in procs]
    for p, text in zip(procs, outs, strict=True):
        assert "Traceback" not in text, text
        assert p.returncode == 0 or "being written by" in text, text
    rep = verify_store(out, corpus_ids=[u for u in fs.ids if u.startswith("train")])
    assert rep.ok and rep.utterances == 4, (rep.errors, outs)
