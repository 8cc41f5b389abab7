"""Interop: target stores to and from other tools' formats (docs/interop.md).

- ``export``: ``export_store``, a store out to a Kaldi ``Posterior`` archive (or dense
  float matrices), a lhotse ``CutSet`` with the targets as custom arrays, or NumPy files.
- ``import_*``: targets in from other formats, one module per format (see the "Import"
  section of docs/interop.md).

Nothing is imported here: each module is imported by name, and heavy packages (lhotse,
which imports torch) only inside the functions that need them.
"""
