"""KD weight schedules: alpha(epoch), the weight of the teacher term in
``alpha * soft + (1 - alpha) * hard`` (``kdpipe.losses.multitask``).

- ``constant``: alpha every epoch (alpha = 1: teacher targets only; Li et al. 2014).
- ``anneal``: alpha moves linearly from ``alpha`` (first epoch) to ``alpha_end`` (last),
  trusting the teacher early and the labels late.
- ``pretrain``: soft-only pre-training for ``soft_epochs`` epochs, then hard-label
  fine-tuning (alpha = 0): Tang, Wang & Zhang, "Recurrent neural network training with
  dark knowledge transfer", ICASSP 2016.

A pure function of the epoch, so a resumed run needs no schedule state.
"""

from __future__ import annotations

SCHEDULES = ("constant", "anneal", "pretrain")


def alpha_at(
    epoch: int, epochs: int, schedule: str, alpha: float, alpha_end: float, soft_epochs: int
) -> float:
    """The teacher weight of 0-based ``epoch`` in an ``epochs``-epoch run."""
    if schedule == "constant":
        return alpha
    if schedule == "anneal":
        progress = epoch / max(epochs - 1, 1)
        return alpha + (alpha_end - alpha) * min(max(progress, 0.0), 1.0)
    if schedule == "pretrain":
        return 1.0 if epoch < soft_epochs else 0.0
    raise ValueError(f"unknown KD schedule {schedule!r}; known: {', '.join(SCHEDULES)}")
