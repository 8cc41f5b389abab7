"""Training: one trainer for hard labels (baselines, teachers) and soft targets (students).

- ``train_config.TrainConfig``: every knob, each default with its reason.
- ``kdpipe.batching`` (shared with teach): length-bucketed batches with padding (B, T, F) + lengths.
- ``data``: a split held in memory (``LabelledData``) and the padded ``Batch``.
- ``lr_schedule``: warm-up and cosine decay of the learning rate; ``specaug``: SpecAugment.
- ``trainer.train``: the loop (AdamW, warm-up + cosine decay, clipping, early stopping,
  per-epoch and mid-epoch states and exact ``--resume``, DDP under ``torchrun`` via
  ``distributed``) over a ``BatchSource``: a split held in memory or a target stream;
  ``evaluate`` scores on dev (and ``kdpipe eval``), ``log`` writes the metrics and curves.
- ``session``: what every run shares: its identity (``Run``) and claim on the output
  directory, the device and process group, the student, the hand-over to the trainer.
- ``supervised``: ``learn --corpus`` (hard labels; ``SupervisedRun``); ``kd``: ``learn
  --targets`` (``KdRun``, ``train_kd``, ``kd_loss``) with ``kd_config.KdConfig`` and
  ``alpha_schedule``; ``runs``: a learn config plus overrides made into either run.
- ``stream.TargetStream``: the streaming ``IterableDataset`` (order in ``epoch_order``), sparse
  targets at the student's rate (``targets``), checks before the first step (``compat``).
"""
