"""mkdocs hook: the config reference page, rendered from the comments in ``configs/**/*.yaml``.

Every config key is documented where it is defined (``key: value # doc``), so the page is generated from the
YAML files themselves at build time: offline, deterministic, and never out of date. A file becomes a table
of (key, default, doc) rows; the key is the full dotted path a command-line override uses (``data.seed``,
``trainer.strategy.find_unused_parameters``), prefixed with the group unless the file is ``@package _global_``.
Comment lines right after a key continue its doc; a comment after a blank line (``# ---- sources``) starts a
section. The file's leading comments are its introduction; the commands among them go in a code block.

    mkdocs build --strict       # replaces the marker below in docs/config-reference.md
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

MARKER = "<!-- config-reference -->"
PAGE = "config-reference.md"
_KEY = re.compile(r"""(?P<key>"[^"]*"|'[^']*'|[^\s:'"{\[#][^:]*?):(?:\s+(?P<value>.*))?$""")


@dataclass
class Row:
    """One line of a config file: a key (dotted path) with its value and doc, or a section title (key None)."""

    key: str | None
    value: str = ""
    doc: list[str] = field(default_factory=list)


@dataclass
class ConfigFile:
    """A parsed YAML file: its introduction (leading comments) and its rows in file order."""

    intro: list[str]
    rows: list[Row]
    is_global: bool


def split_comment(line: str) -> tuple[str, str]:
    """``"a: 'x # y' # doc"`` -> ``("a: 'x # y'", "doc")``: the first `` #`` outside quotes starts the comment."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip(), line[i + 1 :].strip()
    return line.rstrip(), ""


def parse(text: str) -> ConfigFile:
    """Rows of a YAML config file, keyed by their dotted path inside the file (``[]`` marks a list item)."""
    intro: list[str] = []
    rows: list[Row] = []
    stack: list[tuple[int, str]] = []  # (indent, name) of the open mappings and list items
    after_blank = False
    is_global = False
    for line in text.splitlines():
        code, comment = split_comment(line)
        if not code.strip():
            if not comment:
                after_blank = True
            elif comment.startswith("@package"):
                is_global = comment.split()[-1] == "_global_"
            elif not rows:
                intro.append(line.strip()[1:].removeprefix(" "))
            elif after_blank:
                rows.append(Row(None, doc=[comment.strip("- ")]))
            else:
                rows[-1].doc.append(line.strip()[1:].removeprefix(" "))
            continue
        after_blank = False
        indent = len(code) - len(code.lstrip())
        body = code.strip()
        item = body.startswith("- ")
        if item:
            body = body[2:].strip()
        while stack and stack[-1][0] >= indent:
            stack.pop()
        parents = [name for _, name in stack]
        match = _KEY.match(body)
        if item and (parents == ["defaults"] or not match):
            rows.append(Row(".".join(parents), body, [comment] if comment else []))
            continue
        if match is None:
            raise ValueError(f"cannot read this line as `key: value`: {line!r}")
        if item:
            stack.append((indent, "[]"))
            parents.append("[]")
            indent += 2
        key, value = match["key"].strip("'\""), (match["value"] or "").strip()
        rows.append(Row(".".join([*parents, key]).replace(".[]", "[]"), value, [comment] if comment else []))
        if not value:
            stack.append((indent, key))
    return ConfigFile(intro, rows, is_global)


def _cell(text: str) -> str:
    """Comment text for a table cell: pipes escaped, and ``<run dir>`` kept as text outside `code spans`."""
    parts = re.split(r"(`[^`]*`)", text.replace("|", "\\|"))
    return "".join(p if i % 2 else p.replace("<", "&lt;") for i, p in enumerate(parts))


def _code(text: str) -> str:
    """A table cell holding ``text`` as inline code (a text with backticks is fenced by a longer run)."""
    if not text:
        return ""
    fence = "``" if "`" in text else "`"
    pad = " " if "`" in text else ""
    return f"{fence}{pad}{text}{pad}{fence}"  # Python-Markdown's tables keep a pipe inside backticks


def _doc(lines: list[str]) -> str:
    parts = [_code(" ".join(line.split())) if line[:1].isspace() else _cell(line) for line in lines]
    return "<br>".join(parts)


def render_file(path: Path, root: Path) -> str:
    """Markdown for one config file: a heading, its introduction, and a (key, default, doc) table."""
    parsed = parse(path.read_text(encoding="utf-8"))
    rel = path.relative_to(root)
    group = ".".join(rel.parent.parts)
    prefix = "" if parsed.is_global or not group else group + "."
    out = [f"### `{rel.as_posix()}`", ""]
    prose = [line for line in parsed.intro if not (line[:1].isspace() or line.startswith("python "))]
    commands = [line.strip() for line in parsed.intro if line not in prose]
    if prose:
        out += [" ".join(prose), ""]
    if parsed.is_global:
        out += ["A global delta (`@package _global_`): its keys are full paths from the root config.", ""]
    if commands:
        out += ["```bash", *commands, "```", ""]
    out += ["| key | default | what it does |", "|---|---|---|"]
    for row in parsed.rows:
        if row.key is None:
            out.append(f"| **{_cell(row.doc[0])}** | | |")
        else:
            key = row.key if row.key == "defaults" else prefix + row.key
            out.append(f"| `{key}` | {_code(row.value)} | {_doc(row.doc)} |")
    return "\n".join(out) + "\n"


def render_all(configs: Path) -> str:
    """Every config file: the root configs first, then each group folder's options in name order."""
    roots = sorted(configs.glob("*.yaml"))
    groups = sorted({p.parent for p in configs.rglob("*.yaml")} - {configs})
    out = ["## Root configs", ""] + [render_file(p, configs) for p in roots]
    for folder in groups:
        out += [f"## `{folder.relative_to(configs).as_posix()}` group", ""]
        out += [render_file(p, configs) for p in sorted(folder.glob("*.yaml"))]
    return "\n".join(out)


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ARG001 (mkdocs hook signature)
    """Replace the marker on the config reference page with the rendered tables."""
    if page.file.src_uri != PAGE:
        return markdown
    if MARKER not in markdown:
        raise ValueError(f"{PAGE}: no {MARKER} line to replace")
    configs = Path(config["config_file_path"]).parent / "configs"
    return markdown.replace(MARKER, render_all(configs))
