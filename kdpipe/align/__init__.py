"""Forced alignment of transcribed corpora: ``kdpipe corpus align`` (docs/align.md).

- ``features``: MFCC + deltas with per-speaker mean normalisation (kaldi-native-fbank);
- ``gmm``: one EM step (accumulate, Kaldi's ML update, mixing up) and Viterbi alignment;
- ``jobs``: speaker-split worker processes that keep their share (Kaldi's ``nj``);
- ``aligner``: monophones, the tree, triphones, with per-pass resume (``align_corpus``);
- ``align_config``: every setting with Kaldi's default;
- ``data_dir``: a transcribed corpus in, a frame-labelled Kaldi data dir out (``align_data``);
- ``realign``: realignment with a trained kdpipe frame model (``realign_data``);
- ``truth``: agreement with known true phones (the synthetic corpora).
"""
