"""Checkpoints: safetensors + card.json round trips, hash checks, no unpickling, cards."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch

from kdpipe.corpus.features import FbankConfig
from kdpipe.errors import FingerprintMismatch, LabelSetError, ModelError
from kdpipe.labels import LabelSet
from kdpipe.models import (
    ModelCard,
    ModelSpec,
    build_model,
    file_sha256,
    load_checkpoint,
    load_training_state,
    make_card,
    pick_device,
    read_card,
    save_checkpoint,
    save_training_state,
    weights_sha256,
)

torch.set_num_threads(1)

FBANK = FbankConfig(num_mel_bins=6)
F = FBANK.num_mel_bins
LABELS = LabelSet(("sil", "a", "b", "c"))
C = len(LABELS)

TINY = {
    "dnn": {"hidden_dim": 8, "num_layers": 2, "left_context": 1, "right_context": 1},
    "lstm": {"hidden_dim": 4, "num_layers": 1},
    "blstm": {"hidden_dim": 4, "num_layers": 2},
    "tdnn": {"hidden_dim": 8, "kernel_sizes": [3, 3], "dilations": [1, 2], "subsampling": 3},
    "cnn": {"channels": [2, 4]},
    "dnn_pool": {"hidden_dim": 8, "num_layers": 1},
    "lstm_pool": {"hidden_dim": 4, "num_layers": 1},
}


@pytest.fixture(autouse=True)
def custom_students_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    return torch.randn(3, 11, F, generator=gen), torch.tensor([11, 7, 2])


def trained(name: str, cfg: dict | None = None) -> torch.nn.Module:
    """A model whose weights and batch-norm statistics are no longer their defaults."""
    torch.manual_seed(0)
    model = build_model(name, F, C, cfg)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    logits, _ = model(*batch())
    logits.square().mean().backward()
    opt.step()
    return model.eval()


def card_for(model: torch.nn.Module, **kw) -> ModelCard:
    return make_card(
        model,
        labels=LABELS,
        features=FBANK,
        data_fingerprint="store-abc123",
        training={"lr": 0.1, "epochs": 1, "kd_temperature": 2.0},
        metrics={"dev_accuracy": 0.5},
        **kw,
    )


@pytest.mark.parametrize("name", sorted(TINY))
def test_round_trip_gives_the_same_outputs(tmp_path, name):
    model = trained(name, TINY[name])
    saved = save_checkpoint(tmp_path / "exp" / name, model, card_for(model))
    assert sorted(p.name for p in (tmp_path / "exp" / name).iterdir()) == [
        "card.json",
        "model.safetensors",
    ]
    loaded, card = load_checkpoint(tmp_path / "exp" / name)
    assert type(loaded) is type(model) and not loaded.training
    assert card == saved
    assert card.weights_sha256 == file_sha256(tmp_path / "exp" / name / "model.safetensors")
    assert card.weights_fingerprint == weights_sha256(tmp_path / "exp" / name)
    with torch.no_grad():
        want, want_len = model(*batch())
        got, got_len = loaded(*batch())
    torch.testing.assert_close(got, want, atol=0, rtol=0)
    assert torch.equal(got_len, want_len)


def test_card_records_what_rebuilds_and_matches_the_model(tmp_path):
    model = trained("tdnn", TINY["tdnn"])
    card = save_checkpoint(tmp_path, model, card_for(model))
    data = json.loads((tmp_path / "card.json").read_text())
    assert data["architecture"] == "tdnn"
    assert data["model_config"]["dilations"] == [1, 2]
    assert data["model_config"]["hidden_dim"] == 8
    assert (data["num_features"], data["num_classes"]) == (F, C)
    assert data["labels"] == ["sil", "a", "b", "c"]
    assert (data["level"], data["subsampling"]) == ("frame", 3)
    assert data["features"] == FBANK.to_dict()
    assert data["feature_fingerprint"] == FBANK.fingerprint
    assert data["data_fingerprint"] == "store-abc123"
    assert data["training"]["kd_temperature"] == 2.0
    assert data["metrics"] == {"dev_accuracy": 0.5}
    assert data["kdpipe_version"] and data["created"].endswith("+00:00")
    assert data["weights_sha256"] == card.weights_sha256
    assert ModelCard.from_dict(json.loads(json.dumps(card.to_dict()))) == card
    assert read_card(tmp_path) == card
    assert card.label_set == LABELS and card.feature_config == FBANK


def test_custom_model_needs_trust_to_load(tmp_path):
    model = build_model("custom_students:TinyStudent", F, C, {"hidden": 4})
    save_checkpoint(tmp_path, model, card_for(model))
    with pytest.raises(
        ModelError, match=r"custom model 'custom_students:TinyStudent'.*trust_custom_code=True"
    ):
        load_checkpoint(tmp_path)
    loaded, card = load_checkpoint(tmp_path, trust_custom_code=True)
    assert card.architecture == "custom_students:TinyStudent"
    assert card.model_config == {"hidden": 4} and card.subsampling == 2
    with torch.no_grad():
        torch.testing.assert_close(loaded(*batch())[0], model(*batch())[0])


def test_tampered_weights_fail_the_hash_check(tmp_path):
    model = trained("dnn", TINY["dnn"])
    save_checkpoint(tmp_path, model, card_for(model))
    weights = tmp_path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0x01  # one bit of one weight
    weights.write_bytes(bytes(data))
    with pytest.raises(
        ModelError,
        match=r"model.safetensors: sha256 [0-9a-f]{64} does not match "
        r"the hash in card.json .*changed or corrupted",
    ):
        load_checkpoint(tmp_path)


class _Payload:
    """Unpickling this creates a directory: proof that a pickle ran code."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (str(self.path),))


def test_payload_really_runs_when_unpickled(tmp_path):
    pickle.loads(pickle.dumps(_Payload(tmp_path / "ran")))  # the control: plain pickle runs it
    assert (tmp_path / "ran").is_dir()


def test_a_pickle_posing_as_weights_is_never_unpickled(tmp_path):
    model = trained("dnn", TINY["dnn"])
    save_checkpoint(tmp_path, model, card_for(model))
    sentinel = tmp_path / "pwned"
    weights = tmp_path / "model.safetensors"
    torch.save({"w": _Payload(sentinel)}, weights)  # a torch pickle with a code payload
    card = read_card(tmp_path).replace(weights_sha256=file_sha256(weights))  # hash matches
    card.write(tmp_path / "card.json")
    with pytest.raises(ModelError, match="not a valid safetensors file"):
        load_checkpoint(tmp_path)
    assert not sentinel.exists()


def test_training_state_round_trip_and_refuses_pickled_objects(tmp_path):
    model = trained("dnn", TINY["dnn"])
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    logits, _ = model.train()(*batch())
    logits.sum().backward()
    opt.step()
    path = tmp_path / "epoch-1" / "optimizer.pt"
    save_training_state(path, {"optimizer": opt.state_dict(), "epoch": 1, "step": 7})
    state = load_training_state(path, device="auto")
    assert (state["epoch"], state["step"]) == (1, 7)
    state = load_training_state(path)  # default: onto the CPU
    fresh = torch.optim.Adam(model.parameters(), lr=0.5)
    fresh.load_state_dict(state["optimizer"])
    assert fresh.param_groups[0]["lr"] == 0.01
    first = next(iter(opt.state.values()))["exp_avg"]
    torch.testing.assert_close(next(iter(fresh.state.values()))["exp_avg"], first)

    sentinel = tmp_path / "pwned"
    torch.save({"optimizer": _Payload(sentinel)}, tmp_path / "evil.pt")
    with pytest.raises(ModelError, match="refusing to load: it holds objects other than tensors"):
        load_training_state(tmp_path / "evil.pt")
    assert not sentinel.exists()
    with pytest.raises(ModelError, match="training state not found"):
        load_training_state(tmp_path / "missing.pt")


def test_card_whose_config_does_not_fit_the_weights(tmp_path):
    model = trained("dnn", TINY["dnn"])
    card = save_checkpoint(tmp_path, model, card_for(model))
    wider = card.replace(model_config={**card.model_config, "hidden_dim": 9})
    wider.write(tmp_path / "card.json")
    with pytest.raises(
        ModelError,
        match=r"does not fit the model its card describes: shape "
        r"mismatch mlp.0.bias: file \(8,\) vs model \(9,\); mlp.0.weight: file \(8, 18\) "
        r"vs model \(9, 18\);.* \.\.\.",
    ):
        load_checkpoint(tmp_path)
    deeper = card.replace(model_config={**card.model_config, "num_layers": 3})
    deeper.write(tmp_path / "card.json")
    with pytest.raises(ModelError, match=r"missing keys \['mlp.10.bias'"):
        load_checkpoint(tmp_path)
    bad = card.replace(model_config={**card.model_config, "hidden_dim": -1})
    bad.write(tmp_path / "card.json")
    with pytest.raises(ModelError, match="cannot rebuild the model from its card: dnn config"):
        load_checkpoint(tmp_path)


def test_missing_or_malformed_files(tmp_path):
    with pytest.raises(ModelError, match="checkpoint directory not found"):
        load_checkpoint(tmp_path / "nope")
    with pytest.raises(ModelError, match="model card not found"):
        load_checkpoint(tmp_path)
    model = trained("lstm", TINY["lstm"])
    save_checkpoint(tmp_path, model, card_for(model))
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(ModelError, match="checkpoint weights not found"):
        load_checkpoint(tmp_path)
    (tmp_path / "card.json").write_text("{not json")
    with pytest.raises(ModelError, match=r"card.json: not valid JSON"):
        load_checkpoint(tmp_path)


def test_save_refuses_a_card_for_another_model(tmp_path):
    small, big = trained("dnn", TINY["dnn"]), trained("dnn", {**TINY["dnn"], "hidden_dim": 16})
    with pytest.raises(ModelError, match=r"the card describes dnn.*but the model was built as dnn"):
        save_checkpoint(tmp_path, big, card_for(small))
    with pytest.raises(ModelError, match="is frame level with subsampling 1 but its card says"):
        save_checkpoint(tmp_path, small, card_for(small).replace(subsampling=2))
    assert not (tmp_path / "card.json").exists()


def test_make_card_needs_a_spec_for_hand_built_models():
    from kdpipe.models.dnn import Dnn, DnnConfig

    model = Dnn(F, C, DnnConfig(hidden_dim=4))
    with pytest.raises(ModelError, match="not made by build_model"):
        card_for(model)
    spec = ModelSpec("dnn", F, C, DnnConfig(hidden_dim=4).to_dict())
    assert card_for(model, spec=spec).model_config["hidden_dim"] == 4


def card() -> ModelCard:
    return ModelCard(
        architecture="blstm",
        num_features=F,
        num_classes=C,
        labels=LABELS.names,
        level="frame",
        feature_fingerprint=FBANK.fingerprint,
        features=FBANK.to_dict(),
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"labels": ("a", "b")}, "2 labels but num_classes is 4"),
        ({"labels": "abcd"}, "labels must be a list of names"),
        ({"labels": ("a", "a", "b", "c")}, "bad label set: duplicate labels"),
        ({"level": "clip"}, "level must be 'frame' or 'utt'"),
        ({"level": "utterance", "subsampling": 2}, "utterance-level model has subsampling 1"),
        ({"num_features": 80}, "features have 6 mel bins but num_features is 80"),
        ({"features": {"num_mel_bins": 6, "cmvn": "speaker"}}, "features.cmvn must be"),
        ({"feature_fingerprint": ""}, "feature_fingerprint must be a non-empty string"),
        ({"weights_sha256": "abc"}, "weights_sha256 is not a sha256"),
        ({"metrics": {"wer": float("nan")}}, "metrics must be plain JSON data"),
    ],
)
def test_card_validation(change, message):
    with pytest.raises(ModelError, match=message):
        card().replace(**change)


def test_card_from_dict_errors():
    data = card().to_dict()
    with pytest.raises(ModelError, match=r"unknown key\(s\) 'colour'"):
        ModelCard.from_dict({**data, "colour": "red"})
    with pytest.raises(ModelError, match="card format 2 is newer than this kdpipe reads"):
        ModelCard.from_dict({**data, "format_version": 2, "new_field": 1})
    with pytest.raises(ModelError, match="missing 1 required positional argument: 'level'"):
        ModelCard.from_dict({k: v for k, v in data.items() if k != "level"})
    with pytest.raises(ModelError, match="never saved"):
        _ = card().weights_fingerprint


def test_check_compatible():
    c = card()
    c.check_compatible(LABELS, FBANK.fingerprint, "the store", level="frame")
    with pytest.raises(
        LabelSetError,
        match="label set of the checkpoint disagrees with the store: label 1 is 'a' vs 'x'",
    ):
        c.check_compatible(LabelSet(("sil", "x", "b", "c")), FBANK.fingerprint, "the store")
    with pytest.raises(LabelSetError, match="4 vs 3 labels"):
        c.check_compatible(LabelSet(("sil", "a", "b")), FBANK.fingerprint, "the store")
    other = FbankConfig(num_mel_bins=6, cmvn="global")
    with pytest.raises(
        FingerprintMismatch,
        match=r"features of teacher1 \(fingerprint "
        rf"{FBANK.fingerprint}\) disagree with the store \(fingerprint "
        rf"{other.fingerprint}\); differing settings: cmvn 'utterance' vs 'global'",
    ):
        c.check_compatible(LABELS, other.fingerprint, "the store", features=other, name="teacher1")
    with pytest.raises(ModelError, match="frame-level model but the corpus is utterance level"):
        c.check_compatible(LABELS, FBANK.fingerprint, "the corpus", level="utt")


def test_pick_device():
    assert pick_device("cpu") == torch.device("cpu")
    want = "cuda" if torch.cuda.is_available() else None
    if want:
        assert pick_device("auto").type == "cuda"
    elif not torch.backends.mps.is_available():
        assert pick_device("auto") == torch.device("cpu")
    with pytest.raises(ModelError, match="unknown device 'gpu-please'"):
        pick_device("gpu-please")
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="'cuda:1' requested but CUDA is not available"):
            pick_device("cuda:1")


def test_load_on_the_auto_device(tmp_path):
    model = trained("blstm", TINY["blstm"])
    save_checkpoint(tmp_path, model, card_for(model))
    loaded, _ = load_checkpoint(tmp_path, device="auto")
    device = pick_device("auto")
    assert next(loaded.parameters()).device.type == device.type
    x, lengths = batch()
    with torch.no_grad():
        got, _ = loaded(x.to(device), lengths.to(device))
        want, _ = model(x, lengths)
    torch.testing.assert_close(got.cpu(), want, atol=1e-5, rtol=1e-4)


def test_a_card_written_before_a_config_field_existed_still_loads(tmp_path):
    """Cards from before a field was added (e.g. lstm ``delay``) lack it; the field's default
    keeps the old behaviour, so the checkpoint loads; a real disagreement is still refused."""
    import json

    import torch

    from kdpipe.errors import ModelError
    from kdpipe.labels import LabelSet
    from kdpipe.models import build_model, load_checkpoint, make_card, save_checkpoint

    torch.manual_seed(0)
    model = build_model("lstm", 6, 3, {"hidden_dim": 4, "num_layers": 1})
    out = tmp_path / "ckpt"
    card0 = make_card(model, labels=LabelSet(("a", "b", "c")), feature_fingerprint="f" * 16)
    save_checkpoint(out, model, card0)
    card = json.loads((out / "card.json").read_text())
    del card["model_config"]["delay"]  # as written before the field existed
    (out / "card.json").write_text(json.dumps(card))
    loaded, _ = load_checkpoint(out)
    assert loaded.config.delay == 0
    card["model_config"]["hidden_dim"] = 5  # a real disagreement
    (out / "card.json").write_text(json.dumps(card))
    with pytest.raises(ModelError):
        load_checkpoint(out)
