"""Kind ``huggingface``: a local transformers audio model (a directory written by
``save_pretrained``: ``config.json``, ``model.safetensors`` or ``pytorch_model.bin``,
optionally ``preprocessor_config.json`` and a CTC tokenizer's ``vocab.json``), run on the
raw waveform (``input: {waveform: 16000}``). Needs the ``kdpipe[hf]`` extra (transformers),
imported only when such a member loads; nothing is ever downloaded (``local_files_only``,
``HF_HUB_OFFLINE=1``), and no code that came with the model runs (``trust_remote_code``
off: a ``config.json`` with ``auto_map`` is refused).

Legend: B batch, S samples, T' the model's output frames, C its classes.

What the head says (``architectures`` in config.json, loaded with the matching Auto class):

- ``*ForCTC`` (``AutoModelForCTC``): frame level, the CTC vocabulary (blank included);
- ``*ForAudioFrameClassification`` (``AutoModelForAudioFrameClassification``): frame level;
- ``*ForSequenceClassification`` (``AutoModelForAudioClassification``): utterance level.

``describe`` reads only JSON: labels (``labels:`` file, else a non-generic ``id2label``, else
for CTC ``vocab.json`` (token -> id), else the corpus'), the output frame shift (product of
``conv_stride``, times ``adapter_stride ** num_adapter_layers`` with ``add_adapter``, over
the feature extractor's ``sampling_rate``: 320 / 16000 s = 20 ms for wav2vec2, HuBERT,
WavLM), and checks that the member's input is the waveform at that rate. Only raw-waveform
models are run (``feature_extractor_type`` ``Wav2Vec2FeatureExtractor`` or none): a model
whose extractor computes features (Whisper's log-mels) is refused.

The network does what ``Wav2Vec2FeatureExtractor`` would: with ``do_normalize`` (its
default, true) each utterance is scaled to zero mean and unit variance over its valid
samples, ``(x - mean) / sqrt(var + 1e-7)``, and the padding is zero. Then:

- ``feat_extract_norm: layer`` models (and models without that key whose extractor says
  ``return_attention_mask``) run batched with ``attention_mask`` from the lengths: their
  valid outputs do not depend on the padding;
- the others (``group``: wav2vec2-base style, trained without a mask, whose first conv
  normalises over time, padding included) run one utterance at a time, unpadded, so that
  an utterance's posteriors never depend on its batch.

Output lengths (frame level) are ``model._get_feat_extract_output_lengths(lengths)``,
floor((S - 400) / 320) + 1 for wav2vec2: for a 10 ms / 25 ms Kaldi corpus (snip_edges)
of L frames, ceil(L / 2) frames at 20 ms. An input shorter than the conv receptive field
is zero padded to it (one output frame). Returns logits (B, T', C) and lengths (B,), or
(B, C) at utterance level.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
from pathlib import Path
from typing import Any

import torch

from kdpipe.errors import ConfigError, LabelSetError, ModelError
from kdpipe.labels import LabelSet
from kdpipe.levels import Level
from kdpipe.models.checkpoint import file_sha256
from kdpipe.teach.ensemble_yaml import MemberConfig
from kdpipe.teach.members.base import Declared, Network

CONFIG_FILE = "config.json"
PREPROCESSOR_FILE = "preprocessor_config.json"
VOCAB_FILE = "vocab.json"
NORM_EPS = 1e-7  # Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm
DEFAULT_RATE = 16000  # Wav2Vec2FeatureExtractor's default sampling_rate
# architecture suffix -> (Auto class, level)
HEADS: dict[str, tuple[str, Level]] = {
    "ForCTC": ("AutoModelForCTC", "frame"),
    "ForAudioFrameClassification": ("AutoModelForAudioFrameClassification", "frame"),
    "ForSequenceClassification": ("AutoModelForAudioClassification", "utt"),
}
RAW_EXTRACTORS = ("Wav2Vec2FeatureExtractor",)  # extractors that only normalise samples
INSTALL = "pip install kdpipe[hf]"


def _read_json(path: Path, where: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelError(f"{where}: cannot read {path}: {error}") from None
    if not isinstance(data, dict):
        raise ModelError(f"{where}: {path} is not a JSON object")
    return data


def _head(config: dict[str, Any], where: str) -> tuple[str, str, Level]:
    """(architecture, Auto class name, level) of config.json's ``architectures``."""
    archs = config.get("architectures")
    if isinstance(archs, list) and len(archs) == 1 and isinstance(archs[0], str):
        for suffix, (auto, level) in HEADS.items():
            if archs[0].endswith(suffix):
                return archs[0], auto, level
    raise ModelError(
        f"{where}: config.json architectures {archs!r}: kdpipe runs one audio model with a "
        f"*{', *'.join(HEADS)} head"
    )


def _num_classes(config: dict[str, Any], ctc: bool, where: str) -> int:
    if ctc:
        value = config.get("vocab_size")
    else:
        id2label = config.get("id2label")
        value = len(id2label) if isinstance(id2label, dict) else config.get("num_labels", 2)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        what = "vocab_size" if ctc else "num_labels"
        raise ModelError(f"{where}: config.json has no valid {what} ({value!r})")
    return value


def _id2label(config: dict[str, Any], classes: int) -> LabelSet | None:
    """config.json's ``id2label`` unless it is missing, of another size, or the generic
    ``LABEL_0``, ``LABEL_1``, ... that transformers writes when none was given."""
    id2label = config.get("id2label")
    if not isinstance(id2label, dict) or len(id2label) != classes:
        return None
    try:
        names = [str(id2label[key]) for key in sorted(id2label, key=int)]
    except (TypeError, ValueError):
        return None
    if [int(key) for key in sorted(id2label, key=int)] != list(range(classes)):
        return None
    if names == [f"LABEL_{i}" for i in range(classes)]:
        return None
    return LabelSet(tuple(names))


def _vocab(path: Path, classes: int, where: str) -> LabelSet | None:
    """A CTC tokenizer's ``vocab.json`` (token -> id) as labels in id order."""
    file = path / VOCAB_FILE
    if not file.is_file():
        return None
    vocab = _read_json(file, where)
    ids = sorted(vocab.values()) if all(isinstance(v, int) for v in vocab.values()) else None
    if ids != list(range(classes)):
        raise ModelError(
            f"{where}: {file} does not map tokens to ids 0..{classes - 1} (the model's "
            f"vocab_size {classes}): give labels: a file of the {classes} labels in id order"
        )
    return LabelSet(tuple(sorted(vocab, key=vocab.__getitem__)))


def _labels(
    member: MemberConfig,
    config: dict[str, Any],
    classes: int,
    ctc: bool,
    corpus_labels: LabelSet | None,
    where: str,
) -> tuple[LabelSet, str]:
    """The member's label set and where it came from (``labels``, ``id2label``,
    ``vocab.json``, ``corpus``)."""
    if member.labels:
        try:
            labels = LabelSet.read(member.labels)
        except LabelSetError as error:
            raise ConfigError(f"{where}: labels: {error}") from None
        if len(labels) != classes:
            raise ConfigError(
                f"{where}: labels {member.labels} has {len(labels)} labels, the model outputs "
                f"{classes} classes"
            )
        return labels, "labels"
    if (own := _id2label(config, classes)) is not None:
        return own, "id2label"
    if ctc and (vocab := _vocab(Path(member.path), classes, where)) is not None:
        return vocab, VOCAB_FILE
    if corpus_labels is not None and len(corpus_labels) == classes:
        return corpus_labels, "corpus"
    raise ConfigError(
        f"{where}: the model names no labels for its {classes} classes (generic id2label"
        f"{', no vocab.json' if ctc else ''}) and the corpus has "
        f"{len(corpus_labels) if corpus_labels else 'none'}: give labels: a file, one a line"
    )


def _frame_shift_ms(config: dict[str, Any], rate: int) -> float | None:
    """Output frame shift of the conv feature encoder (and adapter), None if unknown."""
    strides = config.get("conv_stride")
    if not isinstance(strides, list) or not all(isinstance(s, int) and s >= 1 for s in strides):
        return None
    hop = math.prod(strides)
    if config.get("add_adapter"):
        hop *= int(config.get("adapter_stride", 2)) ** int(config.get("num_adapter_layers", 3))
    return hop / rate * 1000


def _shift(config: dict[str, Any], rate: int, given: float | None, where: str) -> float:
    """A frame-level model's output shift (ms): its conv_stride's; ``frame_shift_ms:``
    only where config.json has none, and never against it."""
    shift = _frame_shift_ms(config, rate)
    if shift is None:
        if given is None:
            raise ConfigError(f"{where}: config.json has no conv_stride: give frame_shift_ms")
        return float(given)
    if given is not None and abs(given - shift) > 1e-6:
        raise ConfigError(
            f"{where}: frame_shift_ms {given}, the model's conv_stride gives {shift:g} ms"
        )
    return shift


def receptive_field(config: dict[str, Any]) -> int:
    """Samples the conv feature encoder needs for one output frame (400 for wav2vec2)."""
    kernels, strides = config.get("conv_kernel"), config.get("conv_stride")
    if not isinstance(kernels, list) or not isinstance(strides, list):
        return 1
    field, jump = 1, 1
    for kernel, stride in zip(kernels, strides, strict=False):
        field += (int(kernel) - 1) * jump
        jump *= int(stride)
    return field


def weight_files(path: Path, where: str) -> list[Path]:
    """The weight files ``from_pretrained`` loads: safetensors first (one file or the
    shards of its index), else ``pytorch_model.bin`` (or its shards)."""
    for single, index in (
        ("model.safetensors", "model.safetensors.index.json"),
        ("pytorch_model.bin", "pytorch_model.bin.index.json"),
    ):
        if (path / single).is_file():
            return [path / single]
        if (path / index).is_file():
            weight_map = _read_json(path / index, where).get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise ModelError(f"{where}: {path / index} has no weight_map")
            files = [path / str(name) for name in sorted(set(weight_map.values()))]
            missing = [f.name for f in files if not f.is_file()]
            if missing:
                raise ModelError(f"{where}: weight shards missing in {path}: {missing[:3]}")
            return files
    raise ModelError(
        f"{where}: no model.safetensors or pytorch_model.bin in {path} (save_pretrained output)"
    )


def weights_sha256(files: list[Path]) -> str:
    """One file: its sha256; shards: sha256 of their ``name sha256`` lines, name order."""
    if len(files) == 1:
        return file_sha256(files[0])
    lines = "".join(f"{f.name} {file_sha256(f)}\n" for f in sorted(files, key=lambda f: f.name))
    return hashlib.sha256(lines.encode()).hexdigest()


def _check_transformers(where: str) -> None:
    if importlib.util.find_spec("transformers") is None:
        raise ConfigError(f"{where}: kind huggingface needs transformers: {INSTALL}")


def _model_files(member: MemberConfig, where: str) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """The model directory, its config.json and its preprocessor_config.json ({} if none)."""
    path = Path(member.path)
    if not path.is_dir():
        raise ModelError(f"{where}: {path} is not a directory (a save_pretrained output)")
    if not (path / CONFIG_FILE).is_file():
        raise ModelError(
            f"{where}: no {CONFIG_FILE} in {path}: not a transformers save_pretrained directory"
        )
    config = _read_json(path / CONFIG_FILE, where)
    if config.get("auto_map"):
        raise ModelError(
            f"{where}: {path / CONFIG_FILE} names custom code (auto_map); kdpipe runs only "
            "transformers' own models, never code that comes with one"
        )
    pre = path / PREPROCESSOR_FILE
    return path, config, (_read_json(pre, where) if pre.is_file() else {})


def _sampling_rate(pre: dict[str, Any], where: str) -> int:
    extractor = pre.get("feature_extractor_type")
    if extractor is not None and extractor not in RAW_EXTRACTORS:
        raise ConfigError(
            f"{where}: its feature extractor {extractor} computes features kdpipe does not "
            f"reproduce; kind huggingface runs raw-waveform models ({', '.join(RAW_EXTRACTORS)})"
        )
    rate = pre.get("sampling_rate", DEFAULT_RATE)
    if isinstance(rate, bool) or not isinstance(rate, int) or rate <= 0:
        raise ModelError(f"{where}: {PREPROCESSOR_FILE} has a bad sampling_rate {rate!r}")
    return rate


def _batched(config: dict[str, Any], pre: dict[str, Any]) -> bool:
    """Run padded batches with an attention mask (valid outputs independent of padding)."""
    norm = config.get("feat_extract_norm")
    if norm is not None:
        return bool(norm == "layer")
    return bool(pre.get("return_attention_mask", False))


def describe(config: MemberConfig, where: str, corpus_labels: LabelSet | None) -> Declared:
    """What the model directory declares (JSON only; no weights, no transformers import)."""
    path, model_config, pre = _model_files(config, where)
    arch, _auto, level = _head(model_config, where)
    ctc = arch.endswith("ForCTC")
    rate = _sampling_rate(pre, where)
    if config.input.waveform is None:
        raise ConfigError(
            f"{where}: a huggingface model reads the waveform: add input: {{waveform: {rate}}}"
        )
    if config.input.waveform != rate:
        raise ConfigError(
            f"{where}: input waveform at {config.input.waveform} Hz, the model takes {rate} Hz "
            f"({PREPROCESSOR_FILE} sampling_rate): set input: {{waveform: {rate}}}"
        )
    if config.output != "logits":
        raise ConfigError(f"{where}: a huggingface model outputs logits, not {config.output}")
    if config.subsampling != 1:
        raise ConfigError(
            f"{where}: subsampling is for members reading features; a huggingface model's "
            "frame shift comes from its conv_stride"
        )
    if config.level == "utt" and level == "frame":
        raise ConfigError(f"{where}: level utt, but the model's {arch} head is frame level")
    classes = _num_classes(model_config, ctc, where)
    labels, origin = _labels(config, model_config, classes, ctc, corpus_labels, where)
    shift = _shift(model_config, rate, config.frame_shift_ms, where) if level == "frame" else None
    _check_transformers(where)
    files = weight_files(path, where)
    card = {
        "kind": "huggingface",
        "model_type": model_config.get("model_type"),
        "architectures": [arch],
        "num_labels": classes,
        "labels_from": origin,
        "sampling_rate": rate,
        "frame_shift_ms": shift,
        "do_normalize": bool(pre.get("do_normalize", True)),
        "attention_mask": _batched(model_config, pre),
        "weight_files": [f.name for f in files],
    }
    return Declared(
        labels=labels,
        level=level,
        output="logits",
        subsampling=1,
        frame_shift_ms=shift,
        num_features=None,
        weights_sha256=weights_sha256(files),
        card=card,
    )


def normalise(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, S) samples -> zero mean, unit variance over each row's valid samples, padding
    zero (``Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm``)."""
    valid = torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]  # (B, S)
    count = lengths.clamp(min=1).to(x.dtype)[:, None]  # (B, 1)
    x = x.masked_fill(~valid, 0.0)
    mean = x.sum(1, keepdim=True) / count  # (B, 1)
    var = ((x - mean).masked_fill(~valid, 0.0) ** 2).sum(1, keepdim=True) / count  # (B, 1)
    return ((x - mean) / torch.sqrt(var + NORM_EPS)).masked_fill(~valid, 0.0)


class HuggingFaceNetwork:
    """A loaded transformers model as a ``Network`` (see the module docstring)."""

    def __init__(
        self, model: Any, level: Level, normalize: bool, batched: bool, min_samples: int
    ) -> None:
        self.model, self.level, self.normalize = model, level, normalize
        self.batched, self.min_samples = batched, min_samples
        self.lengths_of = getattr(model, "_get_feat_extract_output_lengths", None)

    def _run(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        logits: torch.Tensor = self.model(input_values=x, attention_mask=mask).logits
        return logits.float()

    def __call__(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, S) float samples, lengths (B,) -> logits (B, T', C) and lengths (B,), or
        (B, C) and ones at utterance level."""
        with torch.inference_mode():
            x = x.float()
            if self.normalize:
                x = normalise(x, lengths)
            if x.shape[1] < self.min_samples:  # shorter than one frame: zero padded to it
                x = torch.nn.functional.pad(x, (0, self.min_samples - x.shape[1]))
            fed = lengths.clamp(min=self.min_samples)  # (B,) samples the model sees
            if self.batched:
                valid = torch.arange(x.shape[1], device=x.device)[None, :] < fed[:, None]
                out = self._run(x, valid.to(torch.long))  # (B, T', C) or (B, C)
                out_lengths = self.lengths_of(fed) if self.lengths_of is not None else None
            else:
                rows = [self._run(x[b : b + 1, : int(fed[b])], None)[0] for b in range(len(x))]
                if self.level == "utt":
                    return torch.stack(rows), torch.ones_like(lengths)
                out_lengths = torch.tensor([len(r) for r in rows], device=x.device)
                out = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)  # (B, T', C)
            if self.level == "utt":
                return out, torch.ones_like(lengths)
            if out_lengths is None:  # a model that does not say: all frames valid
                out_lengths = torch.full_like(lengths, out.shape[1])
            return out, torch.as_tensor(out_lengths).to(torch.int64).clamp(1, out.shape[1])


def load(config: MemberConfig, declared: Declared, device: torch.device) -> Network:
    """The model in eval mode on ``device`` (float32), weights checked against ``declared``."""
    where = f"member {config.display_name}"
    path, model_config, pre = _model_files(config, where)
    _arch, auto, level = _head(model_config, where)
    files = weight_files(path, where)
    if weights_sha256(files) != declared.weights_sha256:
        raise ModelError(f"{where}: the model's weights in {path} changed since it was checked")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # read before huggingface_hub is imported
    try:
        import transformers
    except ImportError as error:
        raise ConfigError(
            f"{where}: kind huggingface needs transformers ({error}): {INSTALL}"
        ) from None
    auto_class = getattr(transformers, auto)
    logging = transformers.utils.logging
    bar = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        model = auto_class.from_pretrained(
            str(path), local_files_only=True, trust_remote_code=False
        )
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        raise ModelError(
            f"{where}: transformers cannot load {path}: {type(error).__name__}: "
            f"{str(error).strip().splitlines()[0] if str(error).strip() else ''}"
        ) from error
    finally:
        if bar:
            logging.enable_progress_bar()
    model.float().eval().to(device)  # float32 whatever the checkpoint's dtype
    network = HuggingFaceNetwork(
        model,
        level,
        normalize=bool(pre.get("do_normalize", True)),
        batched=_batched(model_config, pre),
        min_samples=receptive_field(model_config),
    )
    result: Network = network
    return result
