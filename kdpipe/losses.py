"""Training losses. Legend: B batch, T' model output frames, C classes.

Hard-label cross-entropy lives here now; the sparse KD losses of ``learn --targets`` join it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = -100  # label value that never contributes to a loss (padding)


def align_frame_labels(
    y: torch.Tensor, subsampling: int, out_lengths: torch.Tensor, out_frames: int
) -> torch.Tensor:
    """Frame labels (B, T) at the model's output rate (B, T'); frames past a length -> IGNORE.

    Output frame ``j`` of a model that subsamples by ``s`` is trained on input frame
    ``j * s`` (see ``batching.subsample_labels``).
    """
    y = y[:, ::subsampling][:, :out_frames]  # (B, <=T')
    if y.shape[1] < out_frames:  # a model may emit one more frame than ceil(T / s) rounding
        pad = y.new_full((y.shape[0], out_frames - y.shape[1]), IGNORE)
        y = torch.cat([y, pad], dim=1)  # (B, T')
    valid = torch.arange(out_frames, device=y.device)[None, :] < out_lengths[:, None]  # (B, T')
    return y.masked_fill(~valid, IGNORE)


def hard_ce(
    logits: torch.Tensor, y: torch.Tensor, label_smoothing: float = 0.0
) -> tuple[torch.Tensor, int, int]:
    """Mean cross-entropy to hard labels, plus (correct, counted) for accuracy.

    ``logits`` (B, T', C) with ``y`` (B, T') (IGNORE = skip), or (B, C) with ``y`` (B,).
    """
    flat = logits.reshape(-1, logits.shape[-1])  # (B*T', C) or (B, C)
    target = y.reshape(-1)  # (B*T',) or (B,)
    keep = target != IGNORE
    n = int(keep.sum())
    if n == 0:
        return logits.sum() * 0.0, 0, 0
    loss = F.cross_entropy(
        flat[keep], target[keep], label_smoothing=label_smoothing
    )  # mean over counted frames
    correct = int((flat[keep].argmax(-1) == target[keep]).sum())
    return loss, correct, n
