"""Configuration: composing, checking and reloading run configs, and ``key=value`` options.

Modules: :mod:`~m3lit.config.compose` (the Hydra seam: compose, finalize, save), :mod:`~m3lit.config.checks`
(strict start-up validation, ``ConfigError``), :mod:`~m3lit.config.overrides` (``key=value`` parsing for
the small tools) and :mod:`~m3lit.config.resume` (``resume=<run dir>`` reloads a run's own config).
Nothing is imported here, so ``import m3lit.config.overrides`` stays free of Hydra.
"""
