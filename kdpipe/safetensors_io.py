"""Reproducible safetensors bytes: ``canonical_safetensors`` sorts a file's JSON header.

safetensors writes its header (the tensors' entries and ``__metadata__``) in hash-map
order, which changes from run to run, so identical arrays would give different bytes and
their sha256 (a checkpoint card's ``weights_sha256``, a GMM-HMM file) would not be
reproducible. Both writers (``models/checkpoint``, ``hmm/model``) pass their bytes through
here; no torch, no numpy.
"""

from __future__ import annotations

import json


def canonical_safetensors(data: bytes) -> bytes:
    """``data`` (a safetensors file) with its JSON header's keys sorted. The tensor offsets
    are relative to the data section, which stays as it is."""
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data section stays 8-byte aligned, as safetensors pads
    return len(text).to_bytes(8, "little") + text + data[8 + size :]
