"""Cross-device negatives on 2 gloo processes (worker and cases: tests/unit/training/test_cross_device.py)."""

from __future__ import annotations

import os
import tempfile

import torch.multiprocessing as mp
from test_cross_device import W, _worker


def test_two_process_gather_matches_single_process():
    """All CASES in one 2-process gloo group (process start-up dominates the cost)."""
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_worker, args=(os.path.join(tmp, "pg"),), nprocs=W, join=True)
