"""Where m3lit keeps derived files (demo corpus, real-model folders, benchmarks): ``$M3LIT_CACHE`` or ``.cache/m3lit``.

Every builder writes into a hidden temporary sibling of its output folder and renames it into place only
when the build has finished (:func:`atomic_build`), so an interrupted or failed build leaves nothing
half-made in the cache, and a folder that exists is complete.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["cache_root", "atomic_build", "sha256_file"]


def cache_root() -> Path:
    """``$M3LIT_CACHE`` if set, else ``.cache/m3lit`` under the repository (editable install) or the cwd."""
    env = os.environ.get("M3LIT_CACHE")
    if env:
        return Path(env).expanduser()
    repo = Path(__file__).resolve().parents[2]
    base = repo if (repo / "pyproject.toml").exists() else Path.cwd()
    return base / ".cache" / "m3lit"


@contextmanager
def atomic_build(out: Path, *, force: bool = False, marker: str = "manifest.json") -> Iterator[Path]:
    """Yield a fresh temporary folder beside ``out``; on success it becomes ``out`` by one rename.

    Args:
        out: the final folder. Its parent is created.
        force: replace an existing ``out`` (only after the new build succeeded).
        marker: a file every finished build holds; if another process renamed its finished build into
            place first, that one is kept.

    On any exception the temporary folder is removed and ``out`` is left as it was.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        yield tmp
        if force and out.exists():
            shutil.rmtree(out)
        try:
            os.rename(tmp, out)
        except OSError:  # another process finished the same build first: keep theirs
            if not (out / marker).exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in ``chunk``-byte pieces (wheels and databases are 100+ MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
