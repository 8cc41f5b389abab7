"""Copies between the host and an accelerator: pinned buffers and non-blocking copies on
CUDA, so a copy overlaps the work queued before and after it; plain tensors on the CPU,
where the same functions run in the tests.

- ``to_device``: a host batch onto the device (``teach``'s padded inputs).
- ``HostCopy``: device tensors back to the host (``teach``'s selected targets), awaited
  by whoever reads them (the writer thread), so the next batch's forward is queued
  while the copy runs.

Pinned buffers come from torch's caching host allocator: a buffer per batch costs no
``cudaHostAlloc`` after the first few batches.
"""

from __future__ import annotations

import numpy as np
import torch


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor`` (on the host) on ``device``: through a pinned buffer and a non-blocking
    copy on CUDA (the host goes on at once), itself on the CPU."""
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


class HostCopy:
    """Tensors copied to the host: pinned buffers and non-blocking copies on CUDA (their
    end recorded as an event), the tensors themselves on the CPU. ``wait()`` returns
    them as numpy arrays once the copies have landed; call it from any thread."""

    def __init__(self, *tensors: torch.Tensor) -> None:
        self._event: torch.cuda.Event | None = None
        if any(t.device.type == "cuda" for t in tensors):
            host = []
            for t in tensors:
                buffer = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
                buffer.copy_(t, non_blocking=True)
                host.append(buffer)
            self._event = torch.cuda.Event()
            self._event.record()  # on the current stream, after the copies
            self._host = host
        else:
            self._host = [t.detach().cpu() for t in tensors]  # on the CPU: no copy

    def wait(self) -> list[np.ndarray]:
        """The tensors as host numpy arrays (waits for the copies on CUDA)."""
        if self._event is not None:
            self._event.synchronize()
        return [t.numpy() for t in self._host]
