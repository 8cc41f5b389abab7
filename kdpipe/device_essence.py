"""The top-k rule and the teacher's quality on the tensors' own device. Legend: ...
leading dims (B, T' or B), C classes, k kept.

``essence`` is the rule set in numpy (every rule, for imported outputs and the reference);
this module is the fast path of its standard rule for outputs that are still tensors
(``teach``'s members, ``learn --teacher-online``): selection, entropy and top-1 run where
the teacher ran, so a GPU teacher sends k entries a frame across the bus instead of C,
and the host never makes a full pass over the classes. The stored numbers are the same:
``teach`` computes the tail of the kept values on the host with ``essence.top_rows``, so
a store is bit for bit the one the numpy rule writes (tested), the entropy column aside
(float32 sums in another order).

What is kept goes to the host through ``kdpipe.host_device.HostCopy``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class DeviceTop:
    """The k most probable classes of each row, and the row's quality, on the device."""

    values: torch.Tensor  # (..., k) float32 log-probs, descending
    indices: torch.Tensor  # (..., k) int32 classes (C < 2^31)
    entropy: torch.Tensor  # (...,) float32 nats of the full row


CPU_ROWS = 1024  # rows a CPU pass takes at once: its (rows, C) scratch stays in cache, and
# no (N, C) temporary is allocated (its page faults cost more than the arithmetic: 2.4x)


def top_and_entropy(logp: torch.Tensor, k: int) -> DeviceTop:
    """Top-k (sorted, descending) and entropy of normalised log-probs (..., C), on their
    device. The input must hold no NaN (``teach`` checks its members' outputs first)."""
    shape, c = logp.shape[:-1], logp.shape[-1]
    flat = logp.reshape(-1, c)  # (N, C)
    n, k = flat.shape[0], min(k, c)
    rows = CPU_ROWS if flat.device.type == "cpu" else max(n, 1)  # elsewhere: one pass
    values = flat.new_empty(n, k)  # (N, k)
    indices = torch.empty(n, k, dtype=torch.int64, device=flat.device)  # (N, k)
    plogp = flat.new_empty(n)  # (N,) sum_c p log p
    scratch = flat.new_empty(min(rows, n), c)  # (rows, C)
    for start in range(0, n, rows):
        block = flat[start : start + rows]  # (rows, C)
        p = scratch[: len(block)]
        torch.topk(
            block, k, dim=-1, out=(values[start : start + rows], indices[start : start + rows])
        )
        torch.exp(block, out=p).mul_(block).nan_to_num_(nan=0.0)  # 0 * -inf: p = 0 adds 0
        torch.sum(p, dim=-1, out=plogp[start : start + rows])
    return DeviceTop(
        values.view(*shape, k), indices.to(torch.int32).view(*shape, k), -plogp.view(shape)
    )


def log_tail(values: torch.Tensor) -> torch.Tensor:
    """(...,) log(1 - kept mass) of kept log-probs (..., k); -inf when nothing is left."""
    kept = torch.logsumexp(values, dim=-1).clamp(max=0.0)  # (...,) log kept mass
    return torch.log(-torch.expm1(kept))
