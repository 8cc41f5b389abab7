"""The top-k rule on the tensors' device equals the numpy rule; the copies between host
and device return what was copied. The CPU runs the same functions the GPU does (its
device is the CPU); the pinned, non-blocking branches run where CUDA is present."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdpipe.device_essence import CPU_ROWS, log_tail, top_and_entropy
from kdpipe.essence import as_logprobs, top_rows, topk
from kdpipe.host_device import HostCopy, to_device
from kdpipe.store.posteriors import quality, quality_of


def _logp(rows: int, classes: int, seed: int = 0, masked: int = 0) -> np.ndarray:
    """(rows, classes) normalised log-probs; ``masked`` classes of every row at -inf."""
    rng = np.random.default_rng(seed)
    x = 3 * rng.standard_normal((rows, classes)).astype(np.float32)
    x[:, :masked] = -np.inf
    return as_logprobs(x, "logits")


@pytest.mark.parametrize("rows", [1, 7, CPU_ROWS, 2 * CPU_ROWS + 3])  # one, several blocks
def test_top_and_entropy_equal_the_numpy_rule(rows):
    logp = _logp(rows, 300, masked=5)
    top = top_and_entropy(torch.from_numpy(logp), 8)
    want = topk(logp, 8)
    np.testing.assert_array_equal(top.indices.numpy(), want.indices)
    np.testing.assert_array_equal(top.values.numpy(), want.values)
    assert top.indices.dtype == torch.int32
    (added, columns) = quality(logp, None)
    (added_dev, columns_dev) = quality_of(top.entropy.numpy(), top.indices[:, 0].numpy(), None)
    assert np.isfinite(top.entropy.numpy()).all()  # -inf classes add 0, not NaN
    assert added_dev.entropy_sum == pytest.approx(added.entropy_sum, rel=1e-5)
    assert columns_dev["entropy"] == pytest.approx(columns["entropy"], rel=1e-5)
    rows_dev = top_rows(top.indices.numpy(), top.values.numpy(), 300)
    np.testing.assert_array_equal(rows_dev.tail, want.tail)  # the tail: the same float64 sum


def test_top_and_entropy_keeps_leading_shape_and_agreement():
    logp = _logp(2 * 5, 40, seed=1).reshape(2, 5, 40)
    top = top_and_entropy(torch.from_numpy(logp), 3)
    assert top.values.shape == (2, 5, 3) and top.entropy.shape == (2, 5)
    labels = np.argmax(logp[1], -1)
    labels[0] = (labels[0] + 1) % 40  # one frame disagrees
    added, columns = quality_of(top.entropy[1].numpy(), top.indices[1, :, 0].numpy(), labels)
    assert (added.correct, added.counted) == (4, 5)
    assert columns["agreement"] == pytest.approx(0.8)
    p = np.exp(logp.astype(np.float64))
    np.testing.assert_allclose(top.entropy.numpy(), -(p * logp).sum(-1), rtol=1e-5)


def test_top_and_entropy_k_above_classes_keeps_all():
    logp = _logp(4, 6, seed=2)
    top = top_and_entropy(torch.from_numpy(logp), 10)
    assert top.values.shape == (4, 6)
    np.testing.assert_allclose(np.exp(top.values.numpy()).sum(1), 1.0, rtol=1e-5)


def test_log_tail_is_the_mass_left():
    logp = torch.from_numpy(_logp(50, 30, seed=3))
    values, _ = logp.topk(4, dim=-1)
    want = np.log1p(-np.exp(values.double().numpy()).sum(1))
    np.testing.assert_allclose(log_tail(values).numpy(), want, rtol=1e-4, atol=1e-6)
    assert (log_tail(logp) < -15).all()  # everything kept: nothing left (float32 rounding)


def test_host_copy_returns_the_tensors_on_the_cpu():
    a = torch.arange(12, dtype=torch.float32).view(3, 4)
    b = torch.tensor([1, 2], dtype=torch.int32)
    got = HostCopy(a, b).wait()
    np.testing.assert_array_equal(got[0], a.numpy())
    np.testing.assert_array_equal(got[1], b.numpy())
    assert got[1].dtype == np.int32
    moved = to_device(a, torch.device("cpu"))
    assert moved.device.type == "cpu" and torch.equal(moved, a)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (the pinned branch)")
def test_host_copy_from_cuda_is_pinned_and_complete():  # pragma: no cover - GPU machines
    a = to_device(torch.randn(64, 2000), torch.device("cuda"))
    top = top_and_entropy(torch.log_softmax(a, -1), 8)
    copy = HostCopy(top.values, top.indices, top.entropy)
    assert all(t.is_pinned() for t in copy._host)
    values, indices, _ = copy.wait()
    np.testing.assert_array_equal(indices, top.indices.cpu().numpy())
    np.testing.assert_array_equal(values, top.values.cpu().numpy())
