"""Token lengths for length bucketing, from the real tokenizer, cached per file.

The bucket key of a line is its longest text in tokens (with special tokens), each side capped at its
max length: ``max(min(len(query), query_max_len), max over pos + neg of min(len(p), passage_max_len))``
(negatives left out when the group size is 1, since they are never sampled then),
as FlagEmbedding's ``split_data_by_length.py`` does but with the truncation the collator applies.
Counting 8192-token passages is slow, so the result is cached in ``cache_dir`` as a small ``.npz``
keyed by the file's content hash (a table's: the hashes of its Arrow or parquet files), the tokenizer's
fingerprint, both max lengths and the column mapping.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from m3lit.data.schema import Example

__all__ = ["example_lengths", "file_digest", "token_counts", "tokenizer_fingerprint"]

#: Texts tokenised per call when counting (bounds memory on large files).
CHUNK = 4096


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tokenizer_fingerprint(tokenizer) -> str:
    """A short hash that changes whenever the tokenizer's vocabulary or pipeline changes."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        state = json.loads(backend.to_str())
        state.pop("truncation", None)  # call-time settings that tokenizer(..., truncation=True) mutates
        state.pop("padding", None)
        payload = json.dumps(state, sort_keys=True)
    else:  # slow tokenizer: its class, vocabulary and special tokens
        payload = repr(
            (type(tokenizer).__name__, sorted(tokenizer.get_vocab().items()), tokenizer.all_special_tokens)
        )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


def token_counts(tokenizer, texts: Sequence[str], max_length: int) -> np.ndarray:
    """Tokens per text with special tokens, truncated at ``max_length``: (N,) int32."""
    out = np.empty(len(texts), dtype=np.int32)
    for start in range(0, len(texts), CHUNK):
        chunk = list(texts[start : start + CHUNK])
        ids = tokenizer(chunk, add_special_tokens=True, truncation=True, max_length=max_length)["input_ids"]
        out[start : start + len(chunk)] = [len(x) for x in ids]
    return out


def example_lengths(
    path: str | Path | Sequence[str | Path],
    examples: Sequence[Example],
    tokenizer,
    query_max_len: int,
    passage_max_len: int,
    cache_dir: str | Path | None = None,
    negatives: bool = True,
    salt: str = "",
) -> np.ndarray:
    """Bucket key of every example (see the module docstring): (N,) int32, cached per file.

    Args:
        path: the file the examples came from, or the files of a table (their content hashes key the cache).
        examples: its validated lines (possibly a subset after skipped lines); read in chunks of
            :data:`CHUNK`, so a memory-mapped table (:class:`~m3lit.data.tables.TableRows`) stays on disk.
        tokenizer: the training tokenizer.
        query_max_len: query truncation length.
        passage_max_len: passage truncation length.
        cache_dir: folder for the cache files; None disables caching.
        negatives: count the negatives too (False for G = 1, where they are never sampled).
        salt: anything else the texts depend on (the column mapping), part of the cache key.
    """
    known_lines = getattr(examples, "lines", None)  # a table's row indices, without reading its rows
    lines = np.asarray([ex.line for ex in examples] if known_lines is None else known_lines, dtype=np.int64)
    cache_file = None
    if cache_dir is not None:
        files = [path] if isinstance(path, str | Path) else list(path)
        digest = "+".join(file_digest(f) for f in files)
        key = f"{digest}-{tokenizer_fingerprint(tokenizer)}-{query_max_len}-{passage_max_len}-{negatives}"
        key += f"-{salt}" if salt else ""
        cache_file = (
            Path(cache_dir)
            / f"{Path(files[0]).stem[:40]}-{hashlib.sha256(key.encode()).hexdigest()[:20]}.npz"
        )
        if cache_file.exists():
            with np.load(cache_file) as cached:
                known = dict(zip(cached["lines"].tolist(), cached["lengths"].tolist(), strict=True))
            if all(line in known for line in lines.tolist()):
                return np.array([known[line] for line in lines.tolist()], dtype=np.int32)
    lengths = np.empty(len(lines), dtype=np.int32)
    chunk: list[Example] = []
    done = 0
    for ex in examples:
        chunk.append(ex)
        if len(chunk) == CHUNK:
            lengths[done : done + CHUNK] = _chunk_lengths(
                chunk, tokenizer, query_max_len, passage_max_len, negatives
            )
            done, chunk = done + CHUNK, []
    if chunk:
        lengths[done:] = _chunk_lengths(chunk, tokenizer, query_max_len, passage_max_len, negatives)
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        # write-then-rename so that concurrent readers never see a half-written file
        fd, tmp = tempfile.mkstemp(dir=cache_file.parent, suffix=".npz")
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, lines=lines, lengths=lengths)
        os.replace(tmp, cache_file)
    return lengths


def _chunk_lengths(
    examples: Sequence[Example], tokenizer, query_max_len: int, passage_max_len: int, negatives: bool
) -> np.ndarray:
    """Bucket keys of a few examples: (n,) int32."""
    queries = token_counts(tokenizer, [ex.query for ex in examples], query_max_len)
    texts = [(*ex.pos, *ex.neg) if negatives else ex.pos for ex in examples]
    passage_counts = token_counts(tokenizer, [p for group in texts for p in group], passage_max_len)
    lengths = np.empty(len(examples), dtype=np.int32)
    offset = 0
    for i, group in enumerate(texts):
        lengths[i] = max(int(queries[i]), int(passage_counts[offset : offset + len(group)].max()))
        offset += len(group)
    return lengths
