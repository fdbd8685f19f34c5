"""Offline fixtures (a tokenizer m3lit builds itself, tiny random XLM-R models) and the suite's two rules:

- **Slow by folder.** Every test under ``tests/integration/`` is marked ``slow`` here (``make test-fast`` runs
  ``-m "not slow"``); a ``slow`` mark written by hand is an error. A unit test that takes more than ~5 s or
  runs a training command or other subprocess belongs in ``tests/integration/``.
- **Isolated workers.** ``make test`` runs on every core (pytest-xdist). Each worker (and a plain run) gets
  its own cache, run-log and W&B folders under its pytest tmp dir (:func:`isolated_folders`), so no two
  workers share a build or an output folder. Only the pinned-wheel folder is shared (see there).

Test modules are imported by file name (pytest's ``prepend`` import mode), so names are unique across
folders, and every test folder is on ``sys.path``: a module may import another's helpers (``from test_resume
import CrashAt``) whichever folder pytest was pointed at.
"""

from __future__ import annotations

import builtins
import os
import sys
from pathlib import Path

# Idle OpenMP threads sleep instead of spinning: on a shared, loaded CPU, spinning makes every small op
# wait for a descheduled sibling thread (10-100x slower steps). Must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(min(2, torch.get_num_threads()))

TESTS = Path(__file__).resolve().parent
INTEGRATION = TESTS / "integration"
# the folders pytest itself puts on sys.path when it imports their test modules, all of them up front
sys.path[1:1] = sorted({str(module.parent) for module in TESTS.rglob("test_*.py")})


@pytest.hookimpl(tryfirst=True)  # before pytest's own hook deselects by -m
def pytest_collection_modifyitems(config, items):
    """Mark every test under tests/integration/ ``slow``; stop on a hand-written ``slow`` mark elsewhere."""
    for item in items:
        if INTEGRATION in item.path.parents:
            item.add_marker(pytest.mark.slow)
        elif item.get_closest_marker("slow") is not None:
            raise pytest.UsageError(
                f"{item.nodeid}: `slow` is applied by folder; move the test to tests/integration/ instead"
            )


@pytest.fixture(scope="session", autouse=True)
def isolated_folders(tmp_path_factory):
    """Point ``$M3LIT_CACHE``, ``$M3LIT_ROOT`` (run logs) and ``$WANDB_DIR`` at this worker's tmp dir.

    Subprocesses inherit them; m3lit reads them when it builds or writes, never at import, so setting them
    here (before the first test, after collection) is early enough. Builds (the demo corpus, the E5 folder,
    the Bible benchmark) are made once per worker. Pinned wheels stay shared (``$M3LIT_WHEELS``, default
    ``<your cache>/wheels``): each is a file named by its exact version and checked against its sha256 on
    every use, and a download is renamed into place only when complete, so workers cannot see a partial or
    different file, and the suite does not fetch 100+ MB per worker and per run.
    """
    from m3lit.files.cache import cache_root

    root = tmp_path_factory.getbasetemp() / "m3lit"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("M3LIT_WHEELS", os.environ.get("M3LIT_WHEELS") or str(cache_root() / "wheels"))
        patch.setenv("M3LIT_CACHE", str(root / "cache"))
        patch.setenv("M3LIT_ROOT", str(root / "run"))
        patch.setenv("WANDB_DIR", str(root / "wandb"))
        yield root


def builtin_docstrings() -> list[str]:
    """A small deterministic corpus: the docstrings of Python's builtins."""
    return [
        obj.__doc__
        for _, obj in sorted(vars(builtins).items())
        if isinstance(getattr(obj, "__doc__", None), str)
    ]


@pytest.fixture(scope="session")
def tokenizer():
    from m3lit.model.tiny_tokenizer import build_tokenizer

    return build_tokenizer(builtin_docstrings() * 2, vocab_size=600)


@pytest.fixture(scope="session")
def tiny_config(tokenizer):
    from m3lit.model.tiny import tiny_xlmr_config

    return tiny_xlmr_config(
        len(tokenizer), hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, max_length=128
    )


@pytest.fixture
def tiny_model(tiny_config, tokenizer):
    from m3lit.model import M3Model

    torch.manual_seed(0)
    return M3Model.from_config(tiny_config, tokenizer, colbert_dim=16)


@pytest.fixture
def texts():
    return builtin_docstrings()[:12]


@pytest.fixture(scope="session")
def tiny_beir_dir(tmp_path_factory):
    """A 40-document BEIR folder (split "test"): 10 queries with graded qrels + 1 with no relevant document."""
    from m3lit.retrieval.beir import write_beir

    docs = [text[:400] for text in builtin_docstrings()[:40]]
    corpus = {f"d{i}": (f"title {i}" if i % 3 == 0 else "", text) for i, text in enumerate(docs)}
    queries = {f"q{j}": " ".join(docs[4 * j].split()[:8]) for j in range(10)}
    qrels = {f"q{j}": {f"d{4 * j}": 1, **({f"d{4 * j + 1}": 2} if j % 2 == 0 else {})} for j in range(10)}
    queries["q_none"] = "no relevant document for this query"
    qrels["q_none"] = {"d3": 0}
    return write_beir(tmp_path_factory.mktemp("beir") / "tiny", corpus, queries, qrels)


@pytest.fixture
def command_error(capsys):
    """``run(main, argv)``: call a command's ``main`` that must stop on a user error (m3lit.files.errors);
    return its exit status and the last line it wrote to stderr."""

    def run(main, argv) -> tuple[int, str]:
        capsys.readouterr()
        with pytest.raises(SystemExit) as stop:
            main(argv)
        lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        return stop.value.code, lines[-1] if lines else ""

    return run


@pytest.fixture(scope="module")
def export_dir(tiny_config, tokenizer, tmp_path_factory):
    """A tiny random M3Model saved as an export folder, once per test module."""
    from m3lit.model import M3Model

    torch.manual_seed(0)
    model = M3Model.from_config(tiny_config, tokenizer, colbert_dim=16)
    return model.save_pretrained(tmp_path_factory.mktemp("model") / "export")
