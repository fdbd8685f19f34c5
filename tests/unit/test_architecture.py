"""The package layout is enforced, not only described: docs/architecture.md in code.

Every module's imports are read with :mod:`ast` (module level, inside functions, under ``TYPE_CHECKING``)
and checked against :data:`LAYERS`: a module may import its own subpackage, any lower layer, and the
peers of its own layer that :data:`LAYERS` marks as such (the entry points only); never a higher layer.
:data:`NO_THIRD_PARTY` keeps Lightning, Hydra and W&B out of the layers that must run without them.
:data:`CORE` (the training core) imports none of :data:`NOT_IN_CORE`: corpora, pinned-wheel sources,
benchmarks and retrieval's reporting, so a fork may delete them (tests/integration/test_core_alone.py runs
it). The import graph has no cycles, function-local imports and imports under ``TYPE_CHECKING`` included
(neither is a licence for a cycle). The public API and the command-line entry points resolve.
"""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: The layers, lowest first: (components, may the components of this layer import each other).
#: A component is a subpackage of m3lit or a root module. Mirrors the table in docs/architecture.md.
LAYERS: list[tuple[tuple[str, ...], bool]] = [
    (("scores", "files"), False),  # pure score functions; JSON lines, the cache, errors, options
    (("losses", "sources", "data"), False),  # losses on score matrices; pinned wheels; the batch pipeline
    (("model",), False),  # M3Model, its heads, files on disk, .ckpt loading, ONNX export
    (("inference",), False),  # M3Embedder, the encode loop, MCLS, ONNX Runtime
    (("retrieval",), False),  # indexes, fusion, metrics, BEIR loading, the evaluation pipeline, reports
    (("training",), False),  # the Lightning system: M3LitModule, sub-batching, stages, optimiser
    (("callbacks",), False),  # stage switch, checkpoints, progress bar, retrieval metrics
    (("corpora",), False),  # corpora a run may plug in (a preparation hook each), hard-negative mining
    (("config",), False),  # compose + check the Hydra config, key=value options, resume
    (
        ("__init__", "train", "evaluate", "export", "export_card", "encode", "compare", "mteb", "vectordb"),
        True,
    ),  # public API and entry points
]

#: The training core: runs with none of :data:`NOT_IN_CORE` present.
CORE = ("scores", "losses", "model", "data", "training", "callbacks")
#: What the core never imports (module prefixes; ``benchmarks`` is the repository's folder beside m3lit).
NOT_IN_CORE = ("m3lit.corpora", "m3lit.sources", "m3lit.retrieval.report", "benchmarks")

#: Third-party packages a component must not import (top-level names).
FRAMEWORKS = frozenset({"lightning", "pytorch_lightning", "hydra", "omegaconf", "wandb"})
NO_THIRD_PARTY: dict[str, frozenset[str]] = {
    **dict.fromkeys(("scores", "losses", "sources", "model", "inference", "retrieval"), FRAMEWORKS),
    "files": FRAMEWORKS | {"torch", "transformers", "numpy"},
    "data": frozenset({"hydra", "wandb"}),
    "corpora": frozenset({"hydra", "wandb"}),
    "training": frozenset({"hydra"}),
    "callbacks": frozenset({"hydra"}),
}

#: `python -m m3lit.<name>` commands users run (README, Makefile).
ENTRY_MODULES = (
    "m3lit.train", "m3lit.evaluate", "m3lit.export", "m3lit.encode", "m3lit.compare", "m3lit.mteb.__main__"
)  # fmt: skip

LAYER_OF = {component: i for i, (components, _) in enumerate(LAYERS) for component in components}
PEERS_ALLOWED = {component for components, peers in LAYERS if peers for component in components}


def module_files(package_dir: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under ``package_dir`` (packages by their __init__)."""
    out = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = path.relative_to(package_dir.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


@functools.cache
def imports_of(name: str, path: Path) -> list[tuple[int, str]]:
    """(line, imported name) for every import in the file: nested ones and those under ``TYPE_CHECKING`` too.

    ``from a import b`` yields ``a.b`` (``b`` may be a module or a name: :func:`resolve` finds the module);
    relative imports are made absolute.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def component(module: str) -> str:
    """``m3lit.model.m3`` -> ``model``; ``m3lit.train`` -> ``train``; ``m3lit`` -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def resolve(target: str, modules: dict[str, Path]) -> str | None:
    """The longest known module that ``target`` names (``m3lit.model.M3Model`` -> ``m3lit.model``)."""
    while target and target not in modules:
        target = target.rpartition(".")[0]
    return target or None


def layer_violations(package_dir: Path) -> list[str]:
    """Every import that breaks :data:`LAYERS` or :data:`NO_THIRD_PARTY`, as ``file:line: message``."""
    package = package_dir.name
    modules = module_files(package_dir)
    problems = []
    for name, path in modules.items():
        own = component(name)
        where = f"{path.relative_to(package_dir.parent)}"
        if own not in LAYER_OF:
            problems.append(f"{where}: {name} is in no layer of tests/test_architecture.py LAYERS")
            continue
        for line, target in imports_of(name, path):
            top = target.split(".")[0]
            if top in NO_THIRD_PARTY.get(own, ()):
                problems.append(f"{where}:{line}: {name} imports {target} ({top} is not allowed in {own})")
            if own in CORE and any(target == m or target.startswith(m + ".") for m in NOT_IN_CORE):
                problems.append(
                    f"{where}:{line}: {name} (training core) imports {target}; the core runs without "
                    f"{', '.join(NOT_IN_CORE)} (see docs/architecture.md)"
                )
            if top != package:
                continue
            resolved = resolve(target, modules)
            theirs = component(resolved or package)
            if theirs == own or theirs not in LAYER_OF:
                continue
            lower = LAYER_OF[theirs] < LAYER_OF[own]
            peer = LAYER_OF[theirs] == LAYER_OF[own] and own in PEERS_ALLOWED
            if not (lower or peer):
                problems.append(
                    f"{where}:{line}: {name} ({own}, layer {LAYER_OF[own]}) imports {resolved} "
                    f"({theirs}, layer {LAYER_OF[theirs]}); see docs/architecture.md"
                )
    return sorted(set(problems))


def import_cycles(package_dir: Path) -> list[list[str]]:
    """Cycles of the module import graph (function-local and ``TYPE_CHECKING`` imports included), each as a path."""
    modules = module_files(package_dir)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for _, target in imports_of(name, path):
            resolved = resolve(target, modules) if target.split(".")[0] == package_dir.name else None
            if resolved and resolved != name:
                graph[name].add(resolved)
    cycles, state = [], dict.fromkeys(graph, 0)  # 0 new, 1 on the current path, 2 done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state[nxt] == 1:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif state[nxt] == 0:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for start in sorted(graph):
        if state[start] == 0:
            visit(start, [start])
    return cycles


# ------------------------------------------------------------------------------------------ the real package
def test_no_module_imports_a_higher_layer_or_a_forbidden_framework():
    problems = layer_violations(ROOT / "m3lit")
    assert not problems, "layer rules broken:\n" + "\n".join(problems)


def test_the_import_graph_has_no_cycles():
    cycles = import_cycles(ROOT / "m3lit")
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_every_layer_component_exists_and_the_root_holds_only_the_listed_modules():
    package = ROOT / "m3lit"
    present = {
        p.stem if p.is_file() else p.name for p in package.iterdir() if p.suffix == ".py" or p.is_dir()
    }
    present.discard("__pycache__")
    assert present == set(LAYER_OF)


def test_architecture_page_table_is_the_layers_table():
    """docs/architecture.md's layer table lists the same components per layer as :data:`LAYERS`."""
    page = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| (\d+) \| ([^|]+) \|", page, flags=re.MULTILINE)
    documented = [tuple(re.findall(r"`([\w_]+)`", names)) for _, names in rows]
    assert [int(n) for n, _ in rows] == list(range(len(LAYERS)))
    assert documented == [components for components, _ in LAYERS]


# ------------------------------------------------------------------------------- the checker itself can fail
def write_package(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / "m3lit" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root / "m3lit"


def test_checker_flags_upward_imports_local_ones_included(tmp_path):
    package = write_package(
        tmp_path,
        {
            "__init__.py": "",
            "scores.py": "def f():\n    from m3lit.training.lit_module import M3LitModule\n",
            "model/__init__.py": "",
            "model/m3.py": "import lightning\nfrom m3lit.inference import embedder\n",
            "model/reference.py": "from m3lit.sources import BUILDERS\n",
            "sources/__init__.py": "",
            "inference/__init__.py": "",
            "inference/embedder.py": "from m3lit.model.m3 import M3Model\n",
            "training/__init__.py": "",
            "training/lit_module.py": "from m3lit.callbacks import stage_switch\nfrom m3lit import scores\n",
            "callbacks/__init__.py": "",
            "callbacks/stage_switch.py": "from m3lit.training.lit_module import M3LitModule\n",
            "callbacks/progress.py": "import benchmarks.harness\n",
            "data/__init__.py": "",
            "data/batch.py": "from ..model import m3\nfrom . import collate\n",
            "data/collate.py": "",
            "utils.py": "",
        },
    )
    problems = layer_violations(package)
    core_rule = "the core runs without m3lit.corpora, m3lit.sources, m3lit.retrieval.report, benchmarks"
    assert problems == [
        f"m3lit/callbacks/progress.py:1: m3lit.callbacks.progress (training core) imports benchmarks.harness; "
        f"{core_rule} (see docs/architecture.md)",
        "m3lit/data/batch.py:1: m3lit.data.batch (data, layer 1) imports m3lit.model.m3 (model, layer 2); "
        "see docs/architecture.md",
        "m3lit/model/m3.py:1: m3lit.model.m3 imports lightning (lightning is not allowed in model)",
        "m3lit/model/m3.py:2: m3lit.model.m3 (model, layer 2) imports m3lit.inference.embedder (inference, "
        "layer 3); see docs/architecture.md",
        f"m3lit/model/reference.py:1: m3lit.model.reference (training core) imports m3lit.sources.BUILDERS; "
        f"{core_rule} (see docs/architecture.md)",
        "m3lit/scores.py:2: m3lit.scores (scores, layer 0) imports m3lit.training.lit_module "
        "(training, layer 5); see docs/architecture.md",
        "m3lit/training/lit_module.py:1: m3lit.training.lit_module (training, layer 5) imports "
        "m3lit.callbacks.stage_switch (callbacks, layer 6); see docs/architecture.md",
        "m3lit/utils.py: m3lit.utils is in no layer of tests/test_architecture.py LAYERS",
    ]


def test_checker_finds_cycles_through_function_local_and_type_checking_imports(tmp_path):
    package = write_package(
        tmp_path,
        {
            "__init__.py": "",
            "model/__init__.py": "",
            "model/m3.py": "from m3lit.model.positions import offset\nfrom m3lit.model.heads import DenseHead\n",
            "model/positions.py": "def grow():\n    from m3lit.model.m3 import M3Model\n",
            "model/heads.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from m3lit.model.m3 import M3Model\n",
        },
    )
    assert import_cycles(package) == [
        ["m3lit.model.heads", "m3lit.model.m3", "m3lit.model.heads"],  # closed by a TYPE_CHECKING import
        ["m3lit.model.m3", "m3lit.model.positions", "m3lit.model.m3"],  # closed by a function-local import
    ]


# ----------------------------------------------------------------------------- public API and entry points
def test_public_names_resolve():
    import m3lit

    namespace: dict = {}
    exec("from m3lit import *", namespace)
    for name in m3lit.__all__:
        assert namespace[name] is getattr(m3lit, name)
    assert m3lit.BGEM3FlagModel is m3lit.M3Embedder
    assert m3lit.M3Model.__module__ == "m3lit.model.m3"


def scripts() -> dict[str, str]:
    """``[project.scripts]`` of pyproject.toml (read by hand: tomllib needs Python 3.11, m3lit supports 3.10)."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    section = text.split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    found = dict(re.findall(r'^([\w-]+)\s*=\s*"([\w.]+:\w+)"', section, flags=re.MULTILINE))
    assert found, "no [project.scripts] in pyproject.toml"
    return found


@pytest.mark.parametrize("script", sorted(scripts()))
def test_console_scripts_resolve_to_a_callable(script):
    module, _, function = scripts()[script].partition(":")
    assert callable(getattr(importlib.import_module(module), function))


@pytest.mark.parametrize(
    "module", [*ENTRY_MODULES, *sorted({v.partition(":")[0] for v in scripts().values()})]
)
def test_python_m_entry_points_run_main(module):
    """``python -m <module>`` imports the module and calls its ``main`` under ``__name__ == "__main__"``."""
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin, module
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    guards = [
        node
        for node in tree.body
        if isinstance(node, ast.If) and ast.unparse(node.test) == "__name__ == '__main__'"
    ]
    assert guards and "main(" in ast.unparse(guards[0]), (
        f"{module} has no `if __name__ == '__main__': main()`"
    )
    assert callable(importlib.import_module(module).main)
