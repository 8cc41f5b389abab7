"""Exactness: the stored essence equals the teacher's posteriors recomputed with torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdpipe.essence import Rule
from kdpipe.models import load_checkpoint
from kdpipe.store.coding import quantization_step
from kdpipe.store.reader import StoreReader
from kdpipe.teach import EnsembleConfig, MemberConfig, ViewConfig, single_teacher, teach

STEP = quantization_step("uint8") + 1e-4  # half a code, plus float noise of batching


def member_logp(ckpt, x: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """(T_m, C_m) float64 log-softmax of one utterance, alone (no padding)."""
    model, _ = load_checkpoint(ckpt)
    with torch.inference_mode():
        logits, _ = model(torch.from_numpy(x)[None], torch.tensor([len(x)]))
    return torch.log_softmax(logits[0].double() / temperature, -1).numpy()


def to_rate(lp: np.ndarray, r: int, how: str) -> np.ndarray:
    if r == 1:
        return lp
    if how == "decimate":
        return lp[::r]
    p = np.exp(lp)
    return np.log(np.stack([p[j : j + r].mean(0) for j in range(0, len(p), r)]))


def check_rows(reader: StoreReader, uid: str, ref: np.ndarray, k: int) -> None:
    """Stored top-k of ``uid`` vs reference log-probs ``ref`` (T', C)."""
    rows = reader.get(uid).frame
    idx, vals, tail = rows.indices, rows.logprobs(), rows.tail_mass()
    assert idx.shape == (len(ref), k)
    want = np.argsort(-ref, axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(idx, want, err_msg=uid)
    ref_k = np.take_along_axis(ref, want, 1)
    assert np.abs(vals - np.maximum(ref_k, -16)).max() <= STEP
    ref_tail = 1 - np.exp(ref_k).sum(1)
    assert np.abs(tail - ref_tail).max() <= 0.035 * 1.0 + 1e-6  # uint8 sum tolerance
    assert np.abs(np.exp(vals).sum(1) + tail - 1).max() <= 0.035


def test_single_teacher_exact(tmp_path, corpus, teachers):
    out = tmp_path / "t.zarr"
    s = teach(single_teacher(teachers["blstm"], Rule("topk", {"k": 3})), corpus.location, out,
              batch_frames=120, progress=False)  # fmt: skip
    r = StoreReader(out)
    train = corpus.indices("train")
    assert s.utterances == len(train) == len(r) and s.skipped == 0
    assert s.frames == int(corpus.num_frames[train].sum()) == r.total_frames
    assert r.meta.combine == "single" and r.meta.teachers[0].weights_sha256
    assert r.meta.features["fingerprint"] == corpus.config.fingerprint
    assert r.meta.corpus_fingerprint == corpus.fingerprint
    assert r.meta.extra["teach"]["selection"] == {"split": "train"}
    for i in train[:4]:
        uid = corpus.ids[i]
        check_rows(r, uid, member_logp(teachers["blstm"], corpus.features(i)), 3)
        hard = r.get(uid).hard_frame
        np.testing.assert_array_equal(hard, corpus.frame_labels(i))
    assert 0 < s.mean_tail_mass < 1 and s.mean_entropy > 0 and s.accuracy is not None


def test_ensemble_exact(tmp_path, corpus, teachers):
    """blstm + dnn (averaged to half rate) + tdnn (subsampling 2), arithmetic mean."""
    ens = EnsembleConfig(
        members=(
            MemberConfig(str(teachers["blstm"]), weight=2.0, temperature=2.0),
            MemberConfig(str(teachers["dnn"]), frame_rate="decimate"),
            MemberConfig(str(teachers["tdnn"])),
        ),
        rule=Rule("topk", {"k": 4}),
        keep_members=True,
    )
    out = tmp_path / "e.zarr"
    teach(ens, corpus.location, out, split="dev", batch_frames=100, progress=False)
    r = StoreReader(out)
    assert r.meta.subsampling == 2 and r.meta.frame_shift_ms == 20.0
    assert r.meta.members == ("blstm", "dnn", "tdnn") and r.meta.combine == "mean-prob"
    w = np.array([2.0, 1.0, 1.0]) / 4
    for i in corpus.indices("dev"):
        x, uid = corpus.features(i), corpus.ids[i]
        lps = [
            to_rate(member_logp(teachers["blstm"], x, 2.0), 2, "average"),
            to_rate(member_logp(teachers["dnn"], x), 2, "decimate"),
            member_logp(teachers["tdnn"], x),
        ]
        ref = np.log(sum(wi * np.exp(lp) for wi, lp in zip(w, lps, strict=True)))
        check_rows(r, uid, ref, 4)
        got = r.get(uid, members=True)
        np.testing.assert_array_equal(got.members_frame[1].indices, np.argsort(-lps[1], 1)[:, :4])
        np.testing.assert_array_equal(got.hard_frame, corpus.frame_labels(i)[::2][: len(ref)])


def test_geometric_mean_with_label_map(tmp_path, corpus, teachers):
    """A member over a label subset (mapped by name) in a geometric mean."""
    ens = EnsembleConfig(
        members=(
            MemberConfig(str(teachers["blstm"])),
            MemberConfig(str(teachers["subset"]), label_map="names"),
        ),
        combine="mean-logprob",
        rule=Rule("full", {}),
        values="float16",
    )
    out = tmp_path / "g.zarr"
    teach(ens, corpus.location, out, split="dev", progress=False)
    r = StoreReader(out)
    for i in corpus.indices("dev"):
        x, uid = corpus.features(i), corpus.ids[i]
        a, b = member_logp(teachers["blstm"], x), member_logp(teachers["subset"], x)
        mix = a.copy()
        mix[:, :3] = (a[:, :3] + b) / 2  # classes sil, a, b: both members; c, d: only blstm
        ref = mix - np.log(np.exp(mix).sum(1, keepdims=True))
        got = r.get(uid).frame.logprobs()
        np.testing.assert_allclose(got, ref, atol=2e-3 * 16)


@pytest.mark.parametrize(
    "rule", [Rule("threshold", {"p_min": 0.05}), Rule("cumulative", {"mass": 0.9})]
)
def test_variable_rules_exact(tmp_path, corpus, teachers, rule):
    out = tmp_path / "v.zarr"
    teach(single_teacher(teachers["dnn"], rule), corpus.location, out, split="dev", progress=False)
    r = StoreReader(out)
    for i in corpus.indices("dev"):
        ref = member_logp(teachers["dnn"], corpus.features(i)).astype(np.float32)
        want = rule.apply(ref)
        got = r.get(corpus.ids[i]).frame
        np.testing.assert_array_equal(got.offsets, want.offsets)
        np.testing.assert_array_equal(got.indices, want.indices)
        assert np.abs(got.logprobs() - np.maximum(want.values, -16)).max() <= STEP


def test_crop_view_recorded_and_sample_deterministic(tmp_path, corpus, teachers):
    view = ViewConfig(length_ms=150, random=True, seed=7)
    ens = single_teacher(teachers["blstm"], Rule("sample", {"n": 16}), view=view, seed=3)
    a, b = tmp_path / "a.zarr", tmp_path / "b.zarr"
    teach(ens, corpus.location, a, batch_frames=60, progress=False)
    teach(ens, corpus.location, b, batch_frames=60, shard=(1, 2), progress=False)
    teach(ens, corpus.location, b, batch_frames=60, shard=(0, 2), progress=False)
    ra, rb = StoreReader(a), StoreReader(b)
    starts = set()
    for uid in ra.ids:
        i = corpus.index_of(uid)
        ga, gb = ra.get(uid), rb.get(uid)
        start, stop = (int(v) for v in ga.input_window[0])
        assert stop - start == 15 and start >= 0 and stop <= corpus.num_frames[i]
        starts.add(start)
        np.testing.assert_array_equal(ga.input_window, gb.input_window)
        np.testing.assert_array_equal(ga.frame.indices, gb.frame.indices)
        np.testing.assert_array_equal(ga.frame.values, gb.frame.values)
        assert ga.frame.num_rows == 15
        np.testing.assert_array_equal(ga.hard_frame, corpus.frame_labels(i)[start:stop])
        ref = member_logp(teachers["blstm"], corpus.features(i)[start:stop])
        assert set(ga.frame.indices[ga.frame.offsets[0] : ga.frame.offsets[1]]) <= set(
            np.flatnonzero(np.exp(ref[0]) > 0)
        )
    assert len(starts) > 1  # drawn per utterance
