"""The KD losses on sparse targets against dense references, values and gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdpipe.essence import as_logprobs, cumulative, full, sample, threshold, topk
from kdpipe.learn.targets import pad_rows
from kdpipe.losses import IGNORE, dense_kd, hard_ce, multitask, sampled_kd, sparse_kd
from kdpipe.sparse import SparseRows
from kdpipe.store import coding

torch.set_num_threads(1)
N, C = 7, 13


def teacher(seed=0, scale=2.0):
    z = np.random.default_rng(seed).normal(size=(N, C)) * scale
    return as_logprobs(z.astype(np.float32), "logits")


def student(seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, C, generator=g, dtype=torch.float64).float().requires_grad_(True)


def as_codes(rows: SparseRows) -> SparseRows:
    """The rows as the store gives them back: uint8 codes plus the codebook."""
    from dataclasses import replace

    enc = coding.encode_logp(rows.values, "uint8")
    return replace(
        rows,
        values=enc,
        tail=coding.encode_logp(rows.tail, "uint8", tail=True),
        codebook=coding.log_codebook(),
    )


def value_and_grad(fn, logits):
    loss = fn(logits).mean()
    (g,) = torch.autograd.grad(loss, logits)
    return loss.detach(), g


RULES = {
    "topk3": lambda lp: topk(lp, 3),
    "threshold": lambda lp: threshold(lp, 0.05),
    "cumulative": lambda lp: cumulative(lp, 0.8),
    "full": full,
}


@pytest.mark.parametrize("rule", list(RULES))
@pytest.mark.parametrize("tail_rule", ["renorm", "uniform"])
@pytest.mark.parametrize("temperature", [1.0, 2.5])
@pytest.mark.parametrize("codes", [False, True])
def test_sparse_kd_equals_dense_reference(rule, tail_rule, temperature, codes):
    rows = RULES[rule](teacher())
    if codes:
        rows = as_codes(rows)
    idx, logp, tail = (torch.from_numpy(a) for a in pad_rows(rows))
    dense = torch.from_numpy(rows.densify(spread_tail=tail_rule == "uniform"))  # (N, C)
    z = student()
    got, g_got = value_and_grad(lambda x: sparse_kd(x, idx, logp, tail, temperature, tail_rule), z)
    ref, g_ref = value_and_grad(lambda x: dense_kd(x, dense, temperature), z)
    assert torch.allclose(got, ref, atol=1e-5, rtol=1e-4), (got, ref)
    assert torch.allclose(g_got, g_ref, atol=1e-6, rtol=1e-4)
    assert float(got) > 0


def test_tail_rules_differ_and_agree_without_a_tail():
    rows = topk(teacher(), 3)
    idx, logp, tail = (torch.from_numpy(a) for a in pad_rows(rows))
    z = student()
    a = sparse_kd(z, idx, logp, tail, 1.0, "renorm")
    b = sparse_kd(z, idx, logp, tail, 1.0, "uniform")
    assert not torch.allclose(a, b)
    none = torch.full_like(tail, -torch.inf)
    assert torch.allclose(
        sparse_kd(z, idx, logp, none, 1.0, "renorm"), sparse_kd(z, idx, logp, none, 1.0, "uniform")
    )


def test_kd_is_zero_at_the_teacher_and_t2_scaled():
    lp = teacher()
    rows = full(lp)
    idx, logp, tail = (torch.from_numpy(a) for a in pad_rows(rows))
    z = torch.from_numpy(lp).clone().requires_grad_(True)  # student == teacher
    assert float(sparse_kd(z, idx, logp, tail, 3.0).detach().abs().max()) < 1e-5
    # T^2 scaling: the gradient of T^2 KL is T (q_T - p_T), of the same order for any T
    zs = student()
    g1 = torch.autograd.grad(sparse_kd(zs, idx, logp, tail, 1.0).sum(), zs)[0]
    g4 = torch.autograd.grad(sparse_kd(zs, idx, logp, tail, 4.0).sum(), zs)[0]
    q4 = torch.softmax(zs.detach() / 4, -1)
    p4 = torch.softmax(torch.from_numpy(lp) / 4, -1)
    assert torch.allclose(g4, 4 * (q4 - p4), atol=1e-5)
    assert 0.2 < float(g4.norm() / g1.norm()) < 5


def test_sampled_kd_matches_dense_and_is_unbiased():
    lp = teacher(scale=1.0)
    p = torch.from_numpy(np.exp(lp))
    z = student()
    rows = sample(lp, 16, rng=0)
    idx, logw, _ = (torch.from_numpy(a) for a in pad_rows(rows))
    got, g_got = value_and_grad(lambda x: sampled_kd(x, idx, logw), z)
    w = torch.from_numpy(rows.densify())
    ref = -(w * torch.log_softmax(z, -1)).sum(1).mean()
    g_ref = torch.autograd.grad(ref, z)[0]
    assert torch.allclose(got, ref.detach(), atol=1e-5) and torch.allclose(g_got, g_ref, atol=1e-6)
    # unbiased: the mean gradient over many samples approaches the full soft-CE gradient
    draws = 400
    acc = torch.zeros(N, C)
    for s in range(draws):
        ix, lw, _ = (torch.from_numpy(a) for a in pad_rows(sample(lp, 4, rng=s)))
        acc += torch.autograd.grad(sampled_kd(z, ix, lw).mean(), z)[0]
    full_grad = torch.autograd.grad(-(p * torch.log_softmax(z, -1)).sum(1).mean(), z)[0]
    err = (acc / draws - full_grad).abs().max()
    biased = torch.autograd.grad(
        sparse_kd(z, *(torch.from_numpy(a) for a in pad_rows(topk(lp, 2)))).mean(), z
    )[0]
    assert float(err) < 0.25 * float((biased - full_grad).abs().max())
    assert float(err) < 0.01


def test_multitask_and_hard_ce():
    soft, hard = torch.tensor(2.0), torch.tensor(4.0)
    assert float(multitask(soft, hard, 0.25)) == pytest.approx(3.5)
    assert multitask(soft, torch.tensor(float("nan")), 1.0) is soft
    assert multitask(torch.tensor(float("nan")), hard, 0.0) is hard
    z = torch.zeros(2, 3, 4)
    y = torch.tensor([[0, 1, IGNORE], [2, IGNORE, IGNORE]])
    loss, correct, counted = hard_ce(z, y)
    assert correct == 1 and counted == 3 and float(loss) == pytest.approx(np.log(4), rel=1e-6)


def test_pad_rows_dense_single_row_is_writable():
    """A clip-level store with the full rule has one dense row per utterance; its index
    array must be a fresh writable array (torch.from_numpy warns on read-only ones)."""
    logp = np.log(np.full((1, 5), 0.2, dtype=np.float32))
    idx, lp, tail = pad_rows(full(logp))
    assert idx.flags.writeable and idx.tolist() == [[0, 1, 2, 3, 4]]
    assert np.allclose(lp, logp) and np.isneginf(tail).all()
