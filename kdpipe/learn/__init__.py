"""Training: one trainer for hard labels (baselines, teachers) and soft targets (students).

- ``train_config.TrainConfig``: every knob, each default with its reason.
- ``kdpipe.batching`` (shared with teach): length-bucketed batches with padding (B, T, F) + lengths.
- ``lr_schedule``: warm-up and cosine decay of the learning rate.
- ``trainer.train``: the loop (AdamW, warm-up + cosine decay, clipping, early stopping,
  per-epoch and mid-epoch states and exact ``--resume``, DDP under ``torchrun``) over a
  ``BatchSource``: a split held in memory or a target stream.
- ``supervised``: ``learn --corpus`` (hard labels); ``kd``: ``learn --targets``
  (``KdRun``, ``train_kd``, ``kd_loss``) with ``kd_config.KdConfig`` and ``alpha_schedule``.
- ``stream.TargetStream``: the streaming ``IterableDataset`` (order in ``epoch_order``), sparse
  targets at the student's rate (``targets``), checks before the first step (``compat``).
"""
