"""Offline fixtures: a tokenizer m3lit builds itself and tiny random XLM-R models. Nothing downloads."""

from __future__ import annotations

import builtins
import os

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
