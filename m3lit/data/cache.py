"""Where m3lit keeps derived files (demo corpus, token-length caches): ``$M3LIT_CACHE`` or ``.cache/m3lit``."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_root"]


def cache_root() -> Path:
    """``$M3LIT_CACHE`` if set, else ``.cache/m3lit`` under the repository (editable install) or the cwd."""
    env = os.environ.get("M3LIT_CACHE")
    if env:
        return Path(env).expanduser()
    repo = Path(__file__).resolve().parents[2]
    base = repo if (repo / "pyproject.toml").exists() else Path.cwd()
    return base / ".cache" / "m3lit"
