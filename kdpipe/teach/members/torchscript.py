"""Kind ``torchscript``: a TorchScript archive (``torch.jit.script(model).save(path)`` or
``torch.jit.trace``), loaded with ``torch.jit.load(path, map_location=device)``. Running it
runs the code it carries, so the planner wants ``--trust-custom-code``.

Accepts::

    - kind: torchscript
      path: exp/blstm.pt
      labels: phones.txt   # "": the archive's extra file "labels", else the corpus'
      subsampling: 1       # output frames per input frame
      output: logits       # or log_probs, probs

forward(x (B, T, F) float, lengths (B,) int64) may return logits or (logits, out_lengths)
(``base.split_outputs``); a waveform member (``input: {waveform: RATE}``) gets x (B, S).

Checks, in ``describe`` (reading the zip's table of contents, running nothing): the file
is a zip archive with TorchScript code in it (a ``torch.save`` file has none: the message
says to script it, or to use kind module with ``weights:``); its labels (the ``labels:``
file, else an extra file ``labels`` saved with ``_extra_files={"labels": ...}``: a JSON
list or one name a line, else the corpus'). In ``load``: the file still has the sha256
``describe`` saw (it is loaded from those very bytes), ``torch.jit.load`` succeeds (else
one ``ModelError`` line), and a ``level`` / ``subsampling`` attribute the module kept
(scripted modules keep plain attributes; traced ones do not) agrees with the member.
The class count is checked on the first batch (``base.check_classes``): a TorchScript
file does not declare it.

Choices: torch's deprecation warning about ``torch.jit.load`` is silenced around the one
call (a user who chose TorchScript cannot act on it); the module runs in eval mode, the
input cast to its floating dtype, as kind module (``module.TorchNetwork``).
"""

from __future__ import annotations

import io
import warnings
import zipfile
from pathlib import Path

import torch

from kdpipe.errors import ModelError
from kdpipe.labels import LabelSet
from kdpipe.models.checkpoint import file_sha256
from kdpipe.teach.ensemble_yaml import MemberConfig
from kdpipe.teach.members.base import (
    Declared,
    Network,
    TorchNetwork,
    check_attributes,
    declared_by_config,
    existing_file,
    labels_from_text,
    member_labels,
    one_line,
    read_checked,
)

LABELS_EXTRA = "labels"  # the extra file of an archive that names its classes


def _own_labels(file: Path, where: str) -> LabelSet | None:
    """The archive's ``extra/labels`` file, if any; ``ModelError`` if not TorchScript."""
    if not zipfile.is_zipfile(file):
        raise ModelError(
            f"{where}: {file.name} is not a TorchScript file (not a zip archive; an ONNX "
            "model is kind onnx)"
        )
    with zipfile.ZipFile(file) as archive:
        names = archive.namelist()
        if not any("/code/" in name for name in names):
            raise ModelError(
                f"{where}: {file.name} holds no TorchScript code (a torch.save file?): save "
                "torch.jit.script(model) or torch.jit.trace(model, ...), or use kind module "
                "with weights:"
            )
        extra = [n for n in names if n.endswith(f"/extra/{LABELS_EXTRA}")]
        if not extra:
            return None
        text = archive.read(extra[0]).decode("utf-8", errors="replace")
    return labels_from_text(text, where, f"the extra file {LABELS_EXTRA!r} of {file.name}")


def describe(config: MemberConfig, where: str, corpus_labels: LabelSet | None) -> Declared:
    file = existing_file(config.path, where, "TorchScript file")
    own = _own_labels(file, where)  # also: is it TorchScript at all
    labels, _ = member_labels(config, where, corpus_labels, own, f"the labels saved in {file.name}")
    sha = file_sha256(file)
    card = {"kind": "torchscript", "file": file.name, "weights_sha256": sha}
    return declared_by_config(config, where, labels, sha, card)


def load(config: MemberConfig, declared: Declared, device: torch.device) -> Network:
    name = config.display_name
    file = existing_file(config.path, f"member {name}", "TorchScript file")
    data = read_checked(file, declared, name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.load is deprecated
            model = torch.jit.load(io.BytesIO(data), map_location=device)
    except Exception as error:
        raise ModelError(
            f"member {name}: {file.name} does not load as TorchScript: {one_line(error)}"
        ) from None
    model.eval()
    check_attributes(model, config, declared, name)
    network: Network = TorchNetwork(model, name)
    return network
