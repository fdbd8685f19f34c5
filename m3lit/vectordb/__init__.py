"""Hybrid search in a vector database: BGE-M3's dense, sparse and ColBERT vectors in one Qdrant collection.

Qdrant's local mode runs the database inside the Python process (``pip install "m3lit[vectordb]"``, which
brings ``qdrant-client``); the same code talks to a Qdrant server with ``url=``. Modules:

- :mod:`m3lit.vectordb.collection`: the collection (three named vectors per passage), loading an
  ``m3lit.encode`` output into it;
- :mod:`m3lit.vectordb.search`: dense, sparse, Dense+Sparse and All, fused with m3lit's weights;
- :mod:`m3lit.vectordb.cli`: ``python -m m3lit.vectordb index|search``.

Why Qdrant, and how it compares with ``m3lit.evaluate``: docs/vector-database.md.
"""

from __future__ import annotations
