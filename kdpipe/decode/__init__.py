"""Decoding a model's posteriors into phone, token and word sequences.

- ``phone_loop``: a phone-loop decoding graph over a model's label units, built with
  kaldifst: each label is a state of a phone, a phone bigram (from the training labels)
  weighs the loop;
- ``hybrid``: posteriors -> pseudo log-likelihoods (minus log priors, times the acoustic
  scale) -> Kaldi's ``FasterDecoder`` (kaldi-hmm-gmm's binding) -> the best path's phones;
- ``word_graph`` / ``ngram``: the word graph (lexicon and word LM) for the WER;
- ``scoring``: decoded error rates and the acoustic-scale sweep;
- ``ctc``: CTC models' greedy decoding and prefix beam search (with a token bigram).

Reads corpora and models, never the target store. Importing this package imports neither
torch nor kaldifst.
"""
