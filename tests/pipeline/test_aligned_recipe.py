"""The papers' regime inside a recipe: a transcribed synthetic corpus, an align stage
(Kaldi GMM-HMM tied states), students trained on the alignment, scored against it and
against the true phones the synth stage kept apart."""

from __future__ import annotations

import json

import pytest
import yaml

from kdpipe.errors import ConfigError
from kdpipe.pipeline import load_recipe, run_recipe, write_results

pytestmark = pytest.mark.slow
ALIGN = {  # tiny: a few EM passes, few leaves (the defaults are Kaldi's, for real corpora)
    "mono": {"iterations": 6, "realign_at": [1, 2, 3, 4], "gaussians": 200, "mixup_until": 4},
    "tri": {"iterations": 4, "realign_at": [2], "gaussians": 400, "mixup_until": 2},
    "num_leaves": 250,
    "tree_min_count": 20,
}
LEARN = {"student": "dnn", "model": {"hidden_dim": 32, "num_layers": 1},
         "train": {"epochs": 2, "num_threads": 1}}  # fmt: skip
RECIPE = {
    "name": "aligned",
    "stages": [
        {"name": "corpus", "synth": {"task": "phones", "num_utts": 150, "num_voices": 10,
                                     "accents": ["en-us"], "max_words": 5, "labels": "aligned",
                                     "seed": 3, "jobs": 2}},
        {"name": "aligned", "align": {"corpus": "corpus", "config": "align.yaml", "jobs": 2,
                                      "skip_bad": True}},
        {"name": "feats", "prepare": {"corpus": "aligned", "jobs": 1}},
        {"name": "teacher", "learn": {"corpus": "feats", "config": "learn.yaml",
                                      "eval": {"truth": "corpus"}}},
        {"name": "targets", "teach": {"corpus": "feats", "model": "teacher"}},
        {"name": "student", "learn": {"corpus": "feats", "config": "learn.yaml",
                                      "targets": ["targets"], "eval": {"truth": "corpus"}}},
        {"name": "again", "eval": {"corpus": "feats", "model": "student", "truth": "corpus"}},
    ],
    "results": {"rows": [{"label": "teacher", "stage": "teacher"},
                         {"label": "student", "stage": "student"}],
                "claims": [{"text": "KD helps", "better": "student", "than": "teacher"}]},
}  # fmt: skip


def _recipe(tmp_path, recipe):
    folder = tmp_path / "recipe"
    folder.mkdir(exist_ok=True)
    (folder / "pipeline.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    (folder / "align.yaml").write_text(yaml.safe_dump(ALIGN))
    (folder / "learn.yaml").write_text(yaml.safe_dump(LEARN))
    return folder


def test_an_aligned_recipe_scores_against_alignment_and_truth(tmp_path):
    report = run_recipe(load_recipe(_recipe(tmp_path, RECIPE)), tmp_path / "work",
                        progress=False)  # fmt: skip
    by_stage = {step.stage.name: report.summaries[step.key] for step in report.plan}
    align = by_stage["aligned"]
    assert align["tied_states"] > 155 and 0.5 < align["frame_agreement"] < 1.0
    labels = (tmp_path / "work" / "aligned" / "labels.txt").read_text().split()
    assert len(labels) == align["tied_states"]  # the students' classes: the tied states
    for name in ("teacher", "student", "again"):
        scores = by_stage[name]
        assert 0.0 < scores["truth_accuracy"] < 1.0, name
        assert 0.0 < scores["label_error"] < 0.5  # the alignment is wrong on some frames
        assert 0.0 <= scores["truth_accuracy_label_wrong"] <= 1.0
        assert scores["truth_frames"] > 1000
    assert by_stage["again"]["truth_accuracy"] == pytest.approx(
        by_stage["student"]["truth_accuracy"]
    )  # the same checkpoint, scored again
    markdown, data = write_results(report)
    text = markdown.read_text()
    assert "True-phone acc. (%)" in text and "alignment is wrong on" in text
    assert "on true-phone accuracy" in text
    row = json.loads(data.read_text())["rows"][1]
    assert row["truth_accuracy_mean"] == pytest.approx(100 * by_stage["student"]["truth_accuracy"])


def test_truth_without_a_reference_is_one_line(tmp_path):
    stages = [
        {"name": "corpus", "synth": {"task": "phones", "num_utts": 12, "num_voices": 3,
                                     "accents": ["en-us"], "max_words": 3, "jobs": 1}},
        {"name": "feats", "prepare": {"corpus": "corpus", "jobs": 1}},
        {"name": "model", "learn": {"corpus": "feats", "config": "learn.yaml",
                                    "eval": {"truth": "corpus"}}},
    ]  # fmt: skip
    recipe = load_recipe(_recipe(tmp_path, {"name": "x", "stages": stages}))
    with pytest.raises(ConfigError, match=r"truth .* holds no reference"):
        run_recipe(recipe, tmp_path / "work", progress=False)
