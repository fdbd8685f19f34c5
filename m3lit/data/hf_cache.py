"""A ``datasets`` cache of its own for every local folder in the Hub's layout.

``datasets.load_dataset(<local folder>)`` names its cache after the folder's name, config and data-file
patterns, not after its content: a second folder with the same layout (another copy of the same
repository, or the same folder after its files changed) is served the first one's rows, silently. Reading
through :func:`local_folder_cache` gives each (folder, file sizes and modification times) its own cache
under m3lit's cache, so a changed or different folder is always read afresh.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from m3lit.files.cache import cache_root

__all__ = ["local_folder_cache"]


@contextmanager
def local_folder_cache(folder: str | os.PathLike) -> Iterator[Path]:
    """Within the block, ``datasets`` caches into a folder named after ``folder``'s path and files; yields it."""
    import datasets.config

    root = Path(folder).resolve()
    digest = hashlib.sha256(str(root).encode())
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"\0{path.relative_to(root)}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    previous = datasets.config.HF_DATASETS_CACHE
    datasets.config.HF_DATASETS_CACHE = cache_root() / "datasets-local" / digest.hexdigest()[:16]
    try:
        yield datasets.config.HF_DATASETS_CACHE
    finally:
        datasets.config.HF_DATASETS_CACHE = previous
