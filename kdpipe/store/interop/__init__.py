"""Interop: target stores to and from other tools' formats (docs/interop.md).

- ``export``: ``export_store``, a store out to a Kaldi ``Posterior`` archive (or dense
  float matrices), a lhotse ``CutSet`` with the targets as custom arrays, or NumPy files.
- ``sources``: the readers ``kdpipe store import`` reads teacher outputs with (Kaldi
  tables and ``Posterior`` archives, folders of ``.npy``, HDF5); the import itself
  (``kdpipe.teach.imported``) checks them against the corpus, which this layer may not
  read.

Nothing is imported here: each module is imported by name, and heavy packages (lhotse,
which imports torch) only inside the functions that need them.
"""
