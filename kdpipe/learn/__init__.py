"""Training: one trainer for hard labels (baselines, teachers) and soft targets (students).

- ``config.TrainConfig``: every knob, each default with its reason.
- ``batching``: length-bucketed batches with padding (B, T, F) + lengths.
- ``trainer.train``: the loop (AdamW, warm-up + cosine decay, clipping, early stopping,
  per-epoch and mid-epoch states and exact ``--resume``, DDP under ``torchrun``) over a
  ``BatchSource``: a split held in memory or a target stream.
- ``supervised``: ``learn --corpus`` (hard labels); ``kd``: ``learn --targets``
  (``KdRun``, ``train_kd``, ``kd_loss``) with ``kdconfig.KdConfig`` and ``schedules``.
- ``stream.TargetStream``: the streaming ``IterableDataset`` (order in ``plan``), sparse
  targets at the student's rate (``targets``), checks before the first step (``compat``).
"""
