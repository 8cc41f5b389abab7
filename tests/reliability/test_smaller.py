"""The smaller cases of issue 17: a float WAV far outside [-1, 1], teach's summary after a
resume or a race, ``verify --split all``, Kaldi files that are not UTF-8 (or carry a BOM),
reproducible HMM model bytes, ``store seal`` of a missing path, a ``teach --ids`` file that
is not UTF-8."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from kdpipe.cli.main import app
from kdpipe.corpus.featstore import FeatureStore
from kdpipe.store.reader import StoreReader
from kdpipe.testing.corpora import make_kaldi_dir
from kdpipe.testing.teachers import make_teacher, teacher_corpus


def cli(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


def one_line_error(r, *fragments: str) -> None:
    """``r`` failed with exit code 1 and one line ``error: ...`` holding every fragment."""
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), r.output
    text = " ".join(r.output.split())
    for fragment in fragments:
        assert fragment in text, r.output


# -- a float WAV of integer samples -----------------------------------------------------------
def test_float_wav_far_outside_unit_range_warns_once_naming_file_and_peak(tmp_path):
    """A float WAV peaking at ~300 (int samples stored as float) is read as it is, with one
    warning per file (two segments of one recording here) naming the file and its peak;
    a float WAV inside [-1, 1] gives none."""
    src = make_kaldi_dir(tmp_path / "k", splits=None, segments=True, alignment=None)
    rec = src / "wav" / "all-rec.wav"
    wave, rate = sf.read(str(rec), dtype="float32")
    peak = float(np.abs(wave * 700).max())
    sf.write(str(rec), wave * 700, rate, subtype="FLOAT")
    r = cli("corpus", "prepare", src, "--out", tmp_path / "f.zarr", "--jobs", "1")
    assert r.exit_code == 0, r.output
    warnings = [line for line in r.output.splitlines() if line.startswith("warning:")]
    text = " ".join(r.output.split())
    assert len(warnings) == 1 and "all-rec.wav" in warnings[0], r.output
    assert f"peak {peak:g}" in text and "as they are" in text, r.output
    assert len(FeatureStore.open(tmp_path / "f.zarr")) == 2

    sf.write(str(rec), wave, rate, subtype="FLOAT")  # inside [-1, 1]: no word
    r = cli("corpus", "prepare", src, "--out", tmp_path / "g.zarr", "--jobs", "1")
    assert r.exit_code == 0 and "warning" not in r.output, r.output


# -- Kaldi text files: not UTF-8, or with a BOM ------------------------------------------------
@pytest.mark.parametrize("name", ["text", "utt2spk", "segments", "wav.scp"])
def test_kaldi_file_not_utf8_is_one_line_naming_the_file(tmp_path, name):
    src = make_kaldi_dir(tmp_path / "k", splits=None, segments=True, alignment=None)
    path = src / name
    lines = path.read_bytes().splitlines(keepends=True)
    lines[-1] = lines[-1].rstrip(b"\n") + b" caf\xe9\n"  # latin-1, not UTF-8
    path.write_bytes(b"".join(lines))
    r = cli("corpus", "prepare", src, "--out", tmp_path / "f.zarr")
    one_line_error(r, f"{path}:{len(lines)}: not UTF-8 text (byte 0xe9")
    assert not (tmp_path / "f.zarr").exists()


@pytest.mark.parametrize("name", ["text", "utt2spk", "segments", "wav.scp"])
def test_kaldi_file_with_utf8_bom_is_read(tmp_path, name):
    src = make_kaldi_dir(tmp_path / "k", splits=None, segments=True, alignment=None)
    path = src / name
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    r = cli("corpus", "prepare", src, "--out", tmp_path / "f.zarr", "--jobs", "1")
    assert r.exit_code == 0, r.output
    fs = FeatureStore.open(tmp_path / "f.zarr")
    assert sorted(zip(fs.ids, fs.speakers, strict=True)) == [
        ("all-spk0-u0", "spk0"), ("all-spk1-u1", "spk1")]  # fmt: skip


# -- teach's summary after a resume, and what another writer had first ------------------------
@pytest.fixture(scope="module")
def taught(tmp_path_factory):
    d = tmp_path_factory.mktemp("taught")
    fs = teacher_corpus(d / "feats.zarr", per_split={"train": 6, "dev": 2}, frames=(20, 30))
    return fs, make_teacher(d / "dnn", fs, "dnn", seed=2)


def teach_json(fs, ckpt, out, *extra: object) -> dict:
    r = cli("teach", "--model", ckpt, "--corpus", fs.location, "--out", out, "--topk", "2",
            "--device", "cpu", "--no-progress", "--batch-frames", "60", *extra)  # fmt: skip
    assert r.exit_code == 0, r.output
    return json.loads(r.output.strip().splitlines()[-1])


def test_teach_summary_after_a_resume_reports_the_store_total(taught, tmp_path):
    fs, ckpt = taught
    out = tmp_path / "S.zarr"
    first = teach_json(fs, ckpt, out, "--shard", "0/2", "--json")  # half, as a killed run
    n0 = first["utterances"]
    assert 0 < n0 < 6 and first["before"] == 0 and first["total"] == n0
    again = teach_json(fs, ckpt, out, "--json")
    assert (again["before"], again["skipped"]) == (n0, n0)
    assert again["utterances"] == 6 - n0 and again["dropped"] == 0
    assert again["total"] == len(StoreReader(out)) == 6
    line = cli("teach", "--model", ckpt, "--corpus", fs.location, "--out", out, "--topk", "2",
               "--device", "cpu", "--no-progress")  # fmt: skip
    text = " ".join(line.output.split())
    assert "0 utterances written (6 already there), the store holds 6 (6 before" in text, text


def test_teach_counts_utterances_another_writer_committed_first_apart(
    taught, tmp_path, monkeypatch
):
    """Another writer (a real ``store copy`` of the same targets) commits every utterance
    while teach computes them: teach writes nothing and says so."""
    import kdpipe.teach.run as run
    from kdpipe.store.transfer import copy_store
    from kdpipe.store.writer import StoreWriter

    fs, ckpt = taught
    ref, out = tmp_path / "ref.zarr", tmp_path / "S.zarr"
    teach_json(fs, ckpt, ref, "--json")

    class Raced(StoreWriter):
        def flush(self):  # the other writer commits just before this one
            if self._buf and not self.parts_written:
                copy_store(ref, out)
            return super().flush()

    monkeypatch.setattr(run, "StoreWriter", Raced)
    done = teach_json(fs, ckpt, out, "--json")
    assert (done["utterances"], done["dropped"], done["parts"]) == (0, 6, 0)
    assert done["before"] == 0 and done["total"] == 6 == len(StoreReader(out))


# -- store verify --split all ------------------------------------------------------------------
def test_verify_split_all_means_the_whole_corpus(taught, tmp_path):
    fs, ckpt = taught
    store = tmp_path / "S.zarr"
    assert teach_json(fs, ckpt, store, "--split", "all", "--json")["total"] == len(fs)
    r = cli("store", "verify", store, "--corpus", fs.location, "--split", "all")
    assert r.exit_code == 0 and f"OK {store}" in " ".join(r.output.split()), r.output
    r = cli("store", "verify", store, "--corpus", fs.location, "--split", "train")
    assert r.exit_code == 1 and "FAILED" in r.output, r.output  # the dev utterances


# -- store seal of a path that holds no store ------------------------------------------------
def test_seal_of_no_store_is_one_line_naming_the_path_and_creates_nothing(tmp_path):
    missing, empty = tmp_path / "missing.zarr", tmp_path / "empty"
    empty.mkdir()
    one_line_error(cli("store", "seal", missing), f"store not found: {missing}")
    assert not missing.exists()  # opening it for writing made the folder
    one_line_error(cli("store", "seal", empty), f"no store at {empty}: no zarr.json")
    assert list(empty.iterdir()) == []


def test_teach_ids_file_not_utf8_is_one_line_and_a_bom_is_dropped(taught, tmp_path):
    fs, ckpt = taught
    ids = tmp_path / "ids.txt"
    ids.write_bytes(b"\xef\xbb\xbf" + "".join(f"{u}\n" for u in fs.ids[:2]).encode())
    done = teach_json(fs, ckpt, tmp_path / "S.zarr", "--ids", ids, "--json")
    assert done["utterances"] == 2 and sorted(StoreReader(tmp_path / "S.zarr").ids) == sorted(
        fs.ids[:2]
    )
    ids.write_bytes(b"caf\xe9\n")
    r = cli("teach", "--model", ckpt, "--corpus", fs.location, "--out", tmp_path / "T.zarr",
            "--ids", ids, "--device", "cpu")  # fmt: skip
    one_line_error(r, f"{ids}:1: not UTF-8 text (byte 0xe9 at offset 3)")
    assert not (tmp_path / "T.zarr").exists()
