"""lhotse manifests (CutSets, recordings + supervisions) as transcribed corpora, with audio
or lhotse-stored features, from manifests lhotse itself writes, checked against lhotse's
own reads. lhotse is an optional extra that the dev extras install."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import lhotse
import numpy as np
import pytest
from typer.testing import CliRunner

from kdpipe.cli.main import app
from kdpipe.corpus.featstore import FeatureStore
from kdpipe.corpus.features import FbankConfig, compute_fbank
from kdpipe.corpus.prepare import prepare_corpus
from kdpipe.corpus.readers import detect_format, read_corpus
from kdpipe.errors import AudioError, CorpusError
from kdpipe.testing.corpora import make_lhotse_corpus


def prepare(src, out, **kw):
    return prepare_corpus(src, out, jobs=1, progress=False, **kw)


def rewrite(path, edit):
    """Read a CutSet with lhotse, ``edit`` each cut (None drops it), write it back."""
    cuts = [edit(cut) for cut in lhotse.CutSet.from_file(path)]
    lhotse.CutSet.from_cuts([cut for cut in cuts if cut is not None]).to_file(path)


def test_cutset_with_audio_equals_lhotse_reads(tmp_path, monkeypatch):
    root = make_lhotse_corpus(tmp_path / "lh")
    assert detect_format(root) == "lhotse"
    corpus = read_corpus(root)
    assert (corpus.task, corpus.labels, corpus.external, corpus.format) == (
        "transcribed",
        None,
        None,
        "lhotse",
    )
    summary = prepare(root, tmp_path / "s.zarr")
    fs = FeatureStore.open(summary.location)
    assert fs.task == "transcribed" and fs.external is None and len(fs) == 9
    monkeypatch.chdir(root)  # the manifests' paths are relative to it, as lhotse reads them
    cfg = FbankConfig()
    for split in ("train", "dev", "test"):
        for cut in lhotse.CutSet.from_file(f"cuts_{split}.jsonl.gz"):
            i = fs.index_of(cut.id)
            (sup,) = cut.supervisions
            assert (fs.texts[i], fs.speakers[i], fs.splits[i]) == (sup.text, sup.speaker, split)
            want = compute_fbank(cut.load_audio()[0], cfg)  # (C, S) -> mono
            got = fs.raw_features(i)
            assert abs(len(got) - len(want)) <= 1  # lhotse and soundfile round a sample apart
            n = min(len(got), len(want))
            np.testing.assert_allclose(got[:n], want[:n], rtol=1e-5, atol=1e-4)
            assert fs.durations[i] == pytest.approx(cut.duration, abs=1e-3)


def test_cutset_with_stored_features(tmp_path, monkeypatch):
    root = make_lhotse_corpus(tmp_path / "lh", features=True)
    fs = FeatureStore.open(prepare(root, tmp_path / "s.zarr").location)
    ext = fs.external
    assert ext is not None and (ext["kind"], ext["dim"]) == ("lhotse", 40)
    assert ext["config"] == {"type": "kaldi-fbank", "frame_shift": 0.01, "sampling_rate": 16000}
    assert set(ext["source"]) == {"train", "dev", "test"}
    assert set(ext["source"]["dev"]) == {"cuts_dev.jsonl.gz"}
    assert (fs.config.num_mel_bins, fs.config.frame_shift_ms, fs.config.sample_rate) == (
        40,
        10.0,
        16000,
    )
    monkeypatch.chdir(root)
    for split in ("train", "dev", "test"):
        for cut in lhotse.CutSet.from_file(f"cuts_{split}.jsonl.gz"):
            i = fs.index_of(cut.id)
            np.testing.assert_array_equal(fs.raw_features(i), cut.load_features())
            assert fs.texts[i] == cut.supervisions[0].text
    audio = FeatureStore.open(prepare(root, tmp_path / "a.zarr", feature_source="audio").location)
    assert audio.external is None and audio.ids == fs.ids and audio.fingerprint != fs.fingerprint


def test_recordings_and_supervisions_give_the_cutset_utterances(tmp_path):
    """A pair is cut as lhotse cuts it (one cut per supervision, its id): the same
    utterances as the CutSet form of the same corpus."""
    pair = read_corpus(make_lhotse_corpus(tmp_path / "pair", form="pair"))
    cuts = read_corpus(make_lhotse_corpus(tmp_path / "cuts"))
    strip = [replace(u, audio=None) for u in pair.utterances]
    assert strip == [replace(u, audio=None) for u in cuts.utterances]
    assert pair.utterances[0].start == pytest.approx(0.05)
    assert all(u.audio and u.audio.endswith(".wav") for u in pair.utterances)


def test_single_manifest_takes_the_split(tmp_path):
    root = make_lhotse_corpus(tmp_path / "lh", splits=None, per_split=2)
    manifest = root / "cuts.jsonl.gz"
    assert detect_format(manifest) == "lhotse"
    assert read_corpus(manifest, split="dev").splits() == {"dev": 2}
    assert read_corpus(root, split="test").splits() == {"test": 2}


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: replace(c, supervisions=[]), r"cut {cut}: no supervision"),
        (
            lambda c: replace(
                c,
                supervisions=[
                    *c.supervisions,
                    replace(c.supervisions[0], id="extra", start=c.supervisions[0].start + 0.1),
                ],
            ),
            r"cut {cut}: supervisions {cut} and extra overlap",
        ),
        (
            lambda c: replace(c, supervisions=[replace(c.supervisions[0], text=" ")]),
            r"cut {cut}: supervision {cut} has an empty transcript",
        ),
        (
            lambda c: replace(
                c,
                supervisions=[
                    c.supervisions[0],
                    replace(
                        c.supervisions[0], id="other", start=c.duration, speaker="someone-else"
                    ),
                ],
            ),
            r"cut {cut}: supervisions of several speakers",
        ),
    ],
)
def test_bad_cuts(tmp_path, edit, message):
    root = make_lhotse_corpus(tmp_path / "lh")
    bad = "dev-spk1-u1"
    rewrite(root / "cuts_dev.jsonl.gz", lambda cut: edit(cut) if cut.id == bad else cut)
    with pytest.raises(CorpusError, match=r"cuts_dev\.jsonl\.gz: " + message.format(cut=bad)):
        read_corpus(root)
    summary = prepare(root, tmp_path / "s.zarr", skip_bad=True)
    assert summary.num_utterances == 8 and [u for u, _ in summary.skipped] == [bad]
    assert FeatureStore.open(summary.location).skipped[0][0] == bad


def test_audio_kdpipe_cannot_read_as_a_file(tmp_path):
    root = make_lhotse_corpus(tmp_path / "lh")
    bad = "train-spk0-u0"
    rewrite(
        root / "cuts_train.jsonl.gz",
        lambda cut: replace(cut, recording=cut.recording.resample(8000)) if cut.id == bad else cut,
    )
    with pytest.raises(AudioError, match=rf"cut {bad}: recording train-rec0 has lhotse transforms"):
        read_corpus(root)
    (root / "wav" / "dev-rec1.wav").unlink()
    corpus = read_corpus(root, skip_bad=True)
    assert [u for u, _ in corpus.skipped] == [bad, "dev-spk1-u1"]
    assert "audio file not found: wav/dev-rec1.wav" in corpus.skipped[1][1]


def test_features_of_another_kind(tmp_path):
    root = make_lhotse_corpus(tmp_path / "lh", features=True)
    bad = "test-spk0-u2"

    def edit(cut):
        return (
            replace(cut, features=replace(cut.features, num_features=80)) if cut.id == bad else cut
        )

    rewrite(root / "cuts_test.jsonl.gz", edit)
    with pytest.raises(CorpusError, match=rf"cut {bad}: features with num_features 80, but 40"):
        read_corpus(root)


def test_manifests_lhotse_cannot_read(tmp_path):
    root = make_lhotse_corpus(tmp_path / "lh")
    (root / "cuts_dev.jsonl.gz").write_bytes(b"not gzip at all")
    with pytest.raises(CorpusError, match=r"cuts_dev\.jsonl\.gz: lhotse cannot read it as cuts"):
        read_corpus(root)
    pair = make_lhotse_corpus(tmp_path / "pair", form="pair", splits=["train"])
    (pair / "recordings_train.jsonl.gz").rename(pair / "cuts_train.jsonl.gz")
    with pytest.raises(CorpusError, match=r"not a manifest of cuts: it holds a Recording"):
        read_corpus(pair)
    (pair / "cuts_train.jsonl.gz").rename(pair / "recordings_dev.jsonl.gz")
    with pytest.raises(CorpusError, match=r"supervisions manifest without its recordings"):
        read_corpus(pair)
    twice = make_lhotse_corpus(tmp_path / "twice", splits=["train"])
    (twice / "more_cuts_train.jsonl.gz").write_bytes((twice / "cuts_train.jsonl.gz").read_bytes())
    with pytest.raises(CorpusError, match=r"several cuts manifests for split 'train'"):
        read_corpus(twice)


def test_supervision_of_an_unknown_recording(tmp_path):
    root = make_lhotse_corpus(tmp_path / "pair", form="pair", splits=["train"])
    sups = lhotse.SupervisionSet.from_file(root / "supervisions_train.jsonl.gz")
    orphan = replace(next(iter(sups)), id="orphan", recording_id="nowhere")
    lhotse.SupervisionSet.from_segments([*sups, orphan]).to_file(
        root / "supervisions_train.jsonl.gz"
    )
    with pytest.raises(CorpusError, match=r"supervision orphan: recording 'nowhere' is not in"):
        read_corpus(root)
    assert [u for u, _ in read_corpus(root, skip_bad=True).skipped] == ["orphan"]


def test_lhotse_is_imported_lazily_and_missing_is_one_line(tmp_path, monkeypatch):
    code = (
        "import sys, kdpipe.corpus.readers, kdpipe.corpus.prepare; print('lhotse' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    root = make_lhotse_corpus(tmp_path / "lh", splits=["train"], per_split=1)
    monkeypatch.setitem(sys.modules, "lhotse", None)  # import lhotse now raises ImportError
    with pytest.raises(CorpusError, match=r"needs lhotse: pip install 'kdpipe\[lhotse\]'"):
        read_corpus(root)


def test_cli_prepare_and_info(tmp_path):
    root = make_lhotse_corpus(tmp_path / "lh", features=True)
    store = str(tmp_path / "s.zarr")
    runner = CliRunner()
    r = runner.invoke(app, ["corpus", "prepare", str(root), "-o", store, "-j", "1"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["corpus", "info", store])
    assert r.exit_code == 0, r.output
    assert "transcribed corpus" in r.output and "external (lhotse: dim=40" in r.output
