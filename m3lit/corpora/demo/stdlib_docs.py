"""Collect ``(qualified name, signature, docstring)`` of the public callables of Python's standard library.

The raw material of the offline demo corpus (:mod:`m3lit.corpora.demo.build`). The walk is deterministic: the
top-level names of ``sys.stdlib_module_names`` in sorted order, each package's submodules in sorted
order, members in sorted order; only objects defined in the module being walked (``__module__``
check), public names only. Modules with side effects on import or that are deprecated/removed in
newer Pythons are never imported (:data:`SKIP`). The walk runs in a child process with
``PYTHONHASHSEED=0`` so that imports cannot disturb the caller and reprs of default values are stable;
memory addresses in signatures are scrubbed.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import io
import json
import os
import pkgutil
import re
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Sequence

__all__ = ["SKIP", "collect", "collect_in_subprocess"]

#: Never imported: side effects (browser, printing, GUI, terminal, files), Windows-only, tests, codecs
#: (hundreds of identical docstrings), or deprecated by PEP 594 / removed in 3.12-3.13.
SKIP = frozenset(
    [
        "antigravity",
        "this",
        "idlelib",
        "tkinter",
        "turtle",
        "turtledemo",
        "ensurepip",
        "venv",
        "lib2to3",
        "pydoc_data",
        "test",
        "readline",
        "rlcompleter",
        "encodings",
        "msilib",
        "winreg",
        "winsound",
        "nt",
        "msvcrt",
        "xxsubtype",
        "xxlimited",
        "distutils",
        "imp",
        "asynchat",
        "asyncore",
        "smtpd",
        "crypt",
        "nis",
        "spwd",
        "ossaudiodev",
        "sndhdr",
        "telnetlib",
        "uu",
        "xdrlib",
        "nntplib",
        "pipes",
        "audioop",
        "cgi",
        "cgitb",
        "chunk",
        "imghdr",
        "mailcap",
        "sunau",
        "aifc",
    ]
)
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def _quiet_import(name: str):
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
    ):
        warnings.simplefilter("ignore")
        return importlib.import_module(name)


def _modules(top_level: Sequence[str] | None):
    names = sorted(top_level) if top_level else sorted(sys.stdlib_module_names)
    for name in names:
        if name.startswith("_") or name in SKIP:
            continue
        try:
            module = _quiet_import(name)
        except BaseException:  # noqa: BLE001 - optional or platform-specific module: skip it
            continue
        yield module
        if not hasattr(module, "__path__"):
            continue
        subs = sorted(
            info.name for info in pkgutil.walk_packages(module.__path__, name + ".", onerror=lambda _: None)
        )
        for sub in subs:
            parts = sub.split(".")[1:]
            if any(p.startswith("_") or p in SKIP or p in ("tests", "test") for p in parts):
                continue
            try:
                yield _quiet_import(sub)
            except BaseException:  # noqa: BLE001
                continue


def _signature(obj) -> str:
    try:
        text = str(inspect.signature(obj))
    except (TypeError, ValueError):
        return "(...)"
    text = _ADDRESS.sub("", text)
    return text if len(text) <= 200 else text[:197] + "...)"


def collect(top_level: Sequence[str] | None = None) -> list[dict]:
    """Walk the standard library (or only ``top_level`` modules) in this process.

    Returns:
        ``[{"name": "textwrap.wrap", "signature": "(text, width=70, **kwargs)", "doc": "..."}, ...]`` in
        walk order, one entry per public function, class and public method with a docstring.
    """
    out: list[dict] = []
    seen: set[str] = set()
    for module in _modules(top_level):
        for attr, value in sorted(vars(module).items()):
            if attr.startswith("_") or getattr(value, "__module__", None) != module.__name__:
                continue
            if inspect.isclass(value):
                members = [(attr, value)]
                members += [
                    (f"{attr}.{k}", v) for k, v in sorted(vars(value).items()) if not k.startswith("_")
                ]
            elif callable(value):
                members = [(attr, value)]
            else:
                continue
            for qualname, obj in members:
                obj = getattr(obj, "__func__", obj)  # staticmethod / classmethod
                if not callable(obj):
                    continue
                doc = inspect.getdoc(obj)
                name = f"{module.__name__}.{qualname}"
                if not doc or name in seen:
                    continue
                seen.add(name)
                out.append({"name": name, "signature": _signature(obj), "doc": _ADDRESS.sub("", doc)})
    return out


def collect_in_subprocess(top_level: Sequence[str] | None = None, timeout: float = 120) -> list[dict]:
    """:func:`collect` in a fresh interpreter with ``PYTHONHASHSEED=0`` (isolated and reproducible)."""
    with tempfile.TemporaryDirectory() as tmp:
        out_file = os.path.join(tmp, "docs.json")
        env = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1"}
        args = [sys.executable, "-m", "m3lit.corpora.demo.stdlib_docs", out_file, *(top_level or [])]
        proc = subprocess.run(
            args, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
        if proc.returncode != 0 or not os.path.exists(out_file):
            raise RuntimeError(
                f"collecting standard-library docstrings failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}"
            )
        with open(out_file, encoding="utf-8") as handle:
            return json.load(handle)


if __name__ == "__main__":
    items = collect(sys.argv[2:] or None)
    with open(sys.argv[1], "w", encoding="utf-8") as handle:
        json.dump(items, handle)
