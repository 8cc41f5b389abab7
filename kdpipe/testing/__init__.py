"""Builders of fake data for the tests and benchmarks (never imported by the CLI).

- ``corpora``: fake corpora on disk (Speech Commands, Kaldi dirs, HDF5 archives) and feature
  stores of learnable class-dependent features.
- ``posteriors``: synthetic teacher posteriors (i.i.d. or speech-like segments), (N, C).
- ``stores``: target stores: fake metadata and utterances, a store of targets for a feature
  store, reading a store back as arrays, damaging its files.
- ``teachers``: tiny teacher checkpoints with random weights, and comparing checkpoints.
"""
