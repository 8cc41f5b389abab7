"""Checkpoints safe to share: safetensors weights + a JSON card, never a pickle.

Layout of a checkpoint directory::

    exp/teacher1/
        model.safetensors   # the state dict (tensors only), sha256 recorded in the card
        card.json           # ModelCard: architecture, config, labels, features, ...
        epoch-N/            # the trainer's resumable state (save_training_state)

``load_checkpoint`` rebuilds the model from the card through the registry, checks the
weights' sha256, and loads the state dict strictly. Custom ``module:Class`` models import
user code, so they load only with ``trust_custom_code=True``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdpipe.corpus.features import FbankConfig
from kdpipe.errors import KdpipeError, ModelError
from kdpipe.labels import LabelSet
from kdpipe.levels import LEVEL_WORDS, Level
from kdpipe.models.card import CARD_FILE, ModelCard
from kdpipe.models.device import pick_device
from kdpipe.models.registry import ModelSpec, build_model, config_diffs, is_custom
from kdpipe.safetensors_io import canonical_safetensors

if TYPE_CHECKING:
    import torch
    from torch import nn

WEIGHTS_FILE = "model.safetensors"


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def make_card(
    model: nn.Module,
    *,
    labels: LabelSet,
    features: FbankConfig | None = None,
    feature_fingerprint: str | None = None,
    data_fingerprint: str = "",
    training: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    spec: ModelSpec | None = None,
    ctc: Mapping[str, Any] | None = None,
) -> ModelCard:
    """A card for ``model`` (built by ``build_model``, or described by ``spec``).

    ``feature_fingerprint`` defaults to ``features.fingerprint``; ``ctc`` is a CTC model's
    blank and units (``ModelCard.ctc``).
    """
    # protocol imports torch; kdpipe.models must not (cards are read without it)
    from kdpipe.models.protocol import model_level, model_subsampling

    spec = spec or getattr(model, "kdpipe_spec", None)
    if spec is None:
        raise ModelError(
            "cannot describe a model not made by build_model: pass spec=ModelSpec(...)"
        )
    if feature_fingerprint is None:
        if features is None:
            raise ModelError("a model card needs features or a feature_fingerprint")
        feature_fingerprint = features.fingerprint
    return ModelCard(
        architecture=spec.architecture,
        num_features=spec.num_features,
        num_classes=spec.num_classes,
        labels=labels.names,
        level=model_level(model),
        subsampling=model_subsampling(model),
        feature_fingerprint=feature_fingerprint,
        model_config=spec.config,
        features=None if features is None else features.to_dict(),
        data_fingerprint=data_fingerprint,
        training=dict(training or {}),
        metrics=dict(metrics or {}),
        ctc=None if ctc is None else dict(ctc),
    )


def save_checkpoint(directory: str | Path, model: nn.Module, card: ModelCard) -> ModelCard:
    """Write ``model.safetensors`` and ``card.json`` into ``directory``; return the saved card.

    The returned card has ``weights_sha256`` set. Files are written to temporaries and
    renamed, weights first, so a crash never leaves a card pointing at other weights.
    """
    from safetensors.torch import save  # imports torch

    # protocol imports torch; kdpipe.models must not (cards are read without it)
    from kdpipe.models.protocol import model_level, model_subsampling

    _check_card_matches(model, card, model_level(model), model_subsampling(model))
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    weights, tmp = out / WEIGHTS_FILE, out / (WEIGHTS_FILE + ".tmp")
    metadata = {"format": "pt", "architecture": card.architecture}
    tmp.write_bytes(canonical_safetensors(save(state, metadata=metadata)))
    card = card.replace(weights_sha256=file_sha256(tmp))
    os.replace(tmp, weights)
    tmp_card = out / (CARD_FILE + ".tmp")
    card.write(tmp_card)
    os.replace(tmp_card, out / CARD_FILE)
    return card


def read_card(directory: str | Path) -> ModelCard:
    """The card of checkpoint ``directory`` (no torch, no weights read)."""
    return ModelCard.read(Path(directory) / CARD_FILE)


def weights_sha256(directory: str | Path) -> str:
    """The sha256 of a checkpoint's weights file, as computed now."""
    path = Path(directory) / WEIGHTS_FILE
    if not path.is_file():
        raise ModelError(f"checkpoint weights not found: {path}")
    return file_sha256(path)


def load_checkpoint(
    directory: str | Path,
    device: str | torch.device = "cpu",
    *,
    trust_custom_code: bool = False,
) -> tuple[nn.Module, ModelCard]:
    """Rebuild the model of checkpoint ``directory`` and load its weights, in eval mode.

    ``ModelError`` if the card is missing or malformed, the weights' sha256 differs from
    the card's, the weights are not safetensors, or the state dict does not fit the model.
    ``device``: a torch device or a ``pick_device`` string (``auto``, ``cpu``, ``cuda``...).
    """
    import torch  # here, not at the top: kdpipe.models imports without torch
    from safetensors.torch import load as load_safetensors

    # protocol imports torch; kdpipe.models must not (cards are read without it)
    from kdpipe.models.protocol import model_level, model_subsampling

    root = Path(directory)
    if not root.is_dir():
        raise ModelError(f"checkpoint directory not found: {root}")
    card = read_card(root)
    weights = root / WEIGHTS_FILE
    if not weights.is_file():
        raise ModelError(f"checkpoint weights not found: {weights}")
    data = weights.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != card.weights_sha256:
        raise ModelError(
            f"{weights}: sha256 {digest} does not match the hash in {CARD_FILE} "
            f"({card.weights_sha256 or 'none recorded'}): the weights were changed or corrupted"
        )
    if is_custom(card.architecture) and not trust_custom_code:
        raise ModelError(
            f"checkpoint {root} uses the custom model {card.architecture!r}; loading it "
            "imports and runs that code: pass trust_custom_code=True if you trust it"
        )
    try:
        state = load_safetensors(data)
    except Exception as error:  # safetensors raises its own error types
        raise ModelError(f"{weights}: not a valid safetensors file: {error}") from None
    try:
        model = build_model(
            card.architecture,
            card.num_features,
            card.num_classes,
            card.model_config,
            check=False,
        )
    except KdpipeError as error:
        raise ModelError(
            f"checkpoint {root}: cannot rebuild the model from its card: {error}"
        ) from error
    _check_card_matches(model, card, model_level(model), model_subsampling(model))
    load_state(model, state, f"{weights} does not fit the model its card describes")
    target = device if isinstance(device, torch.device) else pick_device(device)
    return model.to(target).eval(), card


def _check_card_matches(model: nn.Module, card: ModelCard, level: Level, subsampling: int) -> None:
    if (level, subsampling) != (card.level, card.subsampling):
        raise ModelError(
            f"model {card.architecture!r} is {LEVEL_WORDS[level]} level with subsampling "
            f"{subsampling} but its card says {LEVEL_WORDS[card.level]} level with "
            f"subsampling {card.subsampling}"
        )
    spec = getattr(model, "kdpipe_spec", None)
    if spec is None:
        return
    built = (spec.architecture, spec.num_features, spec.num_classes, spec.config)
    carded = (card.architecture, card.num_features, card.num_classes, card.model_config)
    if built[:3] != carded[:3] or config_diffs(card.model_config, spec.config):
        raise ModelError(
            f"the card describes {carded[0]}(F={carded[1]}, C={carded[2]}, {carded[3]}) but the "
            f"model was built as {built[0]}(F={built[1]}, C={built[2]}, {built[3]})"
        )


def load_state(model: nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    """Strict state-dict load; ``ModelError`` "``what``: ..." naming the first missing,
    unexpected and misshapen keys (checkpoints and ``module`` ensemble members)."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(state))
        if state[k].shape != own[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys {missing[:5]}" + (" ..." if len(missing) > 5 else ""))
    if unexpected:
        problems.append(
            f"unexpected keys {unexpected[:5]}" + (" ..." if len(unexpected) > 5 else "")
        )
    if shapes:
        more = " ..." if len(shapes) > 5 else ""
        problems.append("shape mismatch " + "; ".join(shapes[:5]) + more)
    if problems:
        raise ModelError(f"{what}: {', '.join(problems)}")
    model.load_state_dict(dict(state), strict=True)


def save_training_state(path: str | Path, state: Mapping[str, Any]) -> None:
    """Save resumable training state (optimizer/scheduler state dicts, counters).

    Only tensors and plain containers/numbers/strings, so ``load_training_state`` can read
    it with ``torch.load(weights_only=True)``.
    """
    import torch  # here, not at the top: kdpipe.models imports without torch

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    torch.save(dict(state), tmp)
    os.replace(tmp, p)


def load_training_state(path: str | Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Read ``save_training_state`` output with ``weights_only=True``: never unpickles code."""
    import torch  # here, not at the top: kdpipe.models imports without torch

    p = Path(path)
    if not p.is_file():
        raise ModelError(f"training state not found: {p}")
    target = device if isinstance(device, torch.device) else pick_device(device)
    try:
        state = torch.load(p, map_location=target, weights_only=True)
    except (RuntimeError, EOFError, OSError) as error:
        raise ModelError(f"{p}: not a readable training state: {error}") from None
    except Exception as error:  # weights_only's UnpicklingError: an object that is not data
        if type(error).__name__ != "UnpicklingError":
            raise
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelError(
            f"{p}: refusing to load: it holds objects other than tensors and plain data ({first})"
        ) from None
    if not isinstance(state, dict):
        raise ModelError(f"{p}: training state must be a dict, got {type(state).__name__}")
    return state
