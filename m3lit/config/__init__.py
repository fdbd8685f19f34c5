"""Configuration: composing, checking and reloading run configs.

Modules: :mod:`~m3lit.config.compose` (the Hydra seam: compose, finalize, save), :mod:`~m3lit.config.checks`
(strict start-up validation, ``ConfigError``; the paths a run reads, checked before anything is built) and
:mod:`~m3lit.config.resume` (``resume=<run dir>`` reloads a run's own config). The ``key=value`` options of
the small commands live in :mod:`m3lit.files.options`, below every layer that has a command.
"""
