"""Kind ``onnx``: an ONNX model run by onnxruntime. Runs no Python code that came with it,
so it needs no ``--trust-custom-code``.

Accepts::

    - kind: onnx
      path: exp/blstm.onnx
      labels: phones.txt   # "": the model's metadata_props "labels", else the corpus'
      subsampling: 1       # output frames per input frame
      output: logits       # or log_probs, probs

The model's inputs and outputs are read from the model itself (names, element types,
static and dynamic axes); nothing is configured:

- input 0: the features (B, T, F), float32 (float16 and float64 are fed as such), or the
  samples (B, S) of a waveform member (``input: {waveform: RATE}``);
- input 1, optional, of an integer type: the lengths (B,) (int64 or int32, as declared),
  fed when present. A model without it gets zero-padded batches and must not mind the
  padding (else export it with a static batch of 1, below). No other inputs.
- output 0: the posteriors (B, T_m, C) (frame level) or (B, C) (``level: utt``), in the
  member's ``output`` kind;
- output 1, optional, of an integer type: the output lengths (B,); without it the valid
  frames are ceil(lengths * T_m / T) (``base.lengths_by_ratio``). Other outputs are not
  computed.

Checks, in ``describe`` (the header read from an onnxruntime session with graph
optimisations off, the opset and producer off the file's top-level protobuf fields: the
``onnx`` package is not needed), so that a wrong model fails before any inference: the
file loads in onnxruntime; the input ranks and types above; a
static time axis, or a static batch axis other than 1, is refused (export with dynamic
axes); the static feature dimension becomes ``Declared.num_features``, which the planner
checks against the member's input ("expects 40 features, its input has 80"); a static
class dimension of output 0 must equal the size of the member's label set ("outputs 42
classes, its labels file has 41"); output 0 must be of rank 3 for a frame-level member,
2 for an utterance-level one. Labels: the ``labels:`` file, else a metadata_props entry
``labels`` (a JSON list of names, or one a line), else the corpus'. In ``load``: the file
still has the sha256 ``describe`` saw.

Choices:

- providers: ``CUDAExecutionProvider`` (on the device's index), then the CPU one, when
  the teach device is CUDA and onnxruntime has that provider (onnxruntime-gpu); else the
  CPU provider, with a note on stderr if CUDA was asked for;
- threads: intra-op = ``torch.get_num_threads()`` (the CPU budget the run gives torch,
  which ``OMP_NUM_THREADS`` and ``torch.set_num_threads`` set: members run one after
  another on the teacher thread, so the ONNX member gets what a checkpoint member would
  get), inter-op 1, sequential execution, and spinning off: idle onnxruntime threads do
  not busy-wait while torch runs the other members and the combination;
- tensors: torch in, numpy to the session (copied to the host), torch out on the
  device. No IO binding: a CUDA member pays two host copies per batch;
- a static batch axis of 1: the batch is run utterance by utterance, each cut to its own
  length (so even a model that cannot mask padding gives exact outputs), and the outputs
  are zero-padded back into one (B, T_m, C) batch, with each run's frames (or its
  output lengths) as the valid lengths;
- onnxruntime's own log is limited to fatal messages: its warnings (unused initialisers
  and the like) would clutter teach's output, and its errors come back as exceptions,
  which become one ``ModelError`` line naming the member and the batch's shape.
"""

from __future__ import annotations

import importlib
import mmap
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

from kdpipe.errors import ModelError
from kdpipe.labels import LabelSet
from kdpipe.models.checkpoint import file_sha256
from kdpipe.teach.ensemble_yaml import MemberConfig
from kdpipe.teach.members.base import (
    Declared,
    Network,
    declared_by_config,
    existing_file,
    labels_from_text,
    member_labels,
    one_line,
)

FLOATS = ("float32", "float16", "float64")
INTEGERS = ("int64", "int32")
LABELS_KEY = "labels"  # the metadata_props entry that names the classes
ORT_QUIET = 4  # onnxruntime log severity: 0 verbose ... 3 error, 4 fatal (errors are raised)
_ORT_TYPES = {  # onnxruntime's type strings -> numpy dtype names
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int16)": "int16",
    "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(bool)": "bool",
    "tensor(bfloat16)": "bfloat16", "tensor(string)": "str",
}  # fmt: skip

Dim = int | str | None  # static size, named dynamic axis, or unknown


@dataclass(frozen=True)
class Port:
    """One input or output of the graph."""

    name: str
    dtype: str  # numpy dtype name ("float32", "int64"); "" for a non-tensor
    shape: tuple[Dim, ...] | None  # None: rank unknown

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.dtype,
            "shape": None if self.shape is None else list(self.shape),
        }

    def static(self, axis: int) -> int | None:
        """The static size of ``axis``, else None."""
        if self.shape is None or not -len(self.shape) <= axis < len(self.shape):
            return None
        dim = self.shape[axis]
        return dim if isinstance(dim, int) and dim > 0 else None


@dataclass(frozen=True)
class Header:
    """What ``describe`` reads of an ONNX model."""

    inputs: tuple[Port, ...]
    outputs: tuple[Port, ...]
    metadata: dict[str, str] = field(default_factory=dict)
    opset: int | None = None
    producer: str = ""


@dataclass(frozen=True)
class Layout:
    """Which inputs and outputs are which, and how batches are fed."""

    features: Port
    lengths: Port | None
    posteriors: Port
    out_lengths: Port | None
    per_utterance: bool  # static batch axis of 1: one utterance a run

    def to_dict(self) -> dict[str, Any]:
        return {
            "input": self.features.to_dict(),
            "lengths_input": None if self.lengths is None else self.lengths.name,
            "output": self.posteriors.to_dict(),
            "lengths_output": None if self.out_lengths is None else self.out_lengths.name,
            "per_utterance": self.per_utterance,
        }


def _import(module: str, where: str) -> ModuleType:
    """onnxruntime, imported on first use (as a module object: it ships no type hints)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ModelError(
            f"{where}: kind onnx needs onnxruntime: pip install onnxruntime (or "
            "onnxruntime-gpu for CUDA)"
        ) from None


def _varint(buf: Any, i: int) -> tuple[int, int]:
    """The protobuf varint at ``buf[i]`` and the position after it."""
    value = shift = 0
    while True:
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i
        shift += 7


def _fields(buf: Any, start: int, end: int) -> Iterator[tuple[int, Any]]:
    """(field number, value) of the protobuf message ``buf[start:end]``: ints for varints,
    (offset, end) pairs for length-delimited fields (not read), None for fixed widths."""
    i = start
    while i < end:
        key, i = _varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
            yield field, value
        elif wire == 2:
            size, i = _varint(buf, i)
            yield field, (i, i + size)
            i += size
        elif wire in (1, 5):
            i += 8 if wire == 1 else 4
            yield field, None
        else:
            raise ValueError(f"wire type {wire}")


def _model_fields(file: Path) -> dict[str, Any]:
    """The opset and producer of an ONNX file, from ModelProto's top-level fields
    (producer_name 2, producer_version 3, opset_import 8 = {domain 1, version 2}); the
    graph (field 7) is skipped unread (mmap). Best effort: {} for anything unexpected."""
    found: dict[str, Any] = {}
    try:
        with (
            open(file, "rb") as handle,
            mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buf,
        ):
            for field, value in _fields(buf, 0, len(buf)):
                if field in (2, 3) and isinstance(value, tuple):
                    key = "producer" if field == 2 else "version"
                    found[key] = bytes(buf[value[0] : value[1]]).decode("utf-8", "replace")
                elif field == 8 and isinstance(value, tuple):
                    entry = dict(_fields(buf, *value))
                    domain = entry.get(1)
                    name = bytes(buf[domain[0] : domain[1]]).decode() if domain else ""
                    if name in ("", "ai.onnx") and isinstance(entry.get(2), int):
                        found["opset"] = entry[2]
    except (OSError, ValueError, IndexError, UnicodeDecodeError):
        return {}
    return found


def _ort_port(arg: Any) -> Port:
    shape = arg.shape
    dims = None if shape is None else tuple(d if isinstance(d, (int, str)) else None for d in shape)
    return Port(arg.name, _ORT_TYPES.get(arg.type, ""), dims)


def header_from_session(session: Any) -> Header:
    """The header of an onnxruntime ``InferenceSession`` (no opset: it does not say)."""
    meta = session.get_modelmeta()
    return Header(
        inputs=tuple(_ort_port(i) for i in session.get_inputs()),
        outputs=tuple(_ort_port(o) for o in session.get_outputs()),
        metadata=dict(meta.custom_metadata_map),
        producer=str(meta.producer_name),
    )


def _session(file: Path, where: str, providers: list[Any], optimize: bool = True) -> Any:
    ort = _import("onnxruntime", where)
    options = ort.SessionOptions()
    options.log_severity_level = ORT_QUIET
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        return ort.InferenceSession(str(file), sess_options=options, providers=providers)
    except Exception as error:
        raise ModelError(
            f"{where}: onnxruntime cannot load {file.name}: {one_line(error)}"
        ) from None


def read_header(file: Path, where: str) -> Header:
    """The model's header: inputs, outputs and metadata from an onnxruntime session
    with graph optimisations off (the ``onnx`` package is not needed: its import alone
    takes seconds), opset and producer version off the file's top-level fields."""
    header = header_from_session(_session(file, where, ["CPUExecutionProvider"], False))
    extra = _model_fields(file)
    producer = " ".join(
        v for v in (extra.get("producer", header.producer), extra.get("version")) if v
    )
    return replace(header, opset=extra.get("opset"), producer=producer)


def _names(ports: tuple[Port, ...]) -> str:
    return ", ".join(f"{p.name!r} {p.dtype} {list(p.shape or [])}" for p in ports)


def layout(header: Header, config: MemberConfig, where: str) -> Layout:
    """Which port is which, every static check of the module docstring applied."""
    waveform = config.input.waveform is not None
    inputs, outputs = header.inputs, header.outputs
    if not inputs or not outputs:
        raise ModelError(f"{where}: the model has no {'inputs' if not inputs else 'outputs'}")
    if len(inputs) > 2:
        raise ModelError(
            f"{where}: the model has {len(inputs)} inputs ({_names(inputs)}); kdpipe feeds "
            "the features and, optionally, their lengths"
        )
    x = inputs[0]
    want, shape = (2, "(B, S) samples") if waveform else (3, "(B, T, F) features")
    if x.dtype not in FLOATS:
        raise ModelError(f"{where}: input {x.name!r} is {x.dtype or 'not a tensor'}; "
                         f"expected {shape} of float32")  # fmt: skip
    if x.shape is not None and len(x.shape) != want:
        raise ModelError(
            f"{where}: input {x.name!r} has rank {len(x.shape)} {list(x.shape)}; expected "
            f"{shape}"
            + (" (a waveform model needs input: {waveform: RATE})" if len(x.shape) == 2 else "")
        )
    batch, frames = x.static(0), x.static(1)
    if batch is not None and batch != 1:
        raise ModelError(f"{where}: input {x.name!r} has a static batch axis of {batch}; "
                         "export it with a dynamic batch axis (or a batch of 1)")  # fmt: skip
    if frames is not None:
        raise ModelError(
            f"{where}: input {x.name!r} has a static time axis of {frames}; export it with "
            "a dynamic time axis (dynamic_axes / dynamic_shapes)"
        )
    lengths = inputs[1] if len(inputs) == 2 else None
    if lengths is not None and (
        lengths.dtype not in INTEGERS or (lengths.shape is not None and len(lengths.shape) != 1)
    ):
        raise ModelError(
            f"{where}: second input {lengths.name!r} is {lengths.dtype} "
            f"{list(lengths.shape or [])}; it must be the lengths (B,) of an integer type"
        )
    out = outputs[0]
    rank = 3 if config.level == "frame" else 2
    if out.dtype not in FLOATS:
        raise ModelError(f"{where}: output {out.name!r} is {out.dtype or 'not a tensor'}, "
                         "not float posteriors")  # fmt: skip
    if out.shape is not None and len(out.shape) != rank:
        want_out = "(B, T, C) for a frame-level" if rank == 3 else "(B, C) for an utterance-level"
        raise ModelError(
            f"{where}: output {out.name!r} has rank {len(out.shape)} {list(out.shape)}; "
            f"expected {want_out} member (level: {config.level})"
        )
    second = outputs[1] if len(outputs) > 1 else None
    out_lengths = second if second is not None and second.dtype in INTEGERS else None
    return Layout(x, lengths, out, out_lengths, per_utterance=batch == 1)


def describe(config: MemberConfig, where: str, corpus_labels: LabelSet | None) -> Declared:
    file = existing_file(config.path, where, "ONNX file")
    header = read_header(file, where)
    io = layout(header, config, where)
    own = None
    if LABELS_KEY in header.metadata:
        own = labels_from_text(header.metadata[LABELS_KEY], where, "metadata_props 'labels'")
    labels, what = member_labels(config, where, corpus_labels, own, "the labels in its metadata")
    classes = io.posteriors.static(-1)
    if classes is not None and classes != len(labels):
        raise ModelError(f"{where}: outputs {classes} classes, {what} has {len(labels)}")
    features = None if config.input.waveform is not None else io.features.static(2)
    sha = file_sha256(file)
    card = {
        "kind": "onnx",
        "file": file.name,
        "weights_sha256": sha,
        **io.to_dict(),
        "opset": header.opset,
        "producer": header.producer,
    }
    return declared_by_config(config, where, labels, sha, card, features)


def providers_for(device: torch.device, available: list[str]) -> list[Any]:
    """onnxruntime providers for the teach ``device`` (see the module docstring)."""
    if device.type == "cuda" and "CUDAExecutionProvider" in available:
        index = device.index if device.index is not None else torch.cuda.current_device()
        return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OnnxNetwork:
    """An onnxruntime session as a ``Network`` (see the module docstring)."""

    def __init__(self, session: Any, io: Layout, device: torch.device, name: str) -> None:
        self.session, self.io, self.device, self.name = session, io, device, name
        self.x_dtype = np.dtype(io.features.dtype)
        self.len_dtype = np.dtype(io.lengths.dtype if io.lengths is not None else "int64")
        self.fetch = [io.posteriors.name] + ([io.out_lengths.name] if io.out_lengths else [])

    def _run(self, x: np.ndarray, lengths: np.ndarray) -> list[np.ndarray]:
        feeds = {self.io.features.name: x}
        if self.io.lengths is not None:
            feeds[self.io.lengths.name] = lengths
        try:
            result: list[np.ndarray] = self.session.run(self.fetch, feeds)
        except Exception as error:
            raise ModelError(
                f"member {self.name}: onnxruntime failed on input of shape {list(x.shape)}: "
                f"{one_line(error)}"
            ) from None
        return result

    def _out(self, out: np.ndarray) -> torch.Tensor:
        if out.dtype == np.float64:  # the ensemble computes in float32 (and MPS has no float64)
            out = out.astype(np.float32)
        return torch.from_numpy(np.ascontiguousarray(out)).to(self.device)

    def __call__(self, x: torch.Tensor, lengths: torch.Tensor) -> Any:
        """out, or (out, out_lengths) where the model says (``base.split_outputs``)."""
        xs = x.detach().cpu().numpy().astype(self.x_dtype, copy=False)  # (B, T, F) or (B, S)
        ls = lengths.detach().cpu().numpy().astype(self.len_dtype, copy=False)  # (B,)
        if not self.io.per_utterance:
            result = self._run(xs, ls)
            if len(result) == 2:
                return self._out(result[0]), self._out(result[1])
            return self._out(result[0])
        outs, out_lengths = [], []
        for b in range(len(ls)):
            result = self._run(np.ascontiguousarray(xs[b : b + 1, : int(ls[b])]), ls[b : b + 1])
            out = result[0]  # (1, T_b, C) or (1, C)
            if out.ndim not in (2, 3) or out.shape[0] != 1:
                raise ModelError(f"member {self.name}: output of shape {list(out.shape)} for "
                                 "one utterance; expected (1, T, C) or (1, C)")  # fmt: skip
            outs.append(out[0])
            frames = out.shape[1] if out.ndim == 3 else 1
            out_lengths.append(int(result[1].reshape(-1)[0]) if len(result) == 2 else frames)
        if outs[0].ndim == 1:  # utterance level: (C,) each
            return self._out(np.stack(outs)), torch.ones_like(lengths)
        width = {o.shape[-1] for o in outs}
        if len(width) > 1:
            raise ModelError(f"member {self.name}: utterances gave {sorted(width)} classes")
        batch = np.zeros((len(outs), max(len(o) for o in outs), width.pop()), outs[0].dtype)
        for b, o in enumerate(outs):
            batch[b, : len(o)] = o
        return self._out(batch), torch.tensor(out_lengths, dtype=torch.int64, device=self.device)


def load(config: MemberConfig, declared: Declared, device: torch.device) -> Network:
    name = config.display_name
    where = f"member {name}"
    file = existing_file(config.path, where, "ONNX file")
    if file_sha256(file) != declared.weights_sha256:
        raise ModelError(f"{where}: {file.name} changed between planning and loading")
    ort = _import("onnxruntime", where)
    available = list(ort.get_available_providers())
    providers = providers_for(device, available)
    if device.type == "cuda" and len(providers) == 1:
        from kdpipe.console import err_console

        err_console.print(
            f"[yellow]note:[/] {where}: onnxruntime has no CUDAExecutionProvider here (pip "
            "install onnxruntime-gpu); it runs on the CPU",
            highlight=False,
        )
    session = _session(file, where, providers)
    io = layout(header_from_session(session), config, where)
    network: Network = OnnxNetwork(session, io, device, name)
    return network
