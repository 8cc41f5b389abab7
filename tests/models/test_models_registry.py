"""The registry: errors for unknown names, and user models as ``package.module:Class``."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest
import torch

import kdpipe.models
from kdpipe.errors import ModelError
from kdpipe.models import build_model, check_protocol, known_models

torch.set_num_threads(1)

F, C = 6, 5


@pytest.fixture(autouse=True)
def custom_students_importable(monkeypatch):
    """Put tests/models on sys.path so ``custom_students:Class`` imports like user code."""
    monkeypatch.syspath_prepend(str(Path(__file__).parent))


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ModelError, match="unknown model 'transformer'") as e:
        build_model("transformer", F, C)
    for name in known_models():
        assert name in str(e.value)
    assert "package.module:Class" in str(e.value)


@pytest.mark.parametrize(
    ("features", "classes", "what"), [(0, 5, "num_features"), (6, -1, "num_classes")]
)
def test_bad_dimensions(features, classes, what):
    with pytest.raises(ModelError, match=f"{what} must be an integer >= 1"):
        build_model("dnn", features, classes)


def test_config_must_be_a_mapping():
    with pytest.raises(ModelError, match="config must be a mapping, got list"):
        build_model("dnn", F, C, [1, 2])


def test_custom_frame_model_builds_and_runs():
    model = build_model("custom_students:TinyStudent", F, C, {"hidden": 8})
    assert type(model).__name__ == "TinyStudent"
    assert model.net[0].out_features == 8
    spec = model.kdpipe_spec
    assert (spec.architecture, spec.config) == ("custom_students:TinyStudent", {"hidden": 8})
    logits, out_lengths = model(torch.randn(2, 7, F), torch.tensor([7, 4]))
    assert logits.shape == (2, 4, C) and out_lengths.tolist() == [4, 2]


def test_custom_utterance_model_builds():
    model = build_model("custom_students:ClipStudent", F, C)
    assert model.level == "utterance"  # the older spelling, still accepted


@pytest.mark.parametrize(
    ("cls", "message"),
    [
        ("ReturnsTensor", r"returned a single tensor; it must return a tuple \(logits, out_"),
        ("ReturnsTriple", "returned a tuple of length 3"),
        (
            "FrameButPooled",
            r"is frame level: logits must have shape \(B, T', C\) = \(3, 12, 5\), "
            r"got rank 2 shape \(3, 5\) \(a clip classifier must declare level = 'utt'\)",
        ),
        (
            "UtteranceButFrames",
            r"is utterance level: logits must have shape \(B, C\) = \(3, 5\), "
            r"got rank 3 shape \(3, 23, 5\) \(pool over time, or declare level = 'frame'\)",
        ),
        ("WrongClasses", r"logits have 6 classes \(last dim\) but num_classes is 5"),
        (
            "WrongSubsampling",
            r"returned 23 frames for 23 input frames, but its declared "
            r"subsampling = 2 needs T' = ceil\(23 / 2\) = 12",
        ),
        (
            "WrongOutLengths",
            r"out_lengths \[11, 8, 2\] for lengths \[23, 16, 5\], expected "
            r"\[12, 8, 3\] \(ceil\(lengths / 2\)\)",
        ),
        ("FloatOutLengths", "out_lengths must be an int64 tensor of shape"),
        ("NoLevel", "has no 'level' attribute: add the class attribute level = 'frame'"),
        ("BadLevel", "level must be 'frame' or 'utt' \\(utterance\\), got 'clip'"),
        ("NoSubsampling", "is frame level but has no 'subsampling' attribute"),
        ("ZeroSubsampling", "subsampling must be an int >= 1, got 0"),
        (
            "LeakyPadding",
            r"outputs of utterance 1 \(16 frames\) change when it is padded to 23 "
            r"frames in a batch \(max abs diff",
        ),
        (
            "ForwardWithoutLengths",
            r"forward\(x, lengths\) on x of shape \(3, 23, 6\), lengths "
            r"\[23, 16, 5\] failed: TypeError",
        ),
        ("NoParameters", "has no parameters to train"),
        (
            "OldSignature",
            r"building custom_students:OldSignature\(num_features=6, "
            r"num_classes=5, \*\*\{\}\) failed: TypeError",
        ),
    ],
    ids=lambda v: v if v[:1].isupper() else "",
)
def test_broken_custom_models_are_rejected_with_what_is_wrong(cls, message):
    with pytest.raises(ModelError, match=message):
        build_model(f"custom_students:{cls}", F, C)


def test_leaky_padding_names_an_utterance_and_the_fix():
    with pytest.raises(ModelError) as e:
        build_model("custom_students:LeakyPadding", F, C)
    assert "padded frames leak into real ones; mask them or pack the sequences" in str(e.value)


def test_check_false_skips_the_protocol_run():
    model = build_model("custom_students:LeakyPadding", F, C, check=False)
    check_protocol(model, F, C, check_padding=False)  # shapes are fine, only padding leaks


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("custom_students:Missing", "module 'custom_students' has no class 'Missing'"),
        ("no_such_module_xyz:Model", r"cannot import module 'no_such_module_xyz'.*PYTHONPATH"),
        ("custom_students:NotAModule", "is not a torch.nn.Module subclass"),
        ("custom_students:not_a_class", "is not a torch.nn.Module subclass"),
        ("custom_students:", "must look like 'package.module:Class'"),
        (":Model", "must look like 'package.module:Class'"),
        ("os:system", "is not a torch.nn.Module subclass"),
    ],
)
def test_bad_custom_references(ref, message):
    with pytest.raises(ModelError, match=message):
        build_model(ref, F, C)


def test_custom_config_must_be_json_data():
    with pytest.raises(ModelError, match="must be plain JSON data"):
        build_model("custom_students:TinyStudent", F, C, {"hidden": object()})


def test_check_protocol_rejects_a_non_module():
    with pytest.raises(ModelError, match=r"is not a torch.nn.Module"):
        check_protocol(types.SimpleNamespace(level="frame", subsampling=1), F, C)


def test_the_docstring_example_follows_the_protocol():
    doc = kdpipe.models.__doc__
    block = re.search(r"Example.*?::\n\n(.*?)\n\n(?=\S)", doc, re.S)
    assert block, "example code block not found in kdpipe.models docstring"
    namespace: dict = {}
    exec(textwrap.dedent(block.group(1)), namespace)
    model = namespace["TinyStudent"](num_features=F, num_classes=C)
    check_protocol(model, F, C)
    assert model.subsampling == 2


def test_importing_kdpipe_models_does_not_import_torch():
    code = "import sys, kdpipe.models; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
