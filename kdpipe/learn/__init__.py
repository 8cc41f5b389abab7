"""Training: one trainer for hard labels (baselines, teachers) and, later, soft targets.

- ``config.TrainConfig``: every knob, each default with its reason.
- ``batching``: length-bucketed batches with padding (B, T, F) + lengths.
- ``trainer.train``: the loop (AdamW, warm-up + cosine decay, clipping, early stopping,
  per-epoch checkpoints and exact ``--resume``, DDP under ``torchrun``).
"""
