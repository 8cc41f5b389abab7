"""CTC students and teachers: ``learn --loss ctc`` on transcripts, a CTC teacher's store,
distillation into a CTC student (frame KL + CTC, the spike remedy), and every bad input
of the CTC path as one line before the first step."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from kdpipe.cli.main import app
from kdpipe.corpus.featstore import FeatureStore, FeatureStoreWriter
from kdpipe.decode.ctc import path_tokens
from kdpipe.errors import ConfigError, CorpusError, LabelSetError, ModelError, TrainingError
from kdpipe.learn.ctc import ctc_term
from kdpipe.learn.ctc_eval import evaluate_model
from kdpipe.learn.data import Batch, SoftTargets
from kdpipe.learn.kd import CtcKd, teacher_blank
from kdpipe.learn.kd_config import KdConfig
from kdpipe.learn.runs import build_run, train_run
from kdpipe.losses import IGNORE, ctc, ctc_min_frames, dense_kd
from kdpipe.models import read_card
from kdpipe.store.reader import StoreReader
from kdpipe.testing.corpora import make_word_store

torch.set_num_threads(1)
TRAIN = {"epochs": 6, "lr": 0.01, "batch_frames": 800, "patience": 0}
SMALL = {
    "dnn": {"hidden_dim": 32, "num_layers": 2, "left_context": 2, "right_context": 2},
    "tdnn": {"hidden_dim": 16, "kernel_sizes": [3, 3], "dilations": [1, 1]},
    "lstm": {"hidden_dim": 16, "num_layers": 1},
    "blstm": {"hidden_dim": 16, "num_layers": 1},
}


def learn(corpus, out, student="blstm", model=None, units="phones", targets=None, kd=None,
          ctc_cfg=None, train=None, **kw):  # fmt: skip
    run = build_run({}, corpus=str(corpus), student=student,
                    model={**SMALL[student], **(model or {})},
                    train={**TRAIN, **(train or {})}, kd=kd, targets=targets, loss="ctc",
                    ctc={"units": units, **(ctc_cfg or {})}, **kw)  # fmt: skip
    return train_run(run, out, overwrite=True, progress=False)


@pytest.fixture(scope="module")
def words(tmp_path_factory):
    """A frame store of word sequences (labels = phones, transcripts = words), lexicon beside."""
    d = tmp_path_factory.mktemp("ctc")
    return make_word_store(d / "feats.zarr")


@pytest.fixture(scope="module")
def teacher(words, tmp_path_factory):
    """A BLSTM-CTC teacher over phone units (subsampling 2), and its top-4 store."""
    d = tmp_path_factory.mktemp("ctc_teacher")
    learn(words.location, d / "teacher", model={"subsampling": 2}, train={"epochs": 12})
    r = CliRunner().invoke(app, ["teach", "--model", str(d / "teacher"), "--corpus",
                                 words.location, "--out", str(d / "t.zarr"), "--topk", "4",
                                 "--no-progress"])  # fmt: skip
    assert r.exit_code == 0, r.output
    return d / "teacher", str(d / "t.zarr")


def transcribed_store(path, source_store: FeatureStore) -> FeatureStore:
    """The word store's features and transcripts as a transcribed store (no labels)."""
    w = FeatureStoreWriter(path, task="transcribed", labels=None, config=source_store.config,
                           source=source_store.attrs["source"], source_format="dummy")  # fmt: skip
    assert source_store.texts is not None
    for i, utt in enumerate(source_store.ids):
        w.add(utt, source_store.raw_features(i), speaker=source_store.speakers[i],
              split=source_store.splits[i], text=source_store.texts[i])  # fmt: skip
    w.close()
    return FeatureStore.open(path)


# -- the loss -------------------------------------------------------------------------


def test_ctc_loss_equals_the_sum_over_alignments_on_a_tiny_case():
    """T = 3 frames, tokens [1, 1]: the one alignment is 1 blank 1 (a blank separates the
    repeat), so the loss is -log of that path's probability."""
    torch.manual_seed(0)
    logits = torch.randn(1, 3, 3)
    logp = torch.log_softmax(logits, -1)[0]
    tokens = torch.tensor([[1, 1]])
    loss = ctc(logits, torch.tensor([3]), tokens, torch.tensor([2]), blank=0)
    want = -(logp[0, 1] + logp[1, 0] + logp[2, 1])
    torch.testing.assert_close(loss[0], want)
    assert ctc_min_frames(tokens, torch.tensor([2])).tolist() == [3]
    # an utterance without tokens adds nothing to the batch term
    both = ctc_term(torch.cat([logits, logits]), torch.tensor([3, 3]),
                    torch.tensor([[1, 1], [IGNORE, IGNORE]]), 0)  # fmt: skip
    torch.testing.assert_close(both, want / 3)


def test_a_best_path_merges_repeats_and_drops_blanks():
    assert path_tokens(np.array([0, 1, 1, 0, 1, 2, 2, 0]), 0) == [1, 1, 2]
    assert path_tokens(np.array([], dtype=np.int64), 0) == []


def test_spike_remedy_equals_a_dense_kl_over_the_teachers_token_frames():
    """ctc_frames=spikes: the KL of the frames whose teacher blank probability is below
    blank_max, and only those, equals dense_kd on those frames (keeping every class)."""
    gen = torch.Generator().manual_seed(0)
    b, t, c = 2, 5, 4
    teacher = torch.softmax(3 * torch.randn(b, t, c, generator=gen), -1)  # (B, T, C)
    logits = torch.randn(b, t, c, generator=gen)
    idx = torch.arange(c).expand(b, t, c).clone()  # every class kept: the dense case
    soft = SoftTargets(idx, teacher.log(), torch.full((b, t), -torch.inf),
                       torch.ones(b, t, dtype=torch.bool), torch.ones(b))  # fmt: skip
    batch = Batch(torch.zeros(b, t, 1), torch.tensor([t, t]), torch.full((b, t), IGNORE),
                  np.arange(b), soft)  # fmt: skip
    kd = KdConfig(ctc_frames="spikes", blank_max=0.5)
    term = CtcKd(kd, epochs=1, blank=0)
    got = term(logits, torch.tensor([t, t]), batch)
    keep = teacher[..., 0] < 0.5  # (B, T)
    assert 0 < int(keep.sum()) < b * t  # the case has both kinds of frames
    torch.testing.assert_close(teacher_blank(soft, 0), teacher[..., 0])
    want = dense_kd(logits[keep], teacher[keep]).mean()
    torch.testing.assert_close(got, want)
    everything = CtcKd(KdConfig(), epochs=1, blank=0)(logits, torch.tensor([t, t]), batch)
    torch.testing.assert_close(everything, dense_kd(logits.reshape(-1, c),
                                                    teacher.reshape(-1, c)).mean())  # fmt: skip
    assert term.alpha(0) == 1.0


# -- training ---------------------------------------------------------------------------


@pytest.mark.parametrize("student", ["dnn", "tdnn", "lstm", "blstm"])
def test_ctc_training_lowers_the_loss_for_every_subsampled_frame_model(words, tmp_path, student):
    result = learn(words.location, tmp_path / "m", student=student, model={"subsampling": 2})
    rows = [
        json.loads(line) for line in (tmp_path / "m" / "metrics.jsonl").read_text().splitlines()
    ]
    assert rows[-1]["train_loss"] < 0.7 * rows[0]["train_loss"], [r["train_loss"] for r in rows]
    card = read_card(tmp_path / "m")
    assert card.ctc is not None and card.ctc["blank"] == 0 and card.subsampling == 2
    assert card.labels[0] == "<blk>" and result.best_dev_acc >= 0


def test_chars_and_bpe_units_train_and_score_words(words, tmp_path):
    for units in ("chars", "bpe:8"):
        out = tmp_path / units.replace(":", "")
        learn(words.location, out, student="blstm", units=units)
        report = evaluate_model(out, words.location, "test", tmp_path / f"eval-{units}")
        scores = report.to_dict()
        assert scores["units"] == units and scores["decoded_wer"] >= 0
        assert ("decoded_cer" in scores) == (units == "chars")
        hyp = (tmp_path / f"eval-{units}" / "hyp_words.txt").read_text().splitlines()
        assert len(hyp) == 6 and all(line.split()[0].startswith("test-") for line in hyp)


def test_a_transcribed_corpus_trains_ctc_without_any_labels(words, tmp_path):
    store = transcribed_store(tmp_path / "tr.zarr", words)
    learn(store.location, tmp_path / "m", units="chars", train={"epochs": 2})
    assert read_card(tmp_path / "m").ctc["units"]["kind"] == "chars"


def test_the_teachers_eval_decodes_below_chance(teacher, words):
    """A trained CTC teacher scores a decoded PER far below 100%, by greedy decoding and
    by prefix beam search (which the report names)."""
    model, _ = teacher
    greedy = evaluate_model(model, words.location, "test").to_dict()
    from kdpipe.decode.ctc import CtcDecodeOptions

    beam = evaluate_model(model, words.location, "test",
                          ctc_options=CtcDecodeOptions(method="prefix_beam")).to_dict()  # fmt: skip
    assert greedy["decoded_per"] < 0.6 and beam["decoded_per"] < 1.0
    assert (greedy["decode"]["method"], beam["decode"]["method"]) == ("greedy", "prefix_beam")


# -- a CTC teacher's store and a distilled CTC student ---------------------------------


def test_a_ctc_teachers_store_records_blank_and_units(teacher):
    model, store = teacher
    reader = StoreReader(store)
    card = read_card(model)
    assert reader.meta.extra["ctc"] == card.ctc
    assert reader.meta.labels == card.labels and reader.meta.hard_labels == ()
    assert reader.meta.subsampling == 2


@pytest.mark.parametrize("frames", ["all", "spikes"])
def test_kd_into_a_ctc_student_of_another_family(teacher, words, tmp_path, frames):
    _, store = teacher
    learn(words.location, tmp_path / "s", student="dnn", model={"subsampling": 2},
          targets=[(store, 1.0)], kd={"alpha": 0.5, "ctc_frames": frames})  # fmt: skip
    card = read_card(tmp_path / "s")
    assert card.training["objective"] == "kd" and card.ctc == read_card(teacher[0]).ctc
    assert evaluate_model(tmp_path / "s", words.location, "test").to_dict()["decoded_per"] < 1


def test_semi_supervised_ctc_sees_only_the_labelled_transcripts(teacher, words, tmp_path):
    """ctc.labelled: the KL covers all of train, CTC only train[:25%]; with alpha 0 the
    student learns from those transcripts alone (and still trains)."""
    _, store = teacher
    learn(words.location, tmp_path / "s", student="dnn", model={"subsampling": 2},
          targets=[(store, 1.0)], kd={"alpha": 0.7},
          ctc_cfg={"labelled": "train[:25%]"})  # fmt: skip
    run = json.loads((tmp_path / "s" / "run.json").read_text())
    assert run["ctc"]["labelled"] == "train[:25%]"


# -- bad input: one line before the first step -----------------------------------------


def test_a_ctc_store_given_to_a_frame_student_and_the_reverse(teacher, words, tmp_path):
    _, store = teacher
    run = build_run({}, corpus=words.location, student="dnn", model=SMALL["dnn"],
                    train=TRAIN, targets=[(store, 1.0)])  # fmt: skip
    with pytest.raises(ModelError, match=r"CTC teacher's targets.*--loss ctc --units phones"):
        train_run(run, tmp_path / "a", progress=False)
    frame_teacher = tmp_path / "ft"
    train_run(build_run({}, corpus=words.location, student="dnn", model=SMALL["dnn"],
                        train={**TRAIN, "epochs": 1}), frame_teacher, progress=False)  # fmt: skip
    r = CliRunner().invoke(app, ["teach", "--model", str(frame_teacher), "--corpus",
                                 words.location, "--out", str(tmp_path / "f.zarr"), "--topk",
                                 "2", "--no-progress"])  # fmt: skip
    assert r.exit_code == 0, r.output
    with pytest.raises(ModelError, match="frame-label teacher's targets"):
        learn(
            words.location, tmp_path / "b", student="dnn", targets=[(str(tmp_path / "f.zarr"), 1.0)]
        )
    assert not (tmp_path / "a").exists() and not (tmp_path / "b" / "card.json").exists()


def test_units_that_differ_from_the_teachers_are_refused(teacher, words, tmp_path):
    _, store = teacher
    with pytest.raises(LabelSetError, match="units"):
        learn(words.location, tmp_path / "s", student="dnn", units="chars",
              targets=[(store, 1.0)])  # fmt: skip


def test_a_blank_index_that_differs_from_the_stores_is_refused(teacher, tmp_path):
    """A store whose teacher put blank elsewhere (another toolkit's convention: last) is
    refused against a student whose blank is 0, naming both indices."""
    from kdpipe.learn.compat import check_ctc
    from kdpipe.testing.stores import small_meta, write_store

    record = read_card(teacher[0]).ctc
    assert record is not None
    meta = small_meta(4, extra={"ctc": {**record, "blank": 3}})
    write_store(tmp_path / "s.zarr", meta, {})
    with pytest.raises(LabelSetError, match="blank index 3 vs the student's 0"):
        check_ctc(StoreReader(str(tmp_path / "s.zarr")), record)
    check_ctc(StoreReader(teacher[1]), record)  # the teacher's own store passes


def test_an_output_too_short_for_its_tokens_is_named_by_utterance(words, tmp_path):
    with pytest.raises(TrainingError, match=r"fewer output frames than CTC needs.*train-u\d+"):
        learn(words.location, tmp_path / "m", student="dnn", model={"subsampling": 8})
    assert not (tmp_path / "m").exists()


def test_a_transcript_token_outside_the_units_is_named(words, tmp_path):
    """chars built from train; a dev transcript with a new character is refused, naming it."""
    d = tmp_path / "w"
    store = make_word_store(d / "feats.zarr", words={"ab": ("a", "b"), "ba": ("b", "a")},
                            per_split={"train": 4, "dev": 1})  # fmt: skip
    w = FeatureStoreWriter(d / "x.zarr", task="frame", labels=store.labels, config=store.config,
                           source=str(d), source_format="dummy")  # fmt: skip
    for i, utt in enumerate(store.ids):
        text = "ab zz" if store.splits[i] == "dev" else store.texts[i]
        w.add(utt, store.raw_features(i), speaker="s", split=store.splits[i],
              frame_labels=store.frame_labels(i).astype(np.int32), text=text)  # fmt: skip
    w.close()
    with pytest.raises(CorpusError, match=r"dev-u0.*'z'"):
        learn(str(d / "x.zarr"), tmp_path / "m", units="chars")


def test_cli_ctc_options_and_their_errors(words, tmp_path):
    r = CliRunner().invoke(app, ["learn", "--corpus", words.location, "--student", "dnn",
                                 "--units", "chars", "--out", str(tmp_path / "a")])  # fmt: skip
    assert r.exit_code == 1 and "settings of --loss ctc" in r.output
    r = CliRunner().invoke(app, ["learn", "--corpus", words.location, "--student", "dnn",
                                 "--loss", "ctc", "--units", "bpe", "--out",
                                 str(tmp_path / "a")])  # fmt: skip
    assert r.exit_code == 1 and "bpe" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(app, ["learn", "--corpus", words.location, "--student", "dnn",
                                 "--loss", "ctx", "--out", str(tmp_path / "a")])  # fmt: skip
    assert r.exit_code == 1 and "loss must be one of ce, ctc" in r.output
    r = CliRunner().invoke(app, ["learn", "--corpus", words.location, "--student", "dnn_pool",
                                 "--loss", "ctc", "--out", str(tmp_path / "a")])  # fmt: skip
    assert r.exit_code == 1 and "frame-level" in r.output
    with pytest.raises(ConfigError, match="ctc_frames=spikes is for CTC students"):
        train_run(build_run({}, corpus=words.location, student="dnn", targets=[("x", 1.0)],
                            kd={"ctc_frames": "spikes"}), tmp_path / "b")  # fmt: skip


def test_cli_learns_and_evaluates_a_ctc_model(words, tmp_path):
    out = tmp_path / "m"
    r = CliRunner().invoke(app, ["learn", "--corpus", words.location, "--student", "blstm",
                                 "-m", "hidden_dim=16", "-m", "num_layers=1", "--loss", "ctc",
                                 "--units", "phones", "--epochs", "2",
                                 "--out", str(out)])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "token accuracy" in r.output and (out / "units" / "units.json").is_file()
    r = CliRunner().invoke(app, ["eval", "--model", str(out), "--corpus", words.location,
                                 "--json", "--ctc-decode", "prefix_beam", "--lm-weight", "0.3",
                                 "--out", str(tmp_path / "e")])  # fmt: skip
    assert r.exit_code == 0, r.output
    scores = json.loads(r.output)
    assert scores["decode"]["method"] == "prefix_beam" and scores["decode"]["lm_weight"] == 0.3
    assert len((tmp_path / "e" / "hyp.txt").read_text().splitlines()) == 6


def test_a_sentencepiece_model_other_than_the_stores_is_refused(words, tmp_path):
    """Two BPE sizes over the same transcripts are two token sets: a student of bpe:6
    refuses a bpe:8 teacher's store, naming both fingerprints."""
    from kdpipe.corpus.units import UnitsSpec, build_units
    from kdpipe.learn.compat import check_ctc
    from kdpipe.learn.ctc import ctc_record
    from kdpipe.testing.stores import small_meta, write_store

    assert words.texts is not None
    texts = {utt: text for utt, text in zip(words.ids, words.texts, strict=True)}
    teacher, student = (
        ctc_record(build_units(UnitsSpec.parse(u), texts)) for u in ("bpe:8", "bpe:6")
    )
    write_store(tmp_path / "s.zarr", small_meta(8, extra={"ctc": teacher}), {})
    with pytest.raises(LabelSetError, match=teacher["units"]["fingerprint"]):
        check_ctc(StoreReader(str(tmp_path / "s.zarr")), student)


@pytest.mark.parametrize("breaks_ties", [True, False])
def test_early_stopping_sees_past_the_blank_plateau(words, tmp_path, breaks_ties):
    """Dev scores scripted as a CTC model's: accuracy 0 (all blank) for three epochs while
    the loss falls, then 0.5. With patience 1, CTC's scores (loss breaks ties) train on to
    the fourth epoch and keep it; scores without the flag stop after the second."""
    from dataclasses import dataclass
    from typing import ClassVar

    from kdpipe.learn.data import LabelledData
    from kdpipe.learn.train_config import TrainConfig
    from kdpipe.learn.trainer import HardLabels, train
    from kdpipe.models import build_model

    @dataclass
    class Scripted:
        loss: float
        accuracy: float
        loss_breaks_ties: ClassVar[bool] = breaks_ties

    script = iter([Scripted(3.0, 0.0), Scripted(2.0, 0.0), Scripted(1.0, 0.0),
                   Scripted(0.9, 0.5)])  # fmt: skip
    data = LabelledData.from_store(words, "train")
    model = build_model("dnn", words.dim, len(words.labels), SMALL["dnn"])
    saved = []
    result = train(model, data, data, TrainConfig(epochs=4, patience=1), tmp_path / "m",
                   HardLabels("frame"), lambda m, metrics: saved.append(metrics["epoch"]),
                   progress=False, evaluate=lambda m, d, dev: next(script))  # fmt: skip
    if breaks_ties:
        assert (result.epochs_run, result.best_epoch, saved) == (4, 4, [1, 2, 3, 4])
    else:
        assert (result.epochs_run, result.best_epoch, saved) == (2, 1, [1])


def test_an_ensemble_of_ctc_teachers_shares_one_token_set(teacher, words, tmp_path):
    """Two CTC members over the same units make a CTC store; a CTC member beside a
    frame-label member, or beside a CTC member of other units, is refused before work."""
    model, _ = teacher
    other = tmp_path / "chars"
    learn(words.location, other, units="chars", train={"epochs": 1})
    frame = tmp_path / "frame"
    train_run(build_run({}, corpus=words.location, student="dnn", model=SMALL["dnn"],
                        train={**TRAIN, "epochs": 1}), frame, progress=False)  # fmt: skip

    def ensemble(*members, name="e"):
        path = tmp_path / f"{name}.yaml"
        lines = ["members:"] + [
            f"  - {{checkpoint: {m}, name: m{i}}}" for i, m in enumerate(members)
        ]
        path.write_text("\n".join([*lines, "rule: {name: topk, params: {k: 2}}", ""]))
        return CliRunner().invoke(app, ["teach", "--model", str(path), "--corpus",
                                        words.location, "--out", str(tmp_path / f"{name}.zarr"),
                                        "--no-progress"])  # fmt: skip

    ok = ensemble(model, model)
    assert ok.exit_code == 0, ok.output
    assert StoreReader(str(tmp_path / "e.zarr")).meta.extra["ctc"] == read_card(model).ctc
    mixed = ensemble(model, frame, name="m")
    assert mixed.exit_code == 1 and "mixes CTC and frame-label teachers" in mixed.output
    units = ensemble(model, other, name="u")
    assert units.exit_code == 1 and "must share one token set" in units.output
    assert not (tmp_path / "m.zarr").exists() and not (tmp_path / "u.zarr").exists()
