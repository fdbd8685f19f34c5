"""Files on disk, shared by every layer: the cache folder with its atomic builds (:mod:`~m3lit.files.cache`).

The lowest layer: it imports nothing else from m3lit and no torch (see docs/architecture.md).
"""
