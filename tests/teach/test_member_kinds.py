"""Member kinds module, torchscript and onnx: kdpipe checkpoints (random weights) exported to
each format teach the same store as the checkpoint itself; their checks fail early, in one
line."""

from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import save_file
from torch import nn
from typer.testing import CliRunner

from kdpipe.cli.main import app
from kdpipe.errors import ConfigError, KdpipeError, LabelSetError, ModelError
from kdpipe.essence import Rule
from kdpipe.models import build_model, load_checkpoint
from kdpipe.models.checkpoint import file_sha256
from kdpipe.store.reader import StoreReader
from kdpipe.teach import EnsembleConfig, MemberConfig, teach
from kdpipe.teach.members import onnx as onnx_kind
from kdpipe.testing.teachers import LABELS, TINY

onnx = pytest.importorskip("onnx")  # exporting needs it; the onnx kind needs onnxruntime
pytest.importorskip("onnxruntime")

RULE = Rule("topk", {"k": 3})
BATCH = 90  # frames a batch: several batches, padded
SUB = {"dnn": 1, "blstm": 1, "tdnn": 2}
CLASS = {"dnn": "kdpipe.models.dnn:Dnn", "blstm": "kdpipe.models.lstm:Blstm",
         "tdnn": "kdpipe.models.tdnn:Tdnn"}  # fmt: skip


# --- exporting the test teachers ------------------------------------------------------


class Emit(nn.Module):
    """A kdpipe model whose outputs are turned into ``how``: probs, log_probs, or NaN for
    utterances longer than ``nan_over`` frames (sqrt of a negative number)."""

    def __init__(self, model: nn.Module, how: str = "logits", nan_over: float = 0.0) -> None:
        super().__init__()
        self.model, self.how, self.nan_over = model, how, nan_over

    def forward(self, x: torch.Tensor, lengths: torch.Tensor):
        logits, out_lengths = self.model(x, lengths)
        if self.how == "probs":
            logits = torch.softmax(logits, -1)
        elif self.how == "log_probs":
            logits = torch.log_softmax(logits, -1)
        elif self.how == "nan":
            logits = logits * torch.sqrt(self.nan_over - lengths.float())[:, None, None]
        return logits, out_lengths


class NoLengths(nn.Module):
    """forward(x) alone, logits alone: every row of x is a whole utterance."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lengths = torch.full((x.shape[0],), x.shape[1], dtype=torch.int64)
        return self.model(x, lengths)[0]


def example(dim: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    return torch.randn(2, 23, dim), torch.tensor([23, 17])


def to_onnx(model: nn.Module, path: Path, dim: int = 8, *, dynamic: bool = True,
            lengths: bool = True, metadata: dict[str, str] | None = None) -> Path:  # fmt: skip
    """The legacy (TorchScript-based) exporter: features and lengths in, logits and
    lengths out, dynamic batch and time axes (``dynamic``)."""
    x, n = example(dim)
    names = ["feats", "lengths"], ["logits", "out_lengths"]
    if not lengths:
        names = ["feats"], ["logits"]
    axes = {"feats": {0: "B", 1: "T"}, "lengths": {0: "B"}, "logits": {0: "B", 1: "T_out"},
            "out_lengths": {0: "B"}}  # fmt: skip
    if not dynamic:
        axes = {"feats": {1: "T"}, "logits": {1: "T_out"}}
    axes = {k: v for k, v in axes.items() if k in names[0] + names[1]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation of the legacy exporter, tracer notes
        torch.onnx.export(model.eval(), (x, n) if lengths else (x[:1],), str(path),
                          input_names=names[0], output_names=names[1], dynamic_axes=axes,
                          dynamo=False, opset_version=17)  # fmt: skip
    if metadata:
        proto = onnx.load(str(path))
        for key, value in metadata.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(proto, str(path))
    return path


def to_torchscript(model: nn.Module, path: Path, extra: dict[str, str] | None = None) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated; tracer notes
        traced = torch.jit.trace(model.eval(), example())
        torch.jit.save(traced, str(path), _extra_files=extra or {})
    return path


def module_member(ckpt: Path, where: Path, fmt: str, **kw) -> MemberConfig:
    """The checkpoint's own class, its card's arguments, its weights saved as ``fmt``."""
    model, card = load_checkpoint(ckpt)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if fmt == "safetensors":
        weights = where / f"{card.architecture}.safetensors"
        save_file(state, str(weights))
    else:
        weights = where / f"{card.architecture}.pt"
        torch.save(state, weights)
    args = {"num_features": card.num_features, "num_classes": card.num_classes,
            "config": card.model_config}  # fmt: skip
    return MemberConfig(kind="module", module=CLASS[card.architecture], args=args,
                        weights=str(weights), subsampling=card.subsampling, **kw)  # fmt: skip


def member(kind: str, arch: str, teachers, where: Path, **kw) -> MemberConfig:
    ckpt = teachers[arch]
    if kind.startswith("module"):
        return module_member(ckpt, where, kind.partition("-")[2], **kw)
    model, _ = load_checkpoint(ckpt)
    if kind == "onnx":
        path = to_onnx(model, where / f"{arch}.onnx")
    else:
        path = to_torchscript(model, where / f"{arch}.pt")
    return MemberConfig(kind=kind, path=str(path), subsampling=SUB[arch], **kw)


# --- teaching and comparing -----------------------------------------------------------


def run(members, corpus, out: Path, trust: bool = False, **kw) -> Path:
    ens = EnsembleConfig(members=tuple(members), rule=RULE, values="float16", **kw)
    teach(ens, corpus.location, out, batch_frames=BATCH, progress=False, trust_custom_code=trust)
    return out


def assert_same_targets(got: Path, want: Path, columns: np.ndarray | None = None) -> None:
    """Same ids, same top-k classes (``columns[i]``: the class ``got`` has for ``want``'s
    class i), values within float16's precision."""
    a, b = StoreReader(got), StoreReader(want)
    assert sorted(a.ids) == sorted(b.ids) and len(a) > 0
    for uid in b.ids:
        x, y = a.get(uid), b.get(uid)
        want_idx = y.frame.indices if columns is None else columns[y.frame.indices]
        np.testing.assert_array_equal(x.frame.indices, want_idx, err_msg=uid)
        np.testing.assert_allclose(x.frame.logprobs(), y.frame.logprobs(), rtol=2e-3, atol=1e-2)
        np.testing.assert_array_equal(x.hard_frame, y.hard_frame)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, corpus, teachers):
    """arch -> the store the kdpipe checkpoint itself teaches (made once)."""
    made: dict[str, Path] = {}

    def get(arch: str) -> Path:
        if arch not in made:
            out = tmp_path_factory.mktemp("reference") / f"{arch}.zarr"
            made[arch] = run([MemberConfig(str(teachers[arch]))], corpus, out)
        return made[arch]

    return get


def one_line(error: pytest.ExceptionInfo, *fragments: str) -> None:
    message = str(error.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message


# --- every kind teaches what the checkpoint teaches ------------------------------------


@pytest.mark.parametrize(
    "kind, arch",
    [("onnx", "dnn"), ("onnx", "blstm"), ("onnx", "tdnn"),
     ("torchscript", "dnn"), ("torchscript", "blstm"), ("torchscript", "tdnn"),
     ("module-safetensors", "dnn"), ("module-pt", "blstm"), ("module-safetensors", "tdnn")],
)  # fmt: skip
def test_kind_teaches_the_checkpoints_store(tmp_path, corpus, teachers, reference, kind, arch):
    config = member(kind, arch, teachers, tmp_path)
    out = run([config], corpus, tmp_path / "t.zarr", trust=kind != "onnx")
    assert_same_targets(out, reference(arch))
    meta = StoreReader(out).meta
    teacher = meta.teachers[0]
    assert teacher.card["kind"] == kind.partition("-")[0]
    assert teacher.weights_sha256 == file_sha256(config.source)
    assert meta.subsampling == SUB[arch]
    if kind == "onnx":
        assert teacher.card["input"]["shape"] == ["B", "T", 8]
        assert teacher.card["lengths_input"] == "lengths" and teacher.card["opset"] == 17
        assert teacher.card["producer"].startswith("pytorch")


@pytest.mark.parametrize("kind, how", [("onnx", "probs"), ("torchscript", "log_probs"),
                                       ("onnx", "log_probs")])  # fmt: skip
def test_probs_and_log_probs_outputs(tmp_path, corpus, teachers, reference, kind, how):
    model = Emit(load_checkpoint(teachers["blstm"])[0], how)
    if kind == "onnx":
        path = to_onnx(model, tmp_path / "m.onnx")
    else:
        path = to_torchscript(model, tmp_path / "m.pt")
    config = MemberConfig(kind=kind, path=str(path), output=how)
    assert_same_targets(run([config], corpus, tmp_path / "t.zarr", trust=True), reference("blstm"))


def test_a_mixed_ensemble_equals_the_checkpoint_ensemble(tmp_path, corpus, teachers):
    """onnx blstm + torchscript dnn + module tdnn == the three checkpoints."""
    mixed = [member("onnx", "blstm", teachers, tmp_path, weight=2.0),
             member("torchscript", "dnn", teachers, tmp_path, temperature=2.0),
             member("module-safetensors", "tdnn", teachers, tmp_path)]  # fmt: skip
    plain = [MemberConfig(str(teachers["blstm"]), weight=2.0),
             MemberConfig(str(teachers["dnn"]), temperature=2.0),
             MemberConfig(str(teachers["tdnn"]))]  # fmt: skip
    got = run(mixed, corpus, tmp_path / "mixed.zarr", trust=True, keep_members=True)
    want = run(plain, corpus, tmp_path / "plain.zarr", keep_members=True)
    assert_same_targets(got, want)
    assert StoreReader(got).meta.members == ("blstm.onnx", "dnn.pt", "tdnn.safetensors")


# --- labels -----------------------------------------------------------------------------


def test_labels_from_the_model_file(tmp_path, corpus, teachers, reference):
    """ONNX metadata_props "labels" (a JSON list) and a TorchScript extra file "labels"
    name the classes: reversed here, mapped onto the corpus' by name."""
    model = load_checkpoint(teachers["blstm"])[0]
    rev = list(reversed(LABELS))
    onnx_path = to_onnx(model, tmp_path / "m.onnx", metadata={"labels": str(rev).replace("'", '"')})
    ts_path = to_torchscript(model, tmp_path / "m.pt", extra={"labels": "\n".join(rev)})
    columns = np.arange(len(LABELS))[::-1]  # class i of the model is corpus class C-1-i
    for kind, path in (("onnx", onnx_path), ("torchscript", ts_path)):
        config = MemberConfig(kind=kind, path=str(path), label_map="names")
        out = run([config], corpus, tmp_path / f"{kind}.zarr", trust=True)
        assert_same_targets(out, reference("blstm"), columns)
    with pytest.raises(LabelSetError) as error:  # without the label map: they disagree
        run([MemberConfig(kind="onnx", path=str(onnx_path))], corpus, tmp_path / "x.zarr")
    one_line(error, "label set")


def test_labels_file_that_disagrees_with_the_outputs(tmp_path, corpus, teachers):
    model = load_checkpoint(teachers["blstm"])[0]  # outputs 5 classes (a static axis in ONNX)
    labels = tmp_path / "labels.txt"
    labels.write_text("sil\na\nb\nc\n")
    onnx_path = to_onnx(model, tmp_path / "m.onnx")
    bad = MemberConfig(kind="onnx", path=str(onnx_path), labels=str(labels), label_map="names")
    out = tmp_path / "o.zarr"
    with pytest.raises(ModelError) as error:
        run([bad], corpus, out)
    one_line(error, "m.onnx", "outputs 5 classes, its labels file has 4")
    assert not out.exists()  # before any inference
    ts = MemberConfig(kind="torchscript", path=str(to_torchscript(model, tmp_path / "m.pt")),
                      labels=str(labels), label_map="names")  # fmt: skip
    with pytest.raises(ModelError) as error:  # TorchScript does not say: the first batch
        run([ts], corpus, tmp_path / "t.zarr", trust=True)
    one_line(error, "member m.pt", "outputs 5 classes, its label set has 4")


def test_no_labels_anywhere(tmp_path, teachers):
    """A corpus without labels (transcribed: ``corpus_labels`` None) and a model that names
    none: the member must give labels:."""
    path = to_onnx(load_checkpoint(teachers["dnn"])[0], tmp_path / "m.onnx")
    with pytest.raises(ConfigError) as error:
        onnx_kind.describe(MemberConfig(kind="onnx", path=str(path)), "member 0 (m.onnx)", None)
    one_line(error, "member 0 (m.onnx): give labels:")
    labels = tmp_path / "phones.txt"
    labels.write_text("".join(f"{name} {i}\n" for i, name in enumerate(LABELS)))  # Kaldi table
    config = MemberConfig(kind="onnx", path=str(path), labels=str(labels))
    assert onnx_kind.describe(config, "m", None).labels.names == LABELS


# --- module -----------------------------------------------------------------------------


def test_module_import_construct_and_weights_errors(tmp_path, corpus, teachers):
    good = module_member(teachers["dnn"], tmp_path, "safetensors", name="m")
    cases = [
        ({"module": "no_such_package.models:Net"}, ["member m", "no_such_package"]),
        ({"module": "kdpipe.models.dnn:Nope"}, ["member m", "has no class 'Nope'"]),
        ({"args": {**good.args, "hidden": 3}},
         ["member m: building kdpipe.models.dnn:Dnn(", "hidden=3", "TypeError"]),
        ({"args": {**good.args, "config": {**good.args["config"], "hidden_dim": 7}}},
         ["member m", "does not fit kdpipe.models.dnn:Dnn", "shape mismatch"]),
        ({"args": {**good.args, "config": {"bogus": 1}}}, ["member m", "bogus"]),
        ({"module": CLASS["blstm"], "args": {"num_features": 8, "num_classes": 5}},
         ["member m", "missing keys", "unexpected keys"]),
    ]  # fmt: skip
    for change, fragments in cases:
        config = replace(good, **change)
        with pytest.raises(ModelError) as error:
            run([config], corpus, tmp_path / "x.zarr", trust=True)
        one_line(error, *fragments)


def test_module_weights_are_never_unpickled(tmp_path, corpus, teachers):
    model, _ = load_checkpoint(teachers["dnn"])
    good = module_member(teachers["dnn"], tmp_path, "pt", name="m")
    pickled, wrapped = tmp_path / "whole.pt", tmp_path / "wrapped.pt"
    torch.save(model, pickled)  # a whole module: needs a full unpickle
    torch.save({"epoch": 3, "state_dict": model.state_dict()}, wrapped)
    for path, fragment in ((pickled, "refuses"), (wrapped, "holds keys ['epoch'")):
        config = replace(good, weights=str(path))
        with pytest.raises(ModelError) as error:
            run([config], corpus, tmp_path / "x.zarr", trust=True)
        one_line(error, "member m", fragment)


def test_model_attributes_checked_against_the_member(tmp_path, corpus, teachers):
    config = module_member(teachers["tdnn"], tmp_path, "safetensors", name="m")
    wrong = replace(config, subsampling=1)
    with pytest.raises(ModelError) as error:
        run([wrong], corpus, tmp_path / "x.zarr", trust=True)
    one_line(error, "member m", "subsampling 2", "set subsampling: 2")


def test_code_kinds_need_trust(tmp_path, corpus, teachers):
    for kind in ("torchscript", "module-safetensors"):
        config = member(kind, "dnn", teachers, tmp_path)
        with pytest.raises(ModelError) as error:
            run([config], corpus, tmp_path / "x.zarr")
        one_line(error, "--trust-custom-code")


# --- torchscript ------------------------------------------------------------------------


def test_not_torchscript(tmp_path, corpus, teachers):
    model = load_checkpoint(teachers["dnn"])[0]
    state = tmp_path / "state.pt"
    torch.save(model.state_dict(), state)
    onnx_path = to_onnx(model, tmp_path / "m.onnx")
    for path, fragment in ((state, "holds no TorchScript code"), (onnx_path, "not a zip")):
        with pytest.raises(ModelError) as error:
            run([MemberConfig(kind="torchscript", path=str(path))], corpus, tmp_path / "x.zarr",
                trust=True)  # fmt: skip
        one_line(error, path.name, fragment)
    broken = tmp_path / "broken.pt"  # a zip that claims code but does not load
    to_torchscript(model, broken)
    data = bytearray(broken.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = b"\0" * 64
    broken.write_bytes(bytes(data))
    with pytest.raises(KdpipeError) as error:
        run([MemberConfig(kind="torchscript", path=str(broken))], corpus, tmp_path / "y.zarr",
            trust=True)  # fmt: skip
    one_line(error, "broken.pt")


def test_failing_forward_is_one_line(tmp_path, corpus):
    """A TorchScript dnn for 6 features on 8 (TorchScript declares no dimension: the first
    batch fails), and the same as ONNX with a dynamic feature axis (nothing to check)."""
    narrow = build_model("dnn", 6, len(LABELS), TINY["dnn"]).eval()
    x, n = example(6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(narrow, (x, n)), str(tmp_path / "six.pt"))
        torch.onnx.export(narrow, (x, n), str(tmp_path / "six.onnx"), input_names=["x", "n"],
                          dynamic_axes={"x": {0: "B", 1: "T", 2: "F"}, "n": {0: "B"}},
                          dynamo=False, opset_version=17)  # fmt: skip
    for kind, file, fragment in (
        ("torchscript", "six.pt", "forward(x, lengths) on x of shape"),
        ("onnx", "six.onnx", "onnxruntime failed on input of shape"),
    ):
        with pytest.raises(ModelError) as error:
            run([MemberConfig(kind=kind, path=str(tmp_path / file))], corpus,
                tmp_path / f"{kind}.zarr", trust=True)  # fmt: skip
        one_line(error, f"member {file}: {fragment}", ", 8]")


# --- onnx -------------------------------------------------------------------------------


def test_onnx_feature_dim_disagrees_before_inference(tmp_path, corpus):
    narrow = build_model("dnn", 6, len(LABELS), TINY["dnn"])  # for 6 features, not 8
    path = to_onnx(narrow, tmp_path / "six.onnx", dim=6)
    out = tmp_path / "x.zarr"
    with pytest.raises(ModelError) as error:
        run([MemberConfig(kind="onnx", path=str(path))], corpus, out)
    one_line(error, "six.onnx", "expects 6 features, its input has 8")
    assert not out.exists()


def test_onnx_nan_names_the_utterance(tmp_path, corpus, teachers):
    frames = sorted(int(n) for n in corpus.num_frames)
    limit = frames[len(frames) // 2] + 0.5  # the longer half of the utterances give NaN
    model = Emit(load_checkpoint(teachers["tdnn"])[0], "nan", limit)
    path = to_onnx(model, tmp_path / "nan.onnx")
    with pytest.raises(ModelError) as error:
        run([MemberConfig(kind="onnx", path=str(path), subsampling=2)], corpus,
            tmp_path / "x.zarr")  # fmt: skip
    one_line(error, "member nan.onnx", "NaN or infinite logits for utterance")
    utt = str(error.value).split("for utterance ")[1].split()[0]
    assert corpus.num_frames[corpus.index_of(utt)] > limit


def test_onnx_static_batch_of_one_runs_per_utterance(tmp_path, corpus, teachers, reference):
    """No lengths input, no lengths output, a static batch of 1: each utterance alone."""
    model = NoLengths(load_checkpoint(teachers["blstm"])[0])
    path = to_onnx(model, tmp_path / "one.onnx", dynamic=False, lengths=False)
    header = onnx_kind.read_header(path, "test")
    assert header.inputs[0].shape == (1, "T", 8) and len(header.outputs) == 1
    config = MemberConfig(kind="onnx", path=str(path))
    out = run([config], corpus, tmp_path / "t.zarr")
    assert_same_targets(out, reference("blstm"))
    assert StoreReader(out).meta.teachers[0].card["per_utterance"] is True


def test_onnx_static_axes_refused(tmp_path, corpus, teachers):
    model = load_checkpoint(teachers["dnn"])[0]
    x, n = example()
    for axes, fragment in (
        ({}, "static batch axis of 2"),
        ({"feats": {0: "B"}, "lengths": {0: "B"}}, "static time axis of 23"),
    ):
        path = tmp_path / "fixed.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (x, n), str(path), input_names=["feats", "lengths"],
                              dynamic_axes=axes, dynamo=False, opset_version=17)  # fmt: skip
        with pytest.raises(ModelError) as error:
            run([MemberConfig(kind="onnx", path=str(path))], corpus, tmp_path / "x.zarr")
        one_line(error, "member 0 (fixed.onnx): input 'feats'", fragment)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\xff\xff\xff" * 8)
    with pytest.raises(ModelError) as error:
        run([MemberConfig(kind="onnx", path=str(garbage))], corpus, tmp_path / "y.zarr")
    one_line(error, "member 0 (garbage.onnx): onnxruntime cannot load garbage.onnx")


def test_onnx_header_agrees_with_the_onnx_package(tmp_path, teachers):
    """describe reads the header without the onnx package (onnxruntime, and the file's
    top-level protobuf fields): the same as onnx reads."""
    path = to_onnx(load_checkpoint(teachers["tdnn"])[0], tmp_path / "m.onnx",
                   metadata={"labels": "a\nb"})  # fmt: skip
    header, proto = onnx_kind.read_header(path, "t"), onnx.load(str(path))
    dims = [[d.dim_value or d.dim_param for d in i.type.tensor_type.shape.dim]
            for i in (*proto.graph.input, *proto.graph.output)]  # fmt: skip
    assert [list(p.shape or []) for p in (*header.inputs, *header.outputs)] == dims
    assert [p.name for p in header.inputs] == [i.name for i in proto.graph.input]
    assert [p.dtype for p in header.outputs] == ["float32", "int64"]
    assert header.metadata == {"labels": "a\nb"} and header.opset == 17
    assert header.producer == f"{proto.producer_name} {proto.producer_version}"
    assert onnx_kind._model_fields(tmp_path / "missing.onnx") == {}  # best effort, no error


def test_onnx_providers():
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 1)
    everything = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert onnx_kind.providers_for(cpu, everything) == ["CPUExecutionProvider"]
    assert onnx_kind.providers_for(cuda, ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert onnx_kind.providers_for(cuda, everything) == [
        ("CUDAExecutionProvider", {"device_id": 1}),
        "CPUExecutionProvider",
    ]


# --- the command line --------------------------------------------------------------------


def test_cli_runs_and_refuses_in_one_line(tmp_path, corpus, teachers):
    model = load_checkpoint(teachers["dnn"])[0]
    to_onnx(model, tmp_path / "dnn.onnx")
    to_torchscript(model, tmp_path / "dnn.pt")
    (tmp_path / "four.txt").write_text("sil\na\nb\nc\n")

    def teach_cli(member: dict, *flags: str):
        file = tmp_path / "ensemble.yaml"
        file.write_text(yaml.safe_dump({"members": [member], "rule": {"name": "topk",
                                        "params": {"k": 2}}}))  # fmt: skip
        out = tmp_path / f"out{len(list(tmp_path.glob('out*')))}.zarr"
        args = ["teach", "--no-progress", "--model", str(file), "--corpus", corpus.location,
                "--out", str(out), *flags]  # fmt: skip
        return CliRunner().invoke(app, args)

    def refused(r, *fragments: str) -> None:
        assert r.exit_code == 1 and isinstance(r.exception, SystemExit), r.output
        lines = r.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:"), r.output
        for fragment in fragments:
            assert fragment in " ".join(r.output.split()), r.output

    r = teach_cli({"kind": "onnx", "path": "dnn.onnx"})
    assert r.exit_code == 0, r.output
    refused(teach_cli({"kind": "torchscript", "path": "dnn.pt"}), "--trust-custom-code")
    r = teach_cli({"kind": "torchscript", "path": "dnn.pt"}, "--trust-custom-code")
    assert r.exit_code == 0, r.output
    refused(teach_cli({"kind": "torchscript", "path": "dnn.pt", "labels": "four.txt",
                       "label_map": "names"}, "--trust-custom-code"),
            "outputs 5 classes, its label set has 4")  # fmt: skip
    refused(teach_cli({"kind": "module", "module": "kdpipe.models.dnn:Dnn", "args": {"x": 1},
                       "weights": "dnn.pt", "name": "mine"}, "--trust-custom-code"),
            "member mine", "not a torch state dict")  # fmt: skip


def test_cli_model_may_be_an_onnx_file(tmp_path, corpus, teachers, reference):
    """``kdpipe teach --model m.onnx --topk K``: one ONNX member, no yaml."""
    path = to_onnx(load_checkpoint(teachers["dnn"])[0], tmp_path / "dnn.onnx")
    out = tmp_path / "cli.zarr"
    k = RULE.params["k"]
    r = CliRunner().invoke(app, ["teach", "--no-progress", "--model", str(path), "--corpus",
                                 corpus.location, "--out", str(out), "--topk", str(k),
                                 "--values", "float16", "--batch-frames", str(BATCH)])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert StoreReader(out).meta.teachers[0].card["kind"] == "onnx"
    assert_same_targets(out, reference("dnn"))
