"""Errors a user can act on, and how every command reports them: one ``error:`` line and an exit status.

Every m3lit command (``python -m m3lit.train|evaluate|export|encode``, hard-negative mining, the corpus and
model builders: the ``[project.scripts]`` of pyproject.toml) runs through :func:`run_command`. A
mistake of the user's (a bad option or config key, a missing or malformed input file, a model reference
that cannot be loaded, a corrupt checkpoint, a missing wheel) ends the command with ONE line on stderr::

    error: train.jsonl:line 3: field 'pos[1]': must be a string, got int

and a non-zero exit status: 2 for a usage or configuration error (:class:`UsageError`, which
``ConfigError`` is), 1 for the others (bad data, model, checkpoint or wheel). The traceback is shown only
on request: ``--debug`` anywhere on the command line, or ``M3LIT_DEBUG=1`` / ``HYDRA_FULL_ERROR=1`` in the
environment (``M3LIT_DEBUG``, when set, decides). Any other exception is a bug, in m3lit or a library,
and keeps its traceback.

A user error is a :class:`UserError` (m3lit's error types for bad input derive from it: ``DataError``,
``ConfigError``, ``ModelReferenceError``, ``CheckpointError``, ``WheelError``, ...), one of the operating
system's errors about a path (:data:`PATH_ERRORS`), or one of the extra types a command names (Hydra's and
OmegaConf's errors for ``m3lit.train``).

>>> import contextlib, io
>>> def bad_command(argv):
...     raise UsageError(f"unknown option {argv[0]!r}")
>>> stderr = io.StringIO()
>>> with contextlib.redirect_stderr(stderr):
...     try:
...         run_command(bad_command, ["colour=red"])
...     except SystemExit as stop:
...         print("exit status", stop.code)
exit status 2
>>> stderr.getvalue()
"error: unknown option 'colour=red'\\n"
"""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

__all__ = [
    "DEBUG_FLAG",
    "PATH_ERRORS",
    "PathError",
    "UsageError",
    "UserError",
    "debug_requested",
    "did_you_mean",
    "one_line",
    "run_command",
]


class UserError(Exception):
    """An error the user can fix (bad input, not a bug); its message says what is wrong and where.

    ``exit_code`` is the command's exit status when it stops on this error.
    """

    exit_code = 1


class UsageError(UserError, ValueError):
    """A bad command-line option or configuration value (exit status 2)."""

    exit_code = 2


class PathError(UserError, FileNotFoundError):
    """A path an option names is missing or is not what the option needs (a file, a folder, a model).

    >>> str(PathError("evaluate.dataset_dir", "data/nfcorpus", "no such folder"))
    'evaluate.dataset_dir=data/nfcorpus: no such folder'
    """

    def __init__(self, key: str, path: object, problem: str) -> None:
        self.key, self.path, self.problem = key, path, problem
        super().__init__(f"{key}={path}: {problem}")

    def __reduce__(self):  # pickles (multiprocessing) with its three arguments
        return (type(self), (self.key, self.path, self.problem))


#: Operating-system errors about a path the user gave (their message names the path): user errors.
PATH_ERRORS = (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError)
#: The command-line flag that shows the traceback of a user error.
DEBUG_FLAG = "--debug"
_TRUE = ("1", "true", "yes", "on")


def debug_requested(argv: Sequence[str]) -> bool:
    """``--debug`` in ``argv``, or ``M3LIT_DEBUG`` (when set, else ``HYDRA_FULL_ERROR``) true."""
    if DEBUG_FLAG in argv:
        return True
    value = os.environ.get("M3LIT_DEBUG")
    if value is None:
        value = os.environ.get("HYDRA_FULL_ERROR", "")
    return value.strip().lower() in _TRUE


def did_you_mean(key: str, valid: Iterable[object]) -> str:
    """`` (did you mean 'x'?)`` naming the closest valid keys (difflib), or ``""`` when none is close.

    >>> did_you_mean("small_treshold", ["small_threshold", "drop_threshold", "seed"])
    " (did you mean 'small_threshold' or 'drop_threshold'?)"
    """
    close = difflib.get_close_matches(str(key), [str(v) for v in valid], n=3, cutoff=0.6)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


def one_line(error: BaseException) -> str:
    """``error``'s message on one line; a cause whose first line the message lacks is added in brackets.

    >>> try:
    ...     try:
    ...         {}["max_stepz"]
    ...     except KeyError as key:
    ...         raise UsageError("Could not override 'trainer.max_stepz'.\\nTo append use +trainer.max_stepz=3") from key
    ... except UsageError as error:
    ...     one_line(error)
    "Could not override 'trainer.max_stepz'. To append use +trainer.max_stepz=3 ('max_stepz')"
    """
    text = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    text = text or type(error).__name__
    cause = error.__cause__
    lines = [line.strip() for line in str(cause).splitlines() if line.strip()] if cause is not None else []
    if lines and lines[0] not in text:
        text += f" ({lines[0]})"
    return text


def _user_error(
    error: BaseException, extra: tuple[type[BaseException], ...], unwrap: tuple[type[BaseException], ...]
) -> BaseException | None:
    """The user error behind ``error`` (itself, or the cause of an ``unwrap`` wrapper), None for a bug."""
    while unwrap and isinstance(error, unwrap) and error.__cause__ is not None:
        error = error.__cause__
    return error if isinstance(error, (UserError, *PATH_ERRORS, *extra)) else None


def run_command(
    main: Callable[[list[str]], Any],
    argv: Sequence[str] | None = None,
    *,
    help: Callable[[], str] | None = None,
    user_errors: tuple[type[BaseException], ...] = (),
    unwrap: tuple[type[BaseException], ...] = (),
) -> Any:
    """Run ``main(args)`` as a command; return its result (see the module docstring).

    Args:
        main: the command's work, given the arguments without ``--debug``.
        argv: the command line (None: ``sys.argv[1:]``).
        help: the ``--help`` text (printed, then 0 is returned); None leaves ``--help`` to ``main``.
        user_errors: further exception types that are user errors (exit status 2: configuration).
        unwrap: wrapper types (Hydra's ``InstantiationException``) judged by their ``__cause__``.

    Raises:
        SystemExit: after printing ``error: ...`` for a user error (unless debugging was requested).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(args)
    args = [a for a in args if a != DEBUG_FLAG]
    if help is not None and any(a in ("-h", "--help") for a in args):
        print(help())
        return 0
    try:
        return main(args)
    except Exception as error:
        found = None if debug else _user_error(error, user_errors, unwrap)
        if found is None:
            raise
        print(f"error: {one_line(found)}", file=sys.stderr, flush=True)
        raise SystemExit(getattr(found, "exit_code", 2 if isinstance(found, user_errors) else 1)) from None
