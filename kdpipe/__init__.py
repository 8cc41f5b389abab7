"""kdpipe: two-phase offline knowledge distillation for speech acoustic models.

Phase 1 (``kdpipe teach``) runs a teacher or an ensemble over a corpus once and stores the
"essence" of its posteriors in a Zarr v3 target store. Phase 2 (``kdpipe learn``) streams
that store into any student. The flow of a frame::

    wav -> fbank -> teacher logits -> essence -> store chunk -> streamed block -> KD loss

Heavy libraries (torch, zarr, polars) are imported inside functions so ``kdpipe --help``
stays instant.
"""

__version__ = "0.1.0"
