"""Table rows that cannot change, computed once: a released model's rows and BM25's, kept on disk.

A suite evaluation scores, beside the model being trained, rows that do not depend on it: the released
reference model (:attr:`m3lit.retrieval.suite.SuiteSystem.cache_rows`) and BM25. Each such row block (one
system or BM25 on one dataset: mode -> metric -> value, and its TREC run files) is kept under
``<cache>/eval-rows/<key hash>/`` by :func:`m3lit.files.cache.cached_build`, keyed by everything that makes
its numbers:

- the model's content (:func:`model_fingerprint`: every weight, the encoder config, the head settings and
  the tokenizer), or for BM25 the tokenizer alone (:func:`m3lit.data.lengths.tokenizer_fingerprint`);
- the data (:func:`m3lit.retrieval.report.provenance.dataset_hash` of the folder and split);
- the settings: the full :class:`~m3lit.retrieval.config.RetrievalConfig` (lengths, pooling, prefixes,
  top-k, fusion weights, window), modes, metrics, ``ignore_identical_ids``, the device type;
- the code that computes them (:func:`code_fingerprint`), the torch version and the linear layers' CPU
  backend (oneDNN or torch's BLAS, :mod:`m3lit.model.onednn_linear`: their sums round differently).

A reused block is read back from JSON, which keeps every float exactly, and its run files are copied into
place, so a second run writes the same tables and files as the first; one log line names the reused entry.
A change to any key computes the rows again (in a new entry; the old one stays for the old settings).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import torch

from m3lit.data.lengths import tokenizer_fingerprint
from m3lit.files.cache import cache_root, cached_build
from m3lit.model.onednn_linear import enabled as onednn_enabled

__all__ = ["ROWS_DIR", "cached_rows", "code_fingerprint", "model_fingerprint"]

log = logging.getLogger(__name__)

#: The cache's subfolder holding one folder per cached row block.
ROWS_DIR = "eval-rows"
#: Bumped when the layout of an entry changes.
FORMAT = 1
#: State-dict prefixes of the sparse and ColBERT heads (left out of a dense-only system's fingerprint).
HEAD_PREFIXES = ("sparse_head.", "colbert_head.")
#: The subpackages whose code decides an evaluation's numbers (hashed into every key).
CODE_PACKAGES = ("scores", "model", "inference", "retrieval")


def model_fingerprint(model, heads: bool = True) -> str:
    """sha256 of what decides an :class:`~m3lit.model.M3Model`'s outputs.

    Every tensor of ``state_dict()`` (name, dtype, shape and bytes, in name order), the encoder's config
    (without its ``_name_or_path``), the heads' settings (``normalize``, whether the heads were trained) and
    the tokenizer (:func:`tokenizer_fingerprint`). A moved or copied model keeps its fingerprint; one changed
    weight changes it.

    Args:
        model: the model.
        heads: include the sparse and ColBERT heads. False for a system evaluated without them (dense
            only): a released encoder loaded without head files gets freshly initialised heads at every
            load, which must not change the key of rows they take no part in.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        if not heads and name.startswith(HEAD_PREFIXES):
            continue
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}\0{flat.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(memoryview(flat.view(torch.uint8).numpy()))
    config = model.encoder.config.to_dict()
    config.pop("_name_or_path", None)
    settings = {
        "class": type(model).__name__,
        "normalize": [getattr(head, "normalize", None) for head in (model.dense_head, model.colbert_head)],
        "heads_loaded": bool(getattr(model, "heads_loaded", True)) if heads else None,
        "tokenizer": tokenizer_fingerprint(model.tokenizer),
    }
    digest.update(json.dumps({"config": config, **settings}, sort_keys=True, default=str).encode())
    return digest.hexdigest()


@cache
def code_fingerprint() -> str:
    """sha256 over the source files of :data:`CODE_PACKAGES` (relative path and bytes, in path order)."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for package in CODE_PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            digest.update(f"{path.relative_to(root).as_posix()}\0".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def cached_rows(
    name: str,
    key: Mapping[str, Any],
    compute: Callable[..., Mapping[str, Mapping[str, float]]],
    runs_dir: str | Path | None = None,
) -> dict[str, dict[str, float]]:
    """The rows ``compute`` makes for ``key``: read from the cache when an entry holds that key, else computed
    and stored.

    Args:
        name: what the rows are, for the log line (``"MIRACL-like/en: multilingual-e5-small"``).
        key: JSON values that decide the rows (see the module docstring); the code fingerprint, the torch
            version, the linear-layer backend and the entry format are added.
        compute: ``compute(runs_dir=folder)`` returns mode -> metric -> value and writes its TREC run files
            into ``folder`` (called only when the entry is missing), as
            :func:`~m3lit.retrieval.pipeline.evaluate_retrieval` does.
        runs_dir: where the run files are copied (None: not copied).

    Returns:
        mode -> metric -> value, as read back from the entry (the same whether computed now or before).
    """
    backend = "onednn" if onednn_enabled() else "blas"
    key = {**key, "format": FORMAT, "torch": torch.__version__, "linear": backend, "code": code_fingerprint()}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    out = cache_root() / ROWS_DIR / digest[:24]
    computed: list[bool] = []

    def build(tmp: Path) -> dict[str, Any]:
        scores = compute(runs_dir=tmp / "runs")
        (tmp / "scores.json").write_text(json.dumps(scores, sort_keys=True) + "\n", encoding="utf-8")
        computed.append(True)
        return {"name": name}

    cached_build(out, {"key": key}, build)
    if computed:
        log.info("%s: rows computed and cached in %s", name, out)
    else:
        log.info("%s: rows reused from the cache entry %s (same model, data and settings)", name, out)
    if runs_dir is not None and (out / "runs").is_dir():
        shutil.copytree(out / "runs", runs_dir, dirs_exist_ok=True)
    return json.loads((out / "scores.json").read_text(encoding="utf-8"))
