"""Corpora: manifests, readers for the formats speech people have, features, synthesis.

The flow: a reader (``readers/``) turns a folder into a ``Corpus`` (utterances, label set,
optional frame alignments); ``prepare`` computes log-mel filterbanks once into a feature
store that ``teach`` and ``learn`` both read.

- ``manifest``: ``Utterance`` and ``Corpus``, whatever the on-disk format;
- ``readers``: Speech Commands folders, Kaldi data dirs, HDF5 feature archives
  (``readers/problems.py``: raise or skip a bad utterance);
- ``audio``: one utterance's audio as mono float32 at the target rate;
- ``features``: ``FbankConfig``, log-mel filterbanks (kaldi-native-fbank) and CMVN;
- ``prepare``: ``prepare_corpus``, a corpus into a feature store (worker processes);
- ``featstore``: the feature store, ``FeatureStoreWriter`` and ``FeatureStore``;
- ``subsets``: split subsets such as ``train[:10%]``;
- ``views``: crop windows (``ViewConfig``) and per-utterance seeded generators;
- ``synth``: synthetic corpora from eSpeak NG.
"""
