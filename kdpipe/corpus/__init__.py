"""Corpora: manifests, readers for the formats speech people have, features, synthesis.

The flow: a reader (``readers/``) turns a folder into a ``Corpus`` (utterances, label set,
optional frame alignments; or transcripts alone, a ``transcribed`` corpus); ``prepare``
computes log-mel filterbanks once (or takes the features the corpus brings) into a feature
store that ``teach`` and ``learn`` both read. See docs/corpora.md.

- ``manifest``: ``Utterance``, ``Corpus`` and ``ExternalFeatures``, whatever the on-disk
  format;
- ``readers``: Speech Commands folders, Kaldi data dirs (``kaldi``; their ``feats.scp`` and
  ``cmvn.scp``: ``kaldi_feats``), HDF5 feature archives, lhotse manifests (``lhotse``, an
  optional extra) (``readers/problems.py``: raise or skip a bad utterance);
- ``audio``: one utterance's audio as mono float32 at the target rate;
- ``features``: ``FbankConfig``, log-mel filterbanks (kaldi-native-fbank) and CMVN;
- ``prepare``: ``prepare_corpus``, a corpus into a feature store (worker processes);
- ``featstore``: the feature store, ``FeatureStoreWriter`` and ``FeatureStore``;
- ``subsets``: split subsets such as ``train[:10%]``;
- ``views``: crop windows (``ViewConfig``) and per-utterance seeded generators;
- ``synth``: synthetic corpora from eSpeak NG.
"""
