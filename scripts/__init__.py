"""Acceptance checks that are not benchmarks: ``python -m scripts.gpu_check`` (``make gpu-check``)."""
