"""``kdpipe store`` inspect / verify / copy / diff / seal, and the polars views."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from kdpipe.cli.main import app
from kdpipe.essence import Rule, as_logprobs
from kdpipe.store.diff import diff_stores
from kdpipe.store.reader import StoreReader
from kdpipe.store.spec import StoreMeta
from kdpipe.store.tables import frame_table, row_stats, utterance_table
from kdpipe.store.writer import StoreWriter
from kdpipe.testing.stores import label_names, random_utterances, small_meta, write_store

runner = CliRunner()


def test_inspect_prints_a_summary_and_plots(store_path, tmp_path):
    out = runner.invoke(app, ["store", "inspect", str(store_path), "--plot", str(tmp_path / "p")])
    assert out.exit_code == 0, out.output
    for text in (
        "12 /",
        "bytes per frame",
        "40 labels",
        "topk(k=4), values uint8",
        "tail mass histogram",
        "entropy histogram",
        "top confusions",
    ):
        assert text in out.output, text
    pngs = sorted(p.name for p in (tmp_path / "p").iterdir())
    assert pngs == ["confusions.png", "entropy.png", "tail.png"]
    assert all((tmp_path / "p" / n).read_bytes()[:4] == b"\x89PNG" for n in pngs)


def test_verify_exit_codes_and_messages(store_path):
    out = runner.invoke(app, ["store", "verify", str(store_path)])
    assert out.exit_code == 0 and "OK" in out.output, out.output
    r = StoreReader(store_path)
    part = r.parts[1].id
    chunk = store_path / "parts" / part / "frame" / "hard" / "c" / "0"
    chunk.write_bytes(chunk.read_bytes()[:-3])
    out = runner.invoke(app, ["store", "verify", str(store_path)])
    assert out.exit_code == 1
    assert f"part {part}: array frame/hard: chunk c/0: checksum mismatch" in out.output
    assert "FAILED" in out.output
    out = runner.invoke(app, ["store", "inspect", str(tmp := store_path / "nope")])
    assert out.exit_code == 1 and "store not found" in out.output and str(tmp) in out.output


def test_verify_against_a_feature_store_and_a_label_file(tmp_path):
    from kdpipe.corpus.featstore import FeatureStoreWriter
    from kdpipe.corpus.features import FbankConfig
    from kdpipe.labels import LabelSet

    meta = small_meta()
    utts = random_utterances(meta, 3, seed=8, max_frames=10)
    utts = {u: kw for u, kw in utts.items() if kw["frame"].num_rows > 0}
    write_store(tmp_path / "t.zarr", meta, utts)
    fw = FeatureStoreWriter(
        tmp_path / "f.zarr", task="frame", labels=meta.label_set, config=FbankConfig()
    )
    for u, kw in utts.items():
        t = kw["frame"].num_rows
        fw.add(u, np.zeros((t, 40), np.float32), frame_labels=np.zeros(t, np.int64))
    fw.add("extra-utt", np.zeros((5, 40), np.float32), frame_labels=np.zeros(5, np.int64))
    fw.close()
    LabelSet(meta.labels).write(tmp_path / "labels.txt")
    args = [
        "store",
        "verify",
        str(tmp_path / "t.zarr"),
        "--corpus",
        str(tmp_path / "f.zarr"),
        "--labels",
        str(tmp_path / "labels.txt"),
    ]
    out = runner.invoke(app, args)
    assert out.exit_code == 1
    assert "1 corpus utterance(s) missing from the store, e.g. extra-utt" in out.output


def test_copy_rechunks_resumes_and_seals(store_path, tmp_path):
    dst = tmp_path / "copy.zarr"
    out = runner.invoke(app, ["store", "copy", str(store_path), str(dst), "--chunk-rows", "5"])
    assert out.exit_code == 0, out.output
    a, b = StoreReader(store_path), StoreReader(dst)
    assert b.sealed and a.ids == b.ids and a.record == b.record
    assert b.parts[0].arrays["frame/indices"]["chunks"] == [5, 4]
    for x, y in zip(a.blocks(), b.blocks(), strict=True):
        assert x.frame.equals(y.frame) and x.utt.equals(y.utt)
    out = runner.invoke(app, ["store", "copy", str(store_path), str(dst)])
    assert "copied 0 parts" in out.output and f"{len(a.parts)} already there" in out.output
    out = runner.invoke(app, ["store", "copy", str(dst), str(dst), "--overwrite"])
    assert out.exit_code == 1 and "the output is the input" in out.output and StoreReader(dst).ids
    other = tmp_path / "other.zarr"
    write_store(other, small_meta(c=41), {})
    out = runner.invoke(app, ["store", "copy", str(store_path), str(other)])
    assert out.exit_code == 1 and "other metadata" in out.output


def test_diff_measures_agreement(tmp_path):
    c = 30
    rng = np.random.default_rng(0)
    meta = StoreMeta(labels=label_names(c), rule=Rule("topk", {"k": 30}), values="float16")
    logits = {f"u{i}": rng.standard_normal((20, c)) * 3 for i in range(4)}
    noisy = {u: x + rng.standard_normal(x.shape) * 2 for u, x in logits.items()}
    for name, src in (("a", logits), ("b", noisy)):
        with StoreWriter(tmp_path / f"{name}.zarr", meta) as w:
            for u, x in src.items():
                if not (name == "b" and u == "u3"):
                    w.add(u, frame=meta.rule.apply(as_logprobs(x, "logits")))
    same = diff_stores(tmp_path / "a.zarr", tmp_path / "a.zarr")
    assert same.levels["frame"].top1_agreement == 1.0
    assert abs(same.levels["frame"].mean_kl_ab) < 1e-6
    rep = diff_stores(tmp_path / "a.zarr", tmp_path / "b.zarr")
    assert (rep.shared, rep.only_a, rep.only_b) == (3, 1, 0)
    pa = {u: np.exp(as_logprobs(logits[u], "logits")) for u in logits}
    pb = {u: np.exp(as_logprobs(noisy[u], "logits")) for u in noisy}
    want_agree = np.mean([pa[u].argmax(1) == pb[u].argmax(1) for u in ("u0", "u1", "u2")])
    want_kl = np.mean([(pa[u] * np.log(pa[u] / pb[u])).sum(1) for u in ("u0", "u1", "u2")])
    d = rep.levels["frame"]
    assert d.rows == 60 and d.top1_agreement == pytest.approx(want_agree)
    assert d.mean_kl_ab == pytest.approx(want_kl, rel=0.02)
    out = runner.invoke(app, ["store", "diff", str(tmp_path / "a.zarr"), str(tmp_path / "b.zarr")])
    assert out.exit_code == 0 and "only in A 1" in out.output, out.output


def test_polars_views(store_path):
    r = StoreReader(store_path)
    utts = utterance_table(r)
    assert utts.columns == ["id", "frames", "mean_entropy", "mean_tail", "top1_agreement",
                            "teacher_entropy", "teacher_agreement"]  # fmt: skip
    assert utts["teacher_entropy"].null_count() == len(r)  # written without quality
    assert utts["id"].to_list() == r.ids and utts["frames"].to_list() == r.num_frames.tolist()
    frames = frame_table(r)
    assert frames.height == r.total_frames
    # the per-utterance means are the means of the per-frame view
    again = frames.group_by("id", maintain_order=True).agg(
        pl.col("entropy").mean(),
        pl.col("tail").mean(),
        ((pl.col("top1") == pl.col("hard")).sum() / pl.col("hard").is_not_null().sum()).alias(
            "agree"
        ),
    )
    joined = utts.join(again, on="id")
    np.testing.assert_allclose(joined["mean_entropy"], joined["entropy"], rtol=1e-5)
    np.testing.assert_allclose(joined["mean_tail"], joined["tail"], rtol=1e-5)
    np.testing.assert_allclose(
        joined["top1_agreement"].fill_null(-1),
        joined["agree"].fill_nan(-1).fill_null(-1),
        rtol=1e-6,
    )
    u = r.ids[4]
    one = r.get(u)
    st = row_stats(one.frame)
    sub = frame_table(r, ids=[u])
    assert sub["top1"].to_list() == one.frame.indices[:, 0].astype(int).tolist()
    np.testing.assert_allclose(sub["top1_prob"], np.exp(one.frame.logprobs()[:, 0]))
    np.testing.assert_allclose(sub["tail"], st["tail"])
    nolab = one.hard_frame == np.iinfo(one.hard_frame.dtype).max
    assert sub["hard"].is_null().to_list() == nolab.tolist()


def test_seal_cli(store_path):
    out = runner.invoke(app, ["store", "seal", str(store_path)])
    assert out.exit_code == 0 and "committed parts" in out.output
    assert StoreReader(store_path).sealed


def test_the_polars_example_of_the_docs_runs(store_path, monkeypatch, capsys):
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "store-format.md").read_text()
    code = re.search(r"<!-- spec-example: polars.*?-->\n```python\n(.*?)```", doc, re.S)
    monkeypatch.chdir(store_path.parent)  # the example opens "targets.zarr"
    exec(compile(code.group(1), "store-format.md", "exec"), {})
    out = capsys.readouterr().out
    assert "top1_agreement" in out and "entropy" in out
