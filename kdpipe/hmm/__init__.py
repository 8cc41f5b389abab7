"""Kaldi-style GMM-HMMs for forced alignment, on top of ``kaldi-hmm-gmm`` (k2-fsa's bindings
of Kaldi's HMM, GMM, tree and aligner code): topologies, the lexicon FSTs, the model file,
and the triphone decision tree (``tree``) that the bindings cannot build themselves."""
