"""``python -m m3lit.mteb`` (:func:`m3lit.mteb.command.main`) and the ``m3lit-mteb`` script (:func:`cli`)."""

from __future__ import annotations

from m3lit.mteb.command import main

__all__ = ["cli", "main"]


def cli() -> int:
    """The ``m3lit-mteb`` script: :func:`main` without its results dict (exit status 0 on success)."""
    return 0 if isinstance(main(), dict) else 1


if __name__ == "__main__":
    main()
