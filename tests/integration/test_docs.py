"""The documentation: the mkdocs site builds with --strict (offline), README's links resolve, and the config
reference renders every key of the YAML files (checked against PyYAML's own reading of them)."""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
NAV_PAGES = ["index", "getting-started", "concepts", "architecture", "data", "training", "evaluation"]
NAV_PAGES += ["inference", "long-documents", "performance", "results", "config-reference", "api"]
_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)|<img [^>]*src=\"([^\"]+)\"")


@functools.cache
def _hook():
    """docs/hooks/config_reference.py, the mkdocs hook (not a package module), loaded from its file."""
    path = REPO / "docs" / "hooks" / "config_reference.py"
    spec = importlib.util.spec_from_file_location("m3lit_docs_config_reference", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


def github_slug(heading: str) -> str:
    """The anchor GitHub (and mkdocs' toc) gives a heading: lower case, punctuation dropped, spaces -> '-'."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def broken_links(markdown_file: Path) -> list[str]:
    """Relative links (and images) of a Markdown file whose file, or whose #anchor in a Markdown file, is missing."""
    text = markdown_file.read_text(encoding="utf-8")
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # code blocks hold no links
    problems = []
    for groups in _LINK.findall(text):
        target = next(g for g in groups if g)
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        path = (markdown_file.parent / path_part).resolve() if path_part else markdown_file
        if not path.exists():
            problems.append(f"{markdown_file.name}: {target}: no such file")
        elif anchor and path.suffix == ".md":
            headings = re.findall(
                r"(?m)^#{1,6} (.+)$", re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
            )
            if anchor not in {github_slug(h) for h in headings}:
                problems.append(f"{markdown_file.name}: {target}: no heading with anchor #{anchor}")
    return problems


def test_the_site_builds_strictly_offline(tmp_path):
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log
    assert "WARNING" not in log, log
    for page in NAV_PAGES:
        html = site / ("index.html" if page == "index" else f"{page}/index.html")
        assert html.is_file(), f"{page}.md was not built"
    api = (site / "api" / "index.html").read_text(encoding="utf-8")
    for name in ("M3Model", "M3Embedder", "m3_loss", "dense_scores", "M3DataModule"):
        assert 'id="m3lit.' in api and name in api, f"API reference lacks {name}"
    reference = (site / "config-reference" / "index.html").read_text(encoding="utf-8")
    assert "<!-- config-reference -->" not in reference
    assert "<code>data.train_group_size</code>" in reference and "<code>trainer.max_steps</code>" in reference


def test_readme_links_resolve():
    assert broken_links(REPO / "README.md") == []
    assert len((REPO / "README.md").read_text(encoding="utf-8").splitlines()) < 200, (
        "README is a landing page"
    )


def test_link_check_reports_a_missing_file_and_anchor(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "page.md").write_text("# Page\n\n## A heading: with `code`\n")
    readme = tmp_path / "README.md"
    readme.write_text(
        "[ok](docs/page.md#a-heading-with-code) [web](https://x.org/a.md) [self](#top)\n# Top\n"
        "[gone](docs/missing.md) [bad anchor](docs/page.md#nope) ![img](docs/fig.png)\n"
        "```\n[in code](nowhere.md)\n```\n"
    )
    assert broken_links(readme) == [
        "README.md: docs/missing.md: no such file",
        "README.md: docs/page.md#nope: no heading with anchor #nope",
        "README.md: docs/fig.png: no such file",
    ]


def _flatten(node: dict, prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a": {"b": 1}, "a.b": 1}``: every key of a loaded mapping by its dotted path."""
    out = {}
    for key, value in node.items():
        out[f"{prefix}{key}"] = value
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
    return out


CONFIGS = sorted(p.relative_to(REPO / "configs").as_posix() for p in (REPO / "configs").rglob("*.yaml"))


@pytest.mark.parametrize("name", CONFIGS)
def test_config_reference_renders_every_key_and_value_of(name):
    text = (REPO / "configs" / name).read_text(encoding="utf-8")
    loaded = yaml.safe_load(text) or {}
    loaded.pop("defaults", None)  # Hydra's defaults list: rendered as its items, not as keys
    rows = {row.key: row for row in _hook().parse(text).rows if row.key and row.key != "defaults"}
    rows = {key: row for key, row in rows.items() if "[]" not in key}  # inside lists: shown as written
    flow = [key for key, row in rows.items() if row.value.startswith("{")]  # {a: 1}: one row, as written
    expected = {
        key: v for key, v in _flatten(loaded).items() if not any(key.startswith(f + ".") for f in flow)
    }
    assert set(rows) == set(expected)
    for key, row in rows.items():
        if row.value:
            assert yaml.safe_load(f"v: {row.value}")["v"] == expected[key], key
        else:
            assert isinstance(expected[key], (dict, list)) or expected[key] is None, key
    if name == "data/default.yaml":  # a comment-documented key keeps its doc, a section its title
        assert rows["train_group_size"].doc == [
            "G of the labelled source: 1 positive + 7 hard negatives (paper App. B.1)"
        ]
        assert any(row.key is None and row.doc[0].startswith("sources") for row in _hook().parse(text).rows)


def test_split_comment_ignores_hashes_in_quotes():
    hook = _hook()
    assert hook.split_comment("a: 'x # y' # doc") == ("a: 'x # y'", "doc")
    assert hook.split_comment('fmt: "{}{}"   # format(a, b)') == ('fmt: "{}{}"', "format(a, b)")
    assert hook.split_comment("url: a#b") == ("url: a#b", "")
