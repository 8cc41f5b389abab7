"""What alignment and decoding share: Kaldi-style GMM-HMMs on top of ``kaldi-hmm-gmm``
(k2-fsa's bindings of Kaldi's HMM, GMM, tree and aligner code).

- ``topology``: HMM topologies as ``gen_topo.pl`` writes them;
- ``lang``: phone and word tables, the lexicon FST, training graphs (``prepare_lang.sh``);
- ``event_map``: Kaldi's event maps and ContextDependency in Kaldi's own binary/text forms;
- ``tree_stats``: ``acc-tree-stats``;
- ``tree``: the triphone decision tree the bindings cannot build (``cluster-phones`` +
  ``build-tree``);
- ``model``: ``GmmHmm`` and its safe file (safetensors, never pickled).
"""
