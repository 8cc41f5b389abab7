"""Damaged and non-finite input (issue 17, cases 4, 5, 6, 12): every chunk of a feature
store is CRC-checked on read and every array's sha256 by ``kdpipe corpus verify``; a
truncated wav, NaN features and an impossible filterbank are one-line errors; a NaN score
is never printed as a result."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import soundfile as sf
import zarr
from typer.testing import CliRunner
from zarr.codecs import ZstdCodec

from kdpipe.cli.main import app
from kdpipe.corpus.featarrays import ARRAYS_ATTR, array_paths
from kdpipe.corpus.featstore import FeatureStore
from kdpipe.corpus.features import FbankConfig
from kdpipe.corpus.prepare import prepare_corpus
from kdpipe.errors import AudioError, ConfigError, CorpusError, ModelError, StoreIntegrityError
from kdpipe.learn.evaluate import evaluate_checkpoint
from kdpipe.testing.corpora import make_feature_store, make_hdf5_archive, make_speech_commands
from kdpipe.testing.teachers import make_teacher, teacher_corpus

runner = CliRunner()


def _read_everything(fs: FeatureStore) -> None:
    for i in range(len(fs)):
        fs.features(i)
        if fs.task == "frame":
            fs.frame_labels(i)
    fs.read_utterances(np.arange(len(fs)))


def _chunk(store: Path, path: str) -> Path:
    """The one chunk file of array ``path`` (the tiny stores here have one per array)."""
    files = sorted((store / path / "c").rglob("*"))
    return next(f for f in files if f.is_file())


@pytest.fixture
def fs_path(tmp_path) -> Path:
    path = tmp_path / "fs.zarr"
    make_feature_store(path, per_split={"train": 6, "dev": 2}, num_mel_bins=8)
    return path


@pytest.mark.parametrize(
    "array", ["feats", "frame_labels", "offsets", "ids/utf8", "split", "cmvn/mean"]
)
def test_one_flipped_byte_in_any_chunk_is_a_one_line_error_naming_store_and_array(fs_path, array):
    chunk = _chunk(fs_path, array)
    raw = bytearray(chunk.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    chunk.write_bytes(bytes(raw))
    with pytest.raises(StoreIntegrityError) as err:
        _read_everything(FeatureStore.open(fs_path))
    msg = str(err.value)
    assert str(fs_path) in msg and f"array {array}" in msg and "\n" not in msg
    r = runner.invoke(app, ["corpus", "verify", str(fs_path)])
    assert r.exit_code == 1 and f"array {array}" in r.output and "Traceback" not in r.output


def test_thirty_random_bit_flips_are_all_caught(fs_path):
    """The issue's experiment: of 30 random bit flips in chunk files, none may read as
    data (16 did) nor escape as a zstd traceback (4 did)."""
    rng = np.random.default_rng(17)
    files = sorted(f for f in fs_path.rglob("c/**/*") if f.is_file())
    for k in range(30):
        chunk = files[int(rng.integers(len(files)))]
        good = chunk.read_bytes()
        raw = bytearray(good)
        raw[int(rng.integers(len(raw)))] ^= 1 << int(rng.integers(8))
        chunk.write_bytes(bytes(raw))
        with pytest.raises(StoreIntegrityError):
            _read_everything(FeatureStore.open(fs_path))
        chunk.write_bytes(good)
        assert k or FeatureStore.open(fs_path).checksummed


def test_verify_passes_a_sound_store_and_checks_every_digest(fs_path):
    r = runner.invoke(app, ["corpus", "verify", str(fs_path)])
    assert r.exit_code == 0 and "OK" in r.output and "8 utterances" in r.output
    assert "sha256 checked" in r.output
    # a chunk replaced by another valid chunk (its CRC right): only the digest sees it
    doc = json.loads((fs_path / "zarr.json").read_text())
    rec = doc["attributes"][ARRAYS_ATTR]["feats"]
    rec["sha256"] = "0" * 64
    (fs_path / "zarr.json").write_text(json.dumps(doc))
    r = runner.invoke(app, ["corpus", "verify", str(fs_path)])
    assert r.exit_code == 1 and "array feats: sha256 differs" in r.output


def test_verify_reports_offsets_that_disagree_with_the_frames(fs_path):
    """Rewritten consistently (valid CRC and digest), offsets that end past the features."""
    group = zarr.open_group(fs_path, mode="r+")
    offsets = group["offsets"][:]
    offsets[-1] += 5
    group["offsets"][:] = offsets
    with pytest.raises(StoreIntegrityError, match="array offsets"):
        FeatureStore.open(fs_path)
    r = runner.invoke(app, ["corpus", "verify", str(fs_path)])
    assert r.exit_code == 1 and "array offsets" in r.output


def _legacy_copy(src: Path, dst: Path) -> None:
    """``src`` as stores were written before checksums: zstd chunks, no record."""
    old = zarr.open_group(src, mode="r")
    attrs = old.attrs.asdict()
    attrs.pop(ARRAYS_ATTR)
    new = zarr.open_group(dst, mode="w", zarr_format=3)
    for path in array_paths(attrs, lambda name: name in old):
        arr = old[path]
        new.create_array(path, data=arr[:], chunks=arr.chunks, compressors=ZstdCodec(level=3))
    new.attrs.update(attrs)


def test_a_store_written_before_checksums_opens_and_verify_says_so(fs_path, tmp_path):
    legacy = tmp_path / "old.zarr"
    _legacy_copy(fs_path, legacy)
    fs, new = FeatureStore.open(legacy), FeatureStore.open(fs_path)
    assert not fs.checksummed and fs.fingerprint == new.fingerprint
    np.testing.assert_array_equal(fs.features(3), new.features(3))
    r = runner.invoke(app, ["corpus", "verify", str(legacy)])
    assert r.exit_code == 0 and "no checksums" in r.output
    chunk = _chunk(legacy, "feats")  # zstd's own damage: one line, no traceback
    chunk.write_bytes(chunk.read_bytes()[: len(chunk.read_bytes()) // 2])
    with pytest.raises(StoreIntegrityError, match="array feats"):
        _read_everything(FeatureStore.open(legacy))


def test_a_truncated_wav_is_bad_audio(tmp_path):
    root = make_speech_commands(tmp_path / "sc", per_speaker=1, seconds=1.0)
    wav = sorted((root / "yes").glob("*.wav"))[0]
    raw = wav.read_bytes()
    wav.write_bytes(raw[: 44 + (len(raw) - 44) // 2])  # the header still claims 1 s
    assert sf.info(str(wav)).frames == 8000  # libsndfile reads what is there
    with pytest.raises(AudioError, match=rf"{wav.name} is truncated: its header says 16000"):
        prepare_corpus(root, tmp_path / "a.zarr", jobs=1, progress=False)
    s = prepare_corpus(root, tmp_path / "b.zarr", jobs=1, skip_bad=True, progress=False)
    assert len(s.skipped) == 1 and "truncated" in s.skipped[0][1]
    assert set(FeatureStore.open(tmp_path / "b.zarr").num_frames) == {98}


def test_nan_features_in_an_hdf5_archive_are_bad_input(tmp_path):
    h5 = make_hdf5_archive(tmp_path / "a.h5", per_split={"train": 4, "dev": 2}, num_mel_bins=8)
    with h5py.File(h5, "r+") as f:
        found: list[str] = []
        f.visititems(lambda k, d: found.append(k) if getattr(d, "ndim", 0) == 2 else None)
        key = sorted(found)[1]
        data = f[key][()]
        data[3, 2], data[5, 0] = np.nan, np.inf
        f[key][...] = data
    with pytest.raises(CorpusError, match=rf"utterance {key}: .*a.h5:{key}: .*NaN or infinite"):
        prepare_corpus(h5, tmp_path / "a.zarr", progress=False)
    r = runner.invoke(app, ["corpus", "prepare", str(h5), "--out", str(tmp_path / "c.zarr")])
    assert r.exit_code == 1 and "NaN or infinite" in r.output and "Traceback" not in r.output
    s = prepare_corpus(h5, tmp_path / "b.zarr", skip_bad=True, progress=False)
    fs = FeatureStore.open(tmp_path / "b.zarr")
    assert [u for u, _ in s.skipped] == [key] and key not in fs.ids
    assert np.isfinite(fs.cmvn_mean).all() and np.isfinite(fs.cmvn_std).all()


def test_a_nan_score_is_an_error_naming_the_model(tmp_path):
    fs = teacher_corpus(tmp_path / "fs.zarr")
    model = make_teacher(tmp_path / "m", fs, arch="dnn", nan=True)
    with pytest.raises(ModelError, match=rf"checkpoint {model}: cross-entropy nan"):
        evaluate_checkpoint(model, tmp_path / "fs.zarr", split="dev")
    r = runner.invoke(app, ["eval", "--model", str(model), "--corpus", str(tmp_path / "fs.zarr"),
                            "--split", "dev"])  # fmt: skip
    assert r.exit_code == 1 and "cross_entropy nan" not in r.output


def test_more_mel_bins_than_the_window_gives_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"num_mel_bins=500: a 25 ms window at 16000 Hz gives"):
        FbankConfig(num_mel_bins=500).check_computable()
    FbankConfig(num_mel_bins=126).check_computable()  # Kaldi's limit for 512-point FFTs
    with pytest.raises(ConfigError, match="3 to 126"):
        FbankConfig(num_mel_bins=127).check_computable()
    root = make_speech_commands(tmp_path / "sc", per_speaker=1, seconds=0.3)
    out = tmp_path / "f.zarr"
    r = runner.invoke(app, ["corpus", "prepare", str(root), "--out", str(out),
                            "--num-mel-bins", "500"])  # fmt: skip
    assert r.exit_code == 1 and "num_mel_bins=500" in r.output and "Traceback" not in r.output
    assert not out.exists()
