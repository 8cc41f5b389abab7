"""Corpora: manifests, readers for the formats speech people have, features, synthesis.

The flow: a reader (``readers/``) turns a folder into a ``Corpus`` (utterances, label set,
optional frame alignments); ``prepare`` computes log-mel filterbanks once into a feature
store that ``teach`` and ``learn`` both read.
"""
