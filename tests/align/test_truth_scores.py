"""A model's phones against the true phones: all frames, and apart where the alignment it
learnt from was right and wrong; tied-state names back to their phones."""

from __future__ import annotations

import numpy as np
import pytest

from kdpipe.align.data_dir import state_phone
from kdpipe.align.truth import model_truth, read_table


def test_state_names_map_back_to_their_phones():
    assert state_phone("aa_1_3") == "aa"
    assert state_phone("sil_0") == "sil"
    assert state_phone("ng_2_12") == "ng"
    assert state_phone("sil") == "sil"  # a phone label stays itself


def test_model_truth_splits_frames_by_the_alignment():
    truth = {"u": np.array(list("aaabbbcccc"))}
    aligned = {"u": np.array(list("aabbbbcccc"))}  # frame 2 wrong (b for a)
    predicted = {"u": np.array(list("aaabbbccdd"))}  # right on frame 2, wrong on 8 and 9
    got = model_truth(predicted, aligned, truth)
    assert got["truth_frames"] == 10
    assert got["truth_accuracy"] == pytest.approx(0.8)
    assert got["label_error"] == pytest.approx(0.1)
    assert got["truth_accuracy_label_wrong"] == pytest.approx(1.0)  # beat its own label
    assert got["truth_accuracy_label_right"] == pytest.approx(7 / 9)


def test_model_truth_compares_a_subsampled_model_on_its_frames():
    truth = {"u": np.array(list("aabbccdd"))}
    aligned = dict(truth)
    got = model_truth({"u": np.array(list("abcd"))}, aligned, truth)  # every second frame
    assert got["truth_accuracy"] == 1.0 and got["truth_frames"] == 4


def test_utterances_without_truth_or_alignment_are_left_out(tmp_path):
    table = tmp_path / "phone_ali.txt"
    table.write_text("u a a b\nv b b\n")
    aligned = read_table(table)
    assert list(aligned) == ["u", "v"] and list(aligned["u"]) == ["a", "a", "b"]
    got = model_truth({"u": np.array(list("aab")), "w": np.array(["a"])}, aligned,
                      {"u": np.array(list("abb"))})  # fmt: skip
    assert got["truth_frames"] == 3 and got["truth_accuracy"] == pytest.approx(2 / 3)
