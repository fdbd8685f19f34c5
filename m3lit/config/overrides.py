"""``key=value`` command-line options for the small tools (``m3lit.export``, ``m3lit.encode``).

The same override syntax as ``python -m m3lit.train`` (Hydra style), without a config tree: each tool
declares a dict of defaults and this parser checks names and types against it.

>>> parse_key_values(["n=3", "flag=true", "path=a b", "maybe=null"],
...                  {"n": 1, "flag": False, "path": None, "maybe": "x"}, "demo")
{'n': 3, 'flag': True, 'path': 'a b', 'maybe': None}
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["canonical_key", "parse_key_values"]

log = logging.getLogger("m3lit.config.overrides")


def canonical_key(key: str, aliases: Mapping[str, str], prog: str) -> str:
    """``key`` with its last dotted part renamed by ``aliases`` (a deprecated spelling), with a warning.

    >>> canonical_key("retrieval.passage_max_length", {"passage_max_length": "passage_max_len"}, "evaluate")
    'retrieval.passage_max_len'
    """
    head, _, last = key.rpartition(".")
    if last not in aliases:
        return key
    new = f"{head}.{aliases[last]}" if head else aliases[last]
    log.warning("%s: %s is deprecated, use %s (the same key in every m3lit command)", prog, key, new)
    return new


_TRUE, _FALSE, _NULL = {"true", "yes", "1"}, {"false", "no", "0"}, {"null", "none", "~", ""}


def parse_key_values(
    argv: Sequence[str],
    defaults: Mapping[str, Any],
    prog: str,
    required: Sequence[str] = (),
    aliases: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Parse ``key=value`` arguments against ``defaults`` (a value's type follows its default's type).

    Booleans take true/false (yes/no, 1/0); integers must parse as int; ``null``/``none`` gives None; any
    other option is a string. A leading ``--`` is tolerated (``--fp16=true``). A key of ``aliases`` (a
    deprecated spelling) is accepted for its target, with a warning.

    Raises:
        SystemExit: an unknown key, a malformed argument, a bad value or a missing required option,
            with a message naming the option and listing the valid ones.
    """
    options = dict(defaults)
    names = ", ".join(defaults)
    for arg in argv:
        key, sep, value = arg.removeprefix("--").partition("=")
        key = canonical_key(key, aliases or {}, prog)
        if not sep:
            raise SystemExit(f"{prog}: expected key=value, got {arg!r}; options: {names}")
        if key not in defaults:
            raise SystemExit(f"{prog}: unknown option {key!r}; options: {names}")
        options[key] = _convert(prog, key, value, defaults[key])
    for key in required:
        if options.get(key) in (None, ""):
            example = " ".join(f"{k}=..." for k in required)
            raise SystemExit(f"{prog}: {key}=... is required (python -m m3lit.{prog} {example})")
    return options


def _convert(prog: str, key: str, value: str, default: Any) -> Any:
    lowered = value.strip().lower()
    if isinstance(default, bool):
        if lowered in _TRUE | _FALSE:
            return lowered in _TRUE
        raise SystemExit(f"{prog}: {key} must be true or false, got {value!r}")
    if lowered in _NULL:
        return None
    if isinstance(default, int):
        try:
            return int(value)
        except ValueError:
            raise SystemExit(f"{prog}: {key} must be an integer, got {value!r}") from None
    return value
