"""``python -m m3lit.mteb``: :func:`m3lit.mteb.command.main`."""

from __future__ import annotations

from m3lit.mteb.command import main

if __name__ == "__main__":
    main()
