"""The benchmark workload: tokenizer, model folders and texts that m3lit and FlagEmbedding both load.

Issue 6's reference workload is a tiny XLM-R encoder (2 layers, hidden 128, 2 heads, FFN 256) with the real
XLM-R vocabulary size (250,002), batch 8, group size 4, query 64 / passage 256 tokens. Nothing can be
downloaded, so:

* the tokenizer is m3lit's offline Unigram tokenizer (:func:`m3lit.model.tiny_tokenizer.build_tokenizer`) trained on
  Python standard-library docstrings; its ids are all valid in the 250,002-row embedding table, which is
  what makes FlagEmbedding's vocabulary-sized sparse scatter as large as with the real tokenizer;
* the model is a randomly initialised encoder saved as one folder in FlagEmbedding's layout
  (:meth:`m3lit.model.M3Model.save_pretrained`), loaded by both trainers and both inference APIs;
* texts are random words from that corpus, built to an exact token count, so truncation at 64/256 tokens
  gives exactly those lengths (and the 50-500-token passages of the encode benchmark are what they say).

Everything is deterministic (seeded) and cached under ``.cache/bench/``.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import random
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks.harness import REPO

__all__ = [
    "ModelSpec",
    "TINY_250K",
    "MID_SIZE",
    "TextMaker",
    "cache_root",
    "get_tokenizer",
    "model_dir",
    "train_jsonl",
    "write_texts",
    "read_texts",
]

#: Stdlib modules whose docstrings make the tokenizer corpus and the word pool (stable for one Python).
_CORPUS_MODULES = (
    "argparse", "asyncio", "collections", "csv", "datetime", "decimal", "email", "fractions", "functools",
    "http.client", "inspect", "io", "itertools", "json", "logging", "os", "pathlib", "pickle", "random",
    "re", "shutil", "socket", "sqlite3", "statistics", "string", "subprocess", "tarfile", "textwrap",
    "threading", "typing", "unittest", "urllib.request", "uuid", "zipfile",
)  # fmt: skip
TOKENIZER_VOCAB = 8000  # pieces learnt by the offline tokenizer (ids 0..7999, all valid in a 250k table)


@dataclass(frozen=True)
class ModelSpec:
    """Size of a randomly initialised XLM-R encoder (see :func:`m3lit.model.tiny.tiny_xlmr_config`).

    ``vocab_size=0`` means "the tokenizer's own size".
    """

    vocab_size: int = 250002  # the real XLM-R vocabulary: drives FlagEmbedding's (B, L, V) sparse scatter
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 2
    intermediate_size: int = 256
    max_length: int = 512  # longest input in tokens (positions = max_length + 2, XLM-R offset)
    colbert_dim: int = -1  # -1: hidden size, as FlagEmbedding's default

    def key(self) -> str:
        return hashlib.sha1(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:10]


#: Issue 6's reference workload model.
TINY_250K = ModelSpec()
#: The MFU benchmark's mid-size model (6 layers, hidden 384); vocabulary of the tokenizer (see mfu.py).
MID_SIZE = ModelSpec(vocab_size=0, hidden_size=384, num_layers=6, num_heads=6, intermediate_size=1536)


def cache_root() -> Path:
    root = REPO / ".cache" / "bench"
    root.mkdir(parents=True, exist_ok=True)
    return root


def _docstrings() -> list[str]:
    texts = []
    for name in _CORPUS_MODULES:
        module = importlib.import_module(name)
        for attr in sorted(vars(module)):
            doc = getattr(getattr(module, attr, None), "__doc__", None)
            if isinstance(doc, str) and len(doc) > 40:
                texts.append(doc)
    return texts


def get_tokenizer():
    """The cached offline tokenizer (built on first use, ~10 s)."""
    from m3lit.model.tiny_tokenizer import load_or_build_tokenizer

    return load_or_build_tokenizer(
        cache_root() / f"tokenizer-{TOKENIZER_VOCAB}", _docstrings(), vocab_size=TOKENIZER_VOCAB
    )


def model_dir(spec: ModelSpec, seed: int = 0, extend_to: int = 0) -> Path:
    """Folder of a random encoder of ``spec`` in FlagEmbedding's layout (built and cached on first use).

    ``extend_to``: after building at ``spec.max_length``, grow its position table to this many tokens with
    :func:`m3lit.model.positions.extend_position_embeddings` (as BGE-M3 grew XLM-R's 514 rows to 8194).
    """
    import torch

    from m3lit.model import M3Model
    from m3lit.model.positions import extend_position_embeddings
    from m3lit.model.tiny import tiny_xlmr_config

    tokenizer = get_tokenizer()
    vocab = spec.vocab_size or len(tokenizer)
    folder = cache_root() / f"model-{spec.key()}-v{vocab}-s{seed}{f'-x{extend_to}' if extend_to else ''}"
    if (folder / "colbert_linear.pt").exists():
        return folder
    config = tiny_xlmr_config(
        vocab,
        hidden_size=spec.hidden_size,
        num_layers=spec.num_layers,
        num_heads=spec.num_heads,
        intermediate_size=spec.intermediate_size,
        max_length=spec.max_length,
    )
    torch.manual_seed(seed)
    model = M3Model.from_config(config, tokenizer, colbert_dim=spec.colbert_dim)
    if extend_to:
        extend_position_embeddings(model, extend_to)
    tmp = folder.with_name(folder.name + ".tmp")
    model.save_pretrained(tmp)
    _loadable_by_transformers4(tmp)
    tmp.rename(folder)
    return folder


def _loadable_by_transformers4(folder: Path) -> None:
    """transformers 5 writes ``tokenizer_class: TokenizersBackend``, a class transformers 4 (FlagEmbedding's
    environment) does not know; ``PreTrainedTokenizerFast`` loads the same tokenizer.json in both."""
    path = folder / "tokenizer_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    if config.get("tokenizer_class") == "TokenizersBackend":
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
        path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


class TextMaker:
    """Random texts of an exact token count (special tokens not counted) from the docstring word pool.

    The tokenizer pre-tokenises on whitespace (Metaspace), so a text's token count is the sum of its words'
    counts; each word's count is computed once.
    """

    def __init__(self, tokenizer, seed: int = 0) -> None:
        words = sorted({w for doc in _docstrings() for w in re.findall(r"[A-Za-z][a-z]{1,14}", doc)})
        counts = [len(tokenizer(w, add_special_tokens=False)["input_ids"]) for w in words]
        self.words = [w for w, c in zip(words, counts, strict=True) if c >= 1]
        self.counts = [c for c in counts if c >= 1]
        self.singles = [i for i, c in enumerate(self.counts) if c == 1]
        self.rng = random.Random(seed)

    def text(self, n_tokens: int) -> str:
        """A text of exactly ``n_tokens`` tokens (without <s> and </s>)."""
        out, left = [], n_tokens
        while left > 0:
            i = self.rng.randrange(len(self.words))
            if self.counts[i] > left:
                i = self.rng.choice(self.singles)
            out.append(self.words[i])
            left -= self.counts[i]
        return " ".join(out)


def train_jsonl(
    n_queries: int, *, query_tokens: int = 96, passage_tokens: int = 320, n_neg: int = 7, seed: int = 0
) -> Path:
    """FlagEmbedding-format training JSONL (query, pos, neg), cached; texts longer than the 64/256 caps."""
    path = cache_root() / f"train-{n_queries}-{query_tokens}-{passage_tokens}-{n_neg}-s{seed}.jsonl"
    if path.exists():
        return path
    maker = TextMaker(get_tokenizer(), seed)
    rows = [
        {
            "query": maker.text(query_tokens),
            "pos": [maker.text(passage_tokens)],
            "neg": [maker.text(passage_tokens) for _ in range(n_neg)],
        }
        for _ in range(n_queries)
    ]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    tmp.rename(path)
    return path


def write_texts(name: str, lengths: list[int], seed: int = 0) -> Path:
    """A JSON list of texts with the given token counts, cached as ``.cache/bench/<name>.json``."""
    path = cache_root() / f"{name}.json"
    if path.exists():
        return path
    maker = TextMaker(get_tokenizer(), seed)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps([maker.text(n) for n in lengths]), encoding="utf-8")
    tmp.rename(path)
    return path


def read_texts(path: str | Path) -> list[str]:
    return json.loads(Path(path).read_text(encoding="utf-8"))
