"""``python -m m3lit.vectordb index|search ...`` (:mod:`m3lit.vectordb.cli`)."""

from __future__ import annotations

from m3lit.vectordb.cli import main

if __name__ == "__main__":
    main()
