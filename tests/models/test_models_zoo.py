"""The built-in zoo: shapes on padded batches, protocol, padding invariance, sizes, configs."""

from __future__ import annotations

import math

import pytest
import torch

from kdpipe.errors import ConfigError
from kdpipe.models import build_model, check_protocol, known_models
from kdpipe.models.layers import splice

torch.set_num_threads(1)

F, C = 6, 5

# Tiny configs: each test runs in milliseconds.
TINY = {
    "dnn": {"hidden_dim": 16, "num_layers": 2, "left_context": 2, "right_context": 1},
    "lstm": {"hidden_dim": 8, "num_layers": 2},
    "blstm": {"hidden_dim": 8, "num_layers": 2},
    "tdnn": {"hidden_dim": 16, "kernel_sizes": [3, 3, 3], "dilations": [1, 2, 3]},
    "cnn": {"channels": [4, 8]},
    "dnn_pool": {"hidden_dim": 16, "num_layers": 2, "left_context": 1, "right_context": 1},
    "lstm_pool": {"hidden_dim": 8, "num_layers": 1},
}
# Other options that change the forward pass: norms, pooling, subsampling, directions.
VARIANTS = [(name, cfg) for name, cfg in TINY.items()] + [
    ("dnn", {**TINY["dnn"], "norm": "layer", "subsampling": 3}),
    ("dnn", {**TINY["dnn"], "norm": "none", "right_context": 0}),
    ("tdnn", {**TINY["tdnn"], "norm": "layer", "subsampling": 2}),
    ("tdnn", {**TINY["tdnn"], "norm": "none", "subsampling": 3}),
    ("cnn", {"channels": [4, 4, 8], "pooling": "max", "norm": "layer", "time_pool": 3}),
    ("dnn_pool", {**TINY["dnn_pool"], "pooling": "max", "norm": "layer"}),
    ("lstm_pool", {**TINY["lstm_pool"], "pooling": "max", "bidirectional": False}),
    ("lstm", {**TINY["lstm"], "delay": 3}),
    ("lstm", {**TINY["lstm"], "subsampling": 4}),
    ("lstm", {**TINY["lstm"], "subsampling": 3, "delay": 1}),
    ("blstm", {**TINY["blstm"], "subsampling": 4}),
]
IDS = [f"{n}-{i}" for i, (n, _) in enumerate(VARIANTS)]


def padded_batch(lengths: list[int], garbage: float = 7.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, F) random features with loud garbage in the padding, and (B,) lengths."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(len(lengths), max(lengths), F, generator=gen)
    for b, n in enumerate(lengths):
        x[b, n:] = garbage * torch.randn(x.shape[1] - n, F, generator=gen)
    return x, torch.tensor(lengths)


def build(name: str, cfg: dict, num_features: int = F) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(name, num_features, C, cfg)


def test_registry_lists_all_built_ins():
    assert set(known_models()) == set(TINY)


@pytest.mark.parametrize(("name", "cfg"), VARIANTS, ids=IDS)
def test_forward_shapes_on_a_padded_batch(name, cfg):
    model = build(name, cfg).eval()
    lengths = [13, 9, 1, 4]
    x, lens = padded_batch(lengths)
    logits, out_lengths = model(x, lens)
    assert out_lengths.dtype == torch.int64
    if model.level == "frame":
        s = model.subsampling
        assert s == cfg.get("subsampling", 1)
        assert logits.shape == (4, math.ceil(13 / s), C)
        assert out_lengths.tolist() == [math.ceil(n / s) for n in lengths]
        for b, n in enumerate(out_lengths.tolist()):  # padded outputs are zeros
            assert torch.all(logits[b, n:] == 0)
    else:
        assert logits.shape == (4, C)
        assert out_lengths.tolist() == [1, 1, 1, 1]
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize(("name", "cfg"), VARIANTS, ids=IDS)
def test_check_protocol_passes(name, cfg):
    model = build(name, cfg)
    model.train()
    check_protocol(model, F, C)
    assert model.training  # mode restored


@pytest.mark.parametrize(("name", "cfg"), VARIANTS, ids=IDS)
def test_utterance_alone_equals_utterance_padded_in_a_batch(name, cfg):
    model = build(name, cfg)
    model.train()
    model(*padded_batch([11, 8, 5]))  # move batch-norm running stats off their init
    model.eval()
    lengths = [17, 6, 1, 11, 3]
    x, lens = padded_batch(lengths)
    with torch.no_grad():
        batch, out_lengths = model(x, lens)
        for b, n in enumerate(lengths):
            alone, alone_len = model(x[b : b + 1, :n], lens[b : b + 1])
            assert alone_len.item() == out_lengths[b].item()
            if model.level == "frame":
                m = out_lengths[b].item()
                torch.testing.assert_close(alone[0, :m], batch[b, :m], atol=1e-5, rtol=0)
            else:
                torch.testing.assert_close(alone[0], batch[b], atol=1e-5, rtol=0)


@pytest.mark.parametrize(("name", "cfg"), VARIANTS, ids=IDS)
def test_padded_frames_get_no_gradient_in_training_mode(name, cfg):
    model = build(name, cfg).train()
    x, lens = padded_batch([9, 4, 2])
    x.requires_grad_(True)
    logits, out_lengths = model(x, lens)
    if model.level == "frame":
        mask = torch.arange(logits.shape[1])[None, :] < out_lengths[:, None]  # (B, T')
        logits = logits[mask]
    logits.square().sum().backward()
    assert x.grad[0, :9].abs().sum() > 0
    for b, n in enumerate([9, 4, 2]):
        assert torch.all(x.grad[b, n:] == 0), f"padding of utterance {b} gets gradient"


def test_dnn_subsampling_keeps_every_sth_frame_of_the_full_rate_model():
    full = build("dnn", TINY["dnn"]).eval()
    for s in (2, 3):
        sub = build("dnn", {**TINY["dnn"], "subsampling": s}).eval()
        sub.load_state_dict(full.state_dict())  # same weights, output frame j = input j*s
        x, lens = padded_batch([10, 7, 1])
        with torch.no_grad():
            want, _ = full(x, lens)
            got, got_len = sub(x, lens)
        assert got_len.tolist() == [math.ceil(n / s) for n in (10, 7, 1)]
        for b, m in enumerate(got_len.tolist()):
            torch.testing.assert_close(got[b, :m], want[b, ::s][:m])


@pytest.mark.parametrize("s", [1, 2, 3, 4])
@pytest.mark.parametrize("t", [1, 2, 5, 6, 7])
def test_tdnn_subsampled_lengths(s, t):
    model = build("tdnn", {**TINY["tdnn"], "subsampling": s}).eval()
    x, lens = padded_batch([t, 1])
    logits, out_lengths = model(x, lens)
    assert logits.shape[1] == -(-t // s)
    assert out_lengths.tolist() == [-(-t // s), 1]


def test_splice_repeats_each_utterances_own_edge_frames():
    x = torch.arange(1.0, 6.0)[None, :, None].repeat(2, 1, 1)  # (2, 5, 1): frames 1..5
    x[1, 3:] = 99.0  # utterance 1 has 3 real frames
    out = splice(x, torch.tensor([5, 3]), left=2, right=1)  # (2, 5, 4)
    assert out[0, 0].tolist() == [1, 1, 1, 2]
    assert out[0, 4].tolist() == [3, 4, 5, 5]
    assert out[1, 2].tolist() == [1, 2, 3, 3]  # never reaches the 99 padding
    assert splice(x, torch.tensor([5, 3]), 1, 1, step=2).shape == (2, 3, 3)


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_dnn_parameter_count_matches_its_formula():
    cfg = {"hidden_dim": 32, "num_layers": 3, "left_context": 4, "right_context": 2}
    h, k = 32, 7
    want = (k * F * h + h) + 2 * (h * h + h) + 3 * 2 * h + (h * C + C)  # + batch-norm affine
    assert n_params(build("dnn", cfg)) == want


SMALL_LARGE = {
    "dnn": ({"hidden_dim": 16, "num_layers": 1}, {"hidden_dim": 64, "num_layers": 3}),
    "lstm": ({"hidden_dim": 8, "num_layers": 1}, {"hidden_dim": 32, "num_layers": 3}),
    "blstm": ({"hidden_dim": 8, "num_layers": 1}, {"hidden_dim": 32, "num_layers": 3}),
    "tdnn": ({"hidden_dim": 8}, {"hidden_dim": 64}),
    "cnn": ({"channels": [4]}, {"channels": [8, 16, 32]}),
    "dnn_pool": ({"hidden_dim": 8}, {"hidden_dim": 64}),
    "lstm_pool": ({"hidden_dim": 8}, {"hidden_dim": 32, "num_layers": 3}),
}


@pytest.mark.parametrize("name", sorted(SMALL_LARGE))
def test_parameter_count_grows_with_config(name):
    small, large = SMALL_LARGE[name]
    assert n_params(build(name, large)) > 4 * n_params(build(name, small))


def test_blstm_is_the_lstm_with_two_directions():
    uni, bi = build("lstm", TINY["lstm"]), build("blstm", TINY["blstm"])
    assert not uni.lstm.bidirectional and bi.lstm.bidirectional
    assert n_params(bi) > 2 * n_params(uni) - n_params(uni.output)


def test_cnn_sizes_span_a_4k_and_a_100k_plus_model_with_the_same_code():
    small = build_model("cnn", 40, 12, {"channels": [8, 16, 16]})
    large = build_model("cnn", 40, 12, {"channels": [32, 64, 128, 128]})
    assert type(small) is type(large)
    assert 3_000 <= n_params(small) <= 5_000
    assert n_params(large) >= 100_000


@pytest.mark.parametrize(
    ("name", "cfg", "match"),
    [
        ("dnn", {"hidden_dim": 0}, "dnn config: hidden_dim must be an integer >= 1"),
        ("dnn", {"dropout": 1.0}, r"dnn config: dropout must be a number in \[0, 1\)"),
        ("dnn", {"norm": "group"}, "dnn config: norm must be one of batch, layer, none"),
        ("dnn", {"subsampling": 0}, "subsampling must be an integer >= 1"),
        ("dnn", {"hidden": 3}, r"dnn config: unknown key\(s\) 'hidden'"),
        ("blstm", {"num_layers": True}, "blstm config: num_layers must be an integer"),
        ("tdnn", {"kernel_sizes": [3, 4], "dilations": [1, 1]}, "kernel_sizes must be odd"),
        ("tdnn", {"kernel_sizes": [3], "dilations": [1, 2]}, "must have the same length"),
        ("tdnn", {"dilations": []}, "dilations must be a non-empty list"),
        ("cnn", {"channels": [8, "16"]}, "cnn config: channels must be a list of integers"),
        ("cnn", {"kernel_size": 4}, "cnn config: kernel_size must be odd, got 4"),
        ("lstm_pool", {"bidirectional": "yes"}, "bidirectional must be true or false"),
        ("dnn_pool", {"pooling": "attention"}, "pooling must be one of mean, max"),
    ],
)
def test_bad_configs_name_model_and_field(name, cfg, match):
    with pytest.raises(ConfigError, match=match):
        build_model(name, F, C, cfg)


def test_config_round_trips_and_lists_become_tuples():
    model = build_model("tdnn", F, C, {"kernel_sizes": [5, 3], "dilations": [1, 2]})
    assert model.config.kernel_sizes == (5, 3)
    spec = model.kdpipe_spec
    assert spec.architecture == "tdnn" and (spec.num_features, spec.num_classes) == (F, C)
    assert spec.config["kernel_sizes"] == [5, 3] and spec.config["hidden_dim"] == 256
    assert type(model.config).from_dict(spec.config) == model.config


@pytest.mark.parametrize("delay", [0, 2])
def test_lstm_delay_sees_exactly_delay_frames_ahead(delay):
    """Output t of an LSTM with delay d depends on input frames <= t + d and no later."""
    model = build("lstm", {**TINY["lstm"], "delay": delay}).eval()
    x, lengths = padded_batch([12])
    t = 4
    base, _ = model(x, lengths)
    for j, moves in ((t + delay, True), (t + delay + 1, False)):
        y = x.clone()
        y[0, j] += 5.0
        out, _ = model(y, lengths)
        assert bool((out[0, t] - base[0, t]).abs().max() > 1e-6) == moves, (delay, j)
    # the last d outputs read zeros past the end: still defined, still finite
    assert torch.isfinite(base).all() and base.shape[1] == 12


@pytest.mark.parametrize("name", ["lstm", "blstm"])
def test_lstm_subsampling_stacks_each_group_of_s_frames(name):
    """Output j of a subsampled (B)LSTM reads input frames j*s .. j*s + s - 1 as one step:
    with the same weights, it equals the full-rate model run on the stacked frames."""
    s = 3
    sub = build(name, {**TINY[name], "subsampling": s}).eval()
    full = build(name, TINY[name], num_features=F * s).eval()
    full.load_state_dict(sub.state_dict())
    x, lens = padded_batch([10, 7, 1])  # (B, 10, F)
    with torch.no_grad():
        got, got_len = sub(x, lens)
        keep = (torch.arange(10)[None, :] < lens[:, None])[..., None]  # (B, T, 1)
        stacked = torch.nn.functional.pad(x * keep, (0, 0, 0, 2)).reshape(3, 4, F * s)
        want, want_len = full(stacked, got_len)
    assert got_len.tolist() == [4, 3, 1] == want_len.tolist()
    for b, m in enumerate(got_len.tolist()):
        torch.testing.assert_close(got[b, :m], want[b, :m])
    y = x.clone()
    y[0, 5] += 5.0  # frame 5 is in group 1 only
    with torch.no_grad():
        moved = (sub(y, lens)[0][0] - got[0]).abs().amax(-1)  # (T',)
    assert moved[1] > 1e-6
    if name == "lstm":  # causal: group 0 does not see frame 5
        assert moved[0] < 1e-7


def test_blstm_refuses_a_delay():
    from kdpipe.errors import ConfigError

    with pytest.raises(ConfigError, match="delay must be 0"):
        build("blstm", {**TINY["blstm"], "delay": 2})
