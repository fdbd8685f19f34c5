"""``key=value`` command-line options and their ``--help``, for every command without a config tree.

The same override syntax as ``python -m m3lit.train`` (Hydra style): each command declares a dict
``OPTIONS`` of defaults, each key documented by a comment on its line (``"key": default,  # what it
does``); :func:`parse_key_values` checks names and types against it, and :func:`command_help` lists the
keys with their defaults and those comments.

>>> parse_key_values(["n=3", "flag=true", "path=a b", "maybe=null"],
...                  {"n": 1, "flag": False, "path": None, "maybe": "x"}, "build")
{'n': 3, 'flag': True, 'path': 'a b', 'maybe': None}
"""

from __future__ import annotations

import ast
import io
import logging
import sys
import tokenize
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from m3lit.files.errors import DEBUG_FLAG, UsageError

__all__ = ["canonical_key", "command_help", "option_docs", "parse_key_values"]

log = logging.getLogger("m3lit.files.options")


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
        UsageError: an unknown key, a malformed argument, a bad value or a missing required option,
            with a message naming the option and listing the valid ones.
    """
    options = dict(defaults)
    names = ", ".join(defaults)
    for arg in argv:
        key, sep, value = arg.removeprefix("--").partition("=")
        key = canonical_key(key, aliases or {}, prog)
        if not sep:
            raise UsageError(f"{prog}: expected key=value, got {arg!r}; options: {names} (see --help)")
        if key not in defaults:
            raise UsageError(f"{prog}: unknown option {key!r}; options: {names}")
        options[key] = _convert(prog, key, value, defaults[key])
    for key in required:
        if options.get(key) in (None, ""):
            example = " ".join(f"{k}=..." for k in required)
            raise UsageError(f"{prog}: {key}=... is required ({prog} {example}; see --help)")
    return options


def _convert(prog: str, key: str, value: str, default: Any) -> Any:
    lowered = value.strip().lower()
    if isinstance(default, bool):
        if lowered in _TRUE | _FALSE:
            return lowered in _TRUE
        raise UsageError(f"{prog}: {key} must be true or false, got {value!r}")
    if lowered in _NULL:
        return None
    if isinstance(default, int):
        try:
            return int(value)
        except ValueError:
            raise UsageError(f"{prog}: {key} must be an integer, got {value!r}") from None
    return value


# ---------------------------------------------------------------------------------------------- --help
def option_docs(source: str | Path, name: str = "OPTIONS") -> dict[str, str]:
    """The comment ending each key's line in the dict literal ``name`` of the Python file ``source``.

    The house style documents an option where it is defined (``"fp16": False,  # store float16``); this
    reads those comments back, so the ``--help`` text and the code cannot disagree. A key without a
    comment maps to ``""``.
    """
    text = Path(source).read_text(encoding="utf-8")
    comments = {
        tok.start[0]: tok.string.lstrip("#").strip()
        for tok in tokenize.generate_tokens(io.StringIO(text).readline)
        if tok.type == tokenize.COMMENT
    }
    for node in ast.walk(ast.parse(text)):
        target = getattr(node, "target", None) or (getattr(node, "targets", None) or [None])[0]
        value = getattr(node, "value", None)
        if isinstance(target, ast.Name) and target.id == name and isinstance(value, ast.Dict):
            return {
                key.value: comments.get(item.end_lineno, "")
                for key, item in zip(value.keys, value.values, strict=True)
                if isinstance(key, ast.Constant)
            }
    return {}


def command_help(module: str, defaults: Mapping[str, Any], name: str = "OPTIONS") -> str:
    """``--help`` of the command ``module``: its docstring, then every ``key=default`` with its comment."""
    mod = sys.modules[module]
    docs = option_docs(mod.__file__, name) if mod.__file__ else {}
    cells = [(f"  {key}={_show(value)}", docs.get(key, "")) for key, value in defaults.items()]
    width = max(len(left) for left, _ in cells)
    rows = [f"{left:<{width}}  # {doc}" if doc else left for left, doc in cells]
    return "\n".join(
        [
            (mod.__doc__ or module).strip(),
            "",
            "Options (key=value; the default is shown):",
            *rows,
            "",
            f"{DEBUG_FLAG}: show the traceback of an error (also M3LIT_DEBUG=1)",
        ]
    )


def _show(value: Any) -> str:
    """A default as it is typed on the command line (``null``, ``true``/``false``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)
