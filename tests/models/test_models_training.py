"""Every built-in model learns: a few Adam steps on a learnable toy problem cut the loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as nnf

from kdpipe.models import build_model

torch.set_num_threads(1)

F, C = 6, 4

TINY = {
    "dnn": {"hidden_dim": 32, "num_layers": 2, "left_context": 1, "right_context": 1},
    "dnn-s2": {"hidden_dim": 32, "num_layers": 2, "subsampling": 2},
    "lstm": {"hidden_dim": 16, "num_layers": 1},
    "blstm": {"hidden_dim": 16, "num_layers": 1},
    "tdnn": {"hidden_dim": 32, "kernel_sizes": [3, 1], "dilations": [1, 1]},
    "tdnn-s3": {"hidden_dim": 32, "kernel_sizes": [1, 3], "dilations": [1, 1], "subsampling": 3},
    "cnn": {"channels": [8, 16]},
    "dnn_pool": {"hidden_dim": 32, "num_layers": 2, "left_context": 0, "right_context": 0},
    "lstm_pool": {"hidden_dim": 16, "num_layers": 1},
}


def toy_batch(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Features, lengths, and per-frame labels = argmax of each frame's first C features."""
    lengths = torch.tensor([20, 17, 12, 9, 20, 5])
    x = torch.randn(len(lengths), 20, F, generator=gen)  # (B, T, F)
    labels = x[..., :C].argmax(-1)  # (B, T)
    return x, lengths, labels


def loss_of(model: torch.nn.Module, x, lengths, labels) -> torch.Tensor:
    logits, out_lengths = model(x, lengths)
    if model.level == "utt":
        mask = torch.arange(x.shape[1])[None, :] < lengths[:, None]  # (B, T)
        clip = (x[..., :C] * mask[..., None]).sum(1).argmax(-1)  # (B,): label of the mean
        return nnf.cross_entropy(logits, clip)
    s = model.subsampling
    targets = labels[:, ::s]  # (B, T'): output frame j is input frame j * s
    mask = torch.arange(targets.shape[1])[None, :] < out_lengths[:, None]  # (B, T')
    return nnf.cross_entropy(logits[mask], targets[mask])


@pytest.mark.parametrize("key", sorted(TINY))
def test_a_few_adam_steps_make_the_loss_fall(key):
    torch.manual_seed(0)
    model = build_model(key.split("-")[0], F, C, {**TINY[key], "dropout": 0.0})
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    gen = torch.Generator().manual_seed(0)
    batch = toy_batch(gen)
    model.train()
    losses = []
    for _ in range(25):
        loss = loss_of(model, *batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], f"{key}: loss {losses[0]:.3f} -> {losses[-1]:.3f}"
