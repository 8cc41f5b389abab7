"""Waveform members: tiny random transformers models (kind ``huggingface``) taught over a
Kaldi corpus of real wav files, against the model run by hand on the audio; beside a
feature member; bad input. Nothing is downloaded: the models are built here."""

from __future__ import annotations

import functools
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from kdpipe.cli.main import app
from kdpipe.corpus.audio import load_audio
from kdpipe.corpus.featstore import FeatureStore
from kdpipe.corpus.prepare import prepare_corpus
from kdpipe.corpus.readers import read_corpus
from kdpipe.errors import ConfigError, KdpipeError, ModelError
from kdpipe.essence import Rule
from kdpipe.labels import LabelSet
from kdpipe.models import load_checkpoint
from kdpipe.models.checkpoint import file_sha256
from kdpipe.store.coding import quantization_step
from kdpipe.store.reader import StoreReader
from kdpipe.teach import EnsembleConfig, MemberConfig, single_teacher, teach
from kdpipe.teach import members as kinds
from kdpipe.teach.ensemble_yaml import InputConfig
from kdpipe.teach.members import huggingface
from kdpipe.testing.corpora import make_kaldi_dir, make_speech_commands
from kdpipe.testing.teachers import make_teacher

transformers = pytest.importorskip("transformers")

LABELS = ("sil", "a", "b")  # make_kaldi_dir's
TOP2 = Rule("topk", {"k": 2})
STEP = quantization_step("uint8") + 1e-4  # half a code, plus float noise of batching
WAVE = InputConfig(waveform=16000)
HEADS = {
    "ctc": "Wav2Vec2ForCTC",
    "frame": "Wav2Vec2ForAudioFrameClassification",
    "utt": "Wav2Vec2ForSequenceClassification",
}


def tiny_wav2vec2(
    out: Path, head: str, labels: tuple[str, ...], norm: str = "layer", seed: int = 0
) -> Path:
    """A randomly initialised wav2vec2 (hidden 16, one layer, 8 conv channels) with a
    ``head`` (ctc, frame, utt) over ``labels`` (its id2label), saved with its feature
    extractor's preprocessor_config.json. The head's weights are scaled up so that
    posteriors differ from frame to frame (a shifted frame mapping shows)."""
    config = transformers.Wav2Vec2Config(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        conv_dim=(8,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        feat_extract_norm=norm,
        vocab_size=len(labels),
        id2label=dict(enumerate(labels)),
        classifier_proj_size=8,
    )
    torch.manual_seed(seed)
    model = getattr(transformers, HEADS[head])(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith(("lm_head", "classifier", "projector")):
                p.mul_(40.0)
    transformers.utils.logging.disable_progress_bar()  # "Writing model shards" on stderr
    try:
        model.save_pretrained(str(out))
    finally:
        transformers.utils.logging.enable_progress_bar()
    transformers.Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16000, do_normalize=True,
        return_attention_mask=norm == "layer",
    ).save_pretrained(str(out))  # fmt: skip
    return out


@functools.cache
def saved_model(model_dir: Path) -> torch.nn.Module:
    """The saved model, loaded with its own class (not the Auto class kdpipe uses)."""
    arch = json.loads((model_dir / "config.json").read_text())["architectures"][0]
    net: torch.nn.Module = getattr(transformers, arch).from_pretrained(
        str(model_dir), local_files_only=True
    )
    return net.eval()


def by_hand(model_dir: Path, wave: np.ndarray) -> np.ndarray:
    """(T', C) (or (C,)) float64 log-softmax of the saved model on one utterance's
    samples, alone, normalised as Wav2Vec2FeatureExtractor does (numpy, not kdpipe's)."""
    x = (wave - wave.mean()) / np.sqrt(wave.var() + 1e-7)
    with torch.inference_mode():
        logits = saved_model(model_dir)(torch.from_numpy(x.astype(np.float32))[None]).logits[0]
    return torch.log_softmax(logits.double(), -1).numpy()


@pytest.fixture(scope="module")
def kaldi(tmp_path_factory):
    """A Kaldi data dir of 3 train utterances (40-80 frames of label tones, real wavs)
    and its feature store (10 ms frames, 25 ms window, frame labels sil/a/b)."""
    d = tmp_path_factory.mktemp("kaldi")
    root = make_kaldi_dir(d / "data", splits=("train",), utts_per_split=3, seed=3)
    prepare_corpus(root, d / "feats.zarr", jobs=1, progress=False)
    return root, FeatureStore.open(d / "feats.zarr")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("hf")
    return {
        "ctc": tiny_wav2vec2(d / "ctc", "ctc", LABELS, seed=1),
        "ctc-group": tiny_wav2vec2(d / "ctc-group", "ctc", LABELS, norm="group", seed=2),
        "frame": tiny_wav2vec2(d / "frame", "frame", LABELS, seed=3),
        "utt": tiny_wav2vec2(d / "utt", "utt", LABELS, seed=6),
        "utt-group": tiny_wav2vec2(d / "utt-group", "utt", LABELS, norm="group", seed=7),
    }


def waves(root: Path) -> dict[str, np.ndarray]:
    """Each utterance's (S,) samples at 16 kHz, read as prepare reads them."""
    return {
        u.id: load_audio(u.audio, 16000, u.start, u.end, u.id)  # type: ignore[arg-type]
        for u in read_corpus(root).utterances
    }


def stored(reader: StoreReader, uid: str, member: int | None = None) -> np.ndarray:
    """(T', C) log-probs of ``uid`` (the ensemble's, or member ``member``'s), dense."""
    block = reader.get(uid, members=member is not None)
    rows = block.frame if member is None else block.members_frame[member]
    assert rows is not None and rows.indices is None  # the full rule: dense rows
    return rows.logprobs()


def at_rate(lp: np.ndarray, frames: int, s: int) -> np.ndarray:
    """A 20 ms member's (T_m, C) log-probs at an ensemble subsampling ``s`` of the 10 ms
    corpus: as is (s = 2) or each frame twice (s = 1), cut or padded to ``frames``."""
    x = lp if s == 2 else np.repeat(lp, 2, axis=0)
    return np.concatenate([x, np.repeat(x[-1:], max(frames - len(x), 0), 0)])[:frames]


def hf(path: Path, **kw) -> MemberConfig:
    kw.setdefault("input", WAVE)
    return MemberConfig(kind="huggingface", path=str(path), **kw)


CASES = [("ctc", None), ("ctc", 1), ("ctc-group", None)]


@pytest.mark.parametrize(("model", "subsampling"), CASES)
def test_ctc_member_maps_20ms_frames_onto_the_corpus(tmp_path, kaldi, models, model, subsampling):
    """Every utterance, ceil(T / s) frames, and the model's own posteriors on the audio:
    at 20 ms (s = 2, the member's rate) or each frame repeated (s = 1). A layer-norm model
    runs batched with a mask, a group-norm one an utterance at a time: both equal the
    model on each utterance alone."""
    root, fs = kaldi
    ens = EnsembleConfig(
        members=(hf(models[model]),), rule=Rule("full", {}), subsampling=subsampling
    )
    out = tmp_path / "t.zarr"
    summary = teach(ens, fs.location, out, progress=False)
    r = StoreReader(out)
    s = subsampling or 2
    assert len(r) == summary.utterances == len(fs) == 3
    assert r.meta.subsampling == s and r.meta.frame_shift_ms == 10.0 * s
    assert r.label_set.names == LABELS
    teacher = r.meta.teachers[0]
    assert teacher.weights_sha256 == file_sha256(models[model] / "model.safetensors")
    assert teacher.card["frame_shift_ms"] == 20.0 and teacher.card["model_type"] == "wav2vec2"
    assert teacher.card["attention_mask"] == (model == "ctc")
    audio = waves(root)
    for i, uid in enumerate(fs.ids):
        frames = math.ceil(int(fs.num_frames[i]) / s)
        lp = by_hand(models[model], audio[uid])  # (T_m, C) at 20 ms
        assert len(lp) == math.ceil(int(fs.num_frames[i]) / 2)  # floor((S - 400) / 320) + 1
        got = stored(r, uid)
        assert got.shape == (frames, len(LABELS))
        want = at_rate(lp, frames, s)
        assert np.abs(got - np.maximum(want, -16)).max() <= STEP, uid
        shifted = at_rate(lp[1:], frames, s)  # one member frame late: must not pass
        assert np.abs(got - np.maximum(shifted, -16)).max() > 4 * STEP, uid
        np.testing.assert_array_equal(r.get(uid).hard_frame, fs.frame_labels(i)[::s])


def test_waveform_member_beside_a_feature_member(tmp_path, kaldi, models):
    """A wav2vec2 (20 ms, waveform) and a kdpipe dnn (10 ms, the corpus' features) in one
    ensemble: each member's stored rows are its own posteriors at the ensemble's 20 ms
    (the dnn's averaged in pairs), and the ensemble is their mean probability."""
    root, fs = kaldi
    dnn = make_teacher(tmp_path / "dnn", fs, "dnn", labels=LABELS, seed=5)
    ens = EnsembleConfig(
        members=(hf(models["ctc"], name="w2v"), MemberConfig(str(dnn))),
        rule=Rule("full", {}),
        keep_members=True,
    )
    out = tmp_path / "e.zarr"
    teach(ens, fs.location, out, progress=False, batch_frames=150)
    r = StoreReader(out)
    assert r.meta.subsampling == 2 and r.meta.members == ("w2v", "dnn")
    audio = waves(root)
    net, _ = load_checkpoint(dnn)
    for i, uid in enumerate(fs.ids):
        frames = math.ceil(int(fs.num_frames[i]) / 2)
        w2v = at_rate(by_hand(models["ctc"], audio[uid]), frames, 2)
        x = torch.from_numpy(fs.normalize(fs.features(i)))[None]
        with torch.inference_mode():
            logits, _ = net(x, torch.tensor([x.shape[1]]))
        p = torch.softmax(logits[0].double(), -1).numpy()  # (T, C) at 10 ms
        d = np.log(np.stack([p[j : j + 2].mean(0) for j in range(0, len(p), 2)]))
        assert np.abs(stored(r, uid, 0) - np.maximum(w2v, -16)).max() <= STEP
        assert np.abs(stored(r, uid, 1) - np.maximum(d, -16)).max() <= STEP
        mix = np.log((np.exp(w2v) + np.exp(d)) / 2)
        assert np.abs(stored(r, uid) - np.maximum(mix, -16)).max() <= STEP


def test_frame_classification_member_names_its_labels(tmp_path, kaldi, models):
    """*ForAudioFrameClassification: frame level at 20 ms, labels from id2label."""
    root, fs = kaldi
    declared = kinds.describe(hf(models["frame"]), "member 0", None)
    assert declared.labels.names == LABELS and declared.level == "frame"
    assert declared.card["labels_from"] == "id2label" and declared.frame_shift_ms == 20.0
    out = tmp_path / "f.zarr"
    teach(EnsembleConfig(members=(hf(models["frame"]),), rule=Rule("full", {})), fs.location, out,
          progress=False)  # fmt: skip
    r = StoreReader(out)
    audio = waves(root)
    for i, uid in enumerate(fs.ids):
        frames = math.ceil(int(fs.num_frames[i]) / 2)
        want = at_rate(by_hand(models["frame"], audio[uid]), frames, 2)
        assert np.abs(stored(r, uid) - np.maximum(want, -16)).max() <= STEP


def test_sequence_classification_member_on_clips(tmp_path):
    """*ForSequenceClassification on a Speech Commands corpus: one posterior per clip,
    the model's on the clip alone (batched with a mask over clips of equal length)."""
    root = make_speech_commands(tmp_path / "sc", labels=("no", "yes"), seconds=0.4)
    prepare_corpus(root, tmp_path / "feats.zarr", jobs=1, progress=False)
    fs = FeatureStore.open(tmp_path / "feats.zarr")
    model = tiny_wav2vec2(tmp_path / "kws", "utt", ("no", "yes"), seed=4)
    out = tmp_path / "u.zarr"
    ens = EnsembleConfig(members=(hf(model),), rule=Rule("full", {}))
    summary = teach(ens, fs.location, out, progress=False)
    r = StoreReader(out)
    train = fs.indices("train")
    assert summary.utterances == len(r) == len(train) and r.meta.levels == ("utt",)
    for i in train:
        uid = fs.ids[i]
        wave = load_audio(root / f"{uid}.wav", 16000)
        want = by_hand(model, wave)  # (C,)
        rows = r.get(uid).utt
        assert rows is not None and rows.logprobs().shape == (1, 2)
        assert np.abs(rows.logprobs()[0] - np.maximum(want, -16)).max() <= STEP


def test_padded_batch_equals_each_utterance_alone(models):
    """The network itself: utterances of different lengths in one padded batch give the
    frames (and lengths), or the clip posterior, each gives alone, batched with a mask
    (layer norm) or one at a time (group norm)."""
    rng = np.random.default_rng(0)
    lengths = [8000, 5000, 399]  # the last is shorter than one frame (400 samples)
    x = torch.zeros(3, 8000)
    for b, n in enumerate(lengths):
        x[b, :n] = torch.from_numpy(rng.standard_normal(n).astype(np.float32)) * 0.1
    for name in ("ctc", "ctc-group", "utt", "utt-group"):
        member = hf(models[name])
        network = kinds.load(member, kinds.describe(member, "m", None), torch.device("cpu"))
        out, out_lengths = network(x, torch.tensor(lengths))
        if name.startswith("utt"):
            assert out.shape == (3, 3) and out_lengths.tolist() == [1, 1, 1]
        else:
            assert out_lengths.tolist() == [24, 15, 1] == [lengths_frames(n) for n in lengths]
        for b, n in enumerate(lengths):
            alone, alone_len = network(x[b : b + 1, :n], torch.tensor([n]))
            if name.startswith("utt"):
                torch.testing.assert_close(out[b], alone[0], atol=1e-4, rtol=0)
                continue
            assert int(alone_len[0]) == lengths_frames(n)
            torch.testing.assert_close(out[b, : int(alone_len[0])], alone[0], atol=1e-4, rtol=0)


def lengths_frames(samples: int) -> int:
    return max(1, (max(samples, 400) - 400) // 320 + 1)


def test_labels_come_from_a_file_id2label_vocab_or_the_corpus(tmp_path, models):
    corpus = LabelSet(LABELS)
    d = tmp_path / "m"
    shutil.copytree(models["ctc"], d)
    config = json.loads((d / "config.json").read_text())
    config["id2label"] = {str(i): f"LABEL_{i}" for i in range(3)}  # generic: not names
    (d / "config.json").write_text(json.dumps(config))
    declared = kinds.describe(hf(d), "m", corpus)
    assert declared.labels == corpus and declared.card["labels_from"] == "corpus"
    (d / "vocab.json").write_text(json.dumps({"<pad>": 0, "|": 1, "e": 2}))
    declared = kinds.describe(hf(d), "m", corpus)
    assert declared.labels.names == ("<pad>", "|", "e")
    (tmp_path / "labels.txt").write_text("x\ny\nz\n")
    declared = kinds.describe(hf(d, labels=str(tmp_path / "labels.txt")), "m", corpus)
    assert declared.labels.names == ("x", "y", "z")
    (tmp_path / "two.txt").write_text("x\ny\n")
    with pytest.raises(ConfigError, match=r"m: labels .*two.txt has 2 labels, the model outputs 3"):
        kinds.describe(hf(d, labels=str(tmp_path / "two.txt")), "m", corpus)
    (d / "vocab.json").unlink()
    with pytest.raises(ConfigError, match=r"give labels:"):
        kinds.describe(hf(d), "m", LabelSet(("x", "y")))


def one_line(error: BaseException, *fragments: str) -> None:
    text = str(error)
    assert "\n" not in text and isinstance(error, KdpipeError), text
    for fragment in fragments:
        assert fragment in text, text


def test_bad_members_are_one_line_errors_before_inference(tmp_path, kaldi, models):
    _root, fs = kaldi
    out = tmp_path / "t.zarr"

    def fails(member: MemberConfig, error: type[Exception]) -> BaseException:
        with pytest.raises(error) as info:
            teach(EnsembleConfig(members=(member,), rule=TOP2), fs.location, out, progress=False)
        assert not out.exists()  # refused before anything was written
        return info.value

    e = fails(MemberConfig(kind="huggingface", path=str(models["ctc"])), ConfigError)
    one_line(e, "member 0 (ctc)", "reads the waveform", "input: {waveform: 16000}")
    e = fails(hf(models["ctc"], input=InputConfig(waveform=8000)), ConfigError)
    one_line(e, "member 0 (ctc)", "8000 Hz", "16000 Hz", "input: {waveform: 16000}")
    empty = tmp_path / "empty-model"
    empty.mkdir()
    one_line(fails(hf(empty), ModelError), "member 0 (empty-model)", "no config.json")
    one_line(fails(hf(tmp_path / "nowhere"), ModelError), "member 0 (nowhere)", "not a directory")
    custom = tmp_path / "custom"
    shutil.copytree(models["ctc"], custom)
    config = json.loads((custom / "config.json").read_text())
    (custom / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModel": "x.Y"}}))
    one_line(fails(hf(custom), ModelError), "member 0 (custom)", "auto_map")
    config["architectures"] = ["Wav2Vec2Model"]
    (custom / "config.json").write_text(json.dumps(config))
    one_line(fails(hf(custom), ModelError), "member 0 (custom)", "Wav2Vec2Model", "ForCTC")
    whisper = tmp_path / "whisper"
    shutil.copytree(models["ctc"], whisper)
    pre = json.loads((whisper / "preprocessor_config.json").read_text())
    pre["feature_extractor_type"] = "WhisperFeatureExtractor"
    (whisper / "preprocessor_config.json").write_text(json.dumps(pre))
    one_line(fails(hf(whisper), ConfigError), "member 0 (whisper)", "WhisperFeatureExtractor")
    (whisper / "model.safetensors").unlink()
    shutil.copy(models["ctc"] / "preprocessor_config.json", whisper)
    one_line(fails(hf(whisper), ModelError), "member 0 (whisper)", "no model.safetensors")


def test_waveform_input_whose_audio_moved(tmp_path, kaldi, models):
    """The corpus moved away: a one-line error saying to give audio:, which then works."""
    root, fs = kaldi
    assert fs.attrs["source"] == str(root)
    moved = tmp_path / "moved"
    shutil.move(str(root), moved)  # the corpus the store recorded is gone
    out = tmp_path / "t.zarr"
    try:
        with pytest.raises(ConfigError) as info:
            ens = EnsembleConfig(members=(hf(models["ctc"]),), rule=TOP2)
            teach(ens, fs.location, out, progress=False)
        one_line(info.value, "member 0 (ctc)", "waveform input", str(root), "audio: PATH")
        assert not out.exists()
        member = hf(models["ctc"], input=InputConfig(waveform=16000, audio=str(moved)))
        s = teach(EnsembleConfig(members=(member,), rule=TOP2), fs.location, out, progress=False)
        assert s.utterances == 3
    finally:
        shutil.move(str(moved), root)  # the module's corpus, back for the other tests


def test_missing_transformers_is_one_line(monkeypatch, models):
    monkeypatch.setattr(huggingface.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError) as info:
        kinds.describe(hf(models["ctc"]), "member 0 (ctc)", None)
    one_line(info.value, "member 0 (ctc)", "pip install kdpipe[hf]")


def test_frame_shift_comes_from_the_conv_strides(tmp_path, models):
    """320 samples at 16 kHz: 20 ms; an adapter of 3 stride-2 layers: 160 ms; a
    frame_shift_ms or subsampling that contradicts it is refused."""
    assert kinds.describe(hf(models["ctc"]), "m", None).frame_shift_ms == 20.0
    with pytest.raises(
        ConfigError, match=r"m: frame_shift_ms 10.0, the model's conv_stride gives 20"
    ):
        kinds.describe(hf(models["ctc"], frame_shift_ms=10.0), "m", None)
    with pytest.raises(ConfigError, match=r"m: subsampling is for members reading features"):
        kinds.describe(hf(models["ctc"], subsampling=2), "m", None)
    d = tmp_path / "adapter"
    shutil.copytree(models["ctc"], d)
    config = json.loads((d / "config.json").read_text())
    config.update(add_adapter=True, adapter_stride=2, num_adapter_layers=3)
    (d / "config.json").write_text(json.dumps(config))
    assert kinds.describe(hf(d), "m", None).frame_shift_ms == 160.0
    assert huggingface.receptive_field(config) == 400


def test_cli_model_may_be_a_hugging_face_directory(tmp_path, kaldi, models):
    """``kdpipe teach --model DIR`` with a save_pretrained directory: one huggingface member
    reading the waveform at the model's sampling rate, no yaml."""
    _root, fs = kaldi
    ens = single_teacher(models["ctc"], Rule("topk", {"k": 2}))
    (member,) = ens.members
    assert (member.kind, member.input.waveform) == ("huggingface", 16000)
    out = tmp_path / "cli.zarr"
    args = ["teach", "--no-progress", "--model", str(models["ctc"]), "--corpus", fs.location,
            "--out", str(out), "--topk", "2"]  # fmt: skip
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    reader = StoreReader(out)
    assert reader.meta.teachers[0].card["kind"] == "huggingface" and len(reader) == len(fs)
