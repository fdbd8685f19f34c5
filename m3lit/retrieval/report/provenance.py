"""What made a results table: the ``settings`` block of ``results.json`` and the dataset fingerprint.

``results.json`` holds ``{"settings": {...}, "results": {...}}``. The settings are the options of
``configs/evaluate.yaml`` that change numbers, so ``python -m m3lit.evaluate settings=<results.json>``
re-runs the same evaluation:

================  ================================================================================
``model``         model reference (path, hub id or checkpoint) as given
``data``          the dataset folder(s) as given (a list for several)
``split``         qrels split
``modes``         modes asked for (a model without heads still drops its unusable ones the same way)
``metrics``       metric names
``dtype``         weights' dtype while encoding
``unknown_qrels`` error / skip
``ignore_identical_ids``  BEIR's query-id == doc-id drop
``retrieval``     the full :class:`RetrievalConfig` dict: lengths, pooling, prefixes, top-k, fusion weights
``datasets``      per dataset name: ``path`` and ``sha256`` (:func:`dataset_hash`) with ``hashed`` (what)
``environment``   device, torch / transformers versions: recorded, never restored (numbers may differ in
                  the last float32 digits across devices)
================  ================================================================================
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from m3lit.files.jsonl import DataError

__all__ = [
    "RESTORED_KEYS",
    "OPTIONAL_RESTORED_KEYS",
    "read_json_object",
    "dataset_hash",
    "evaluation_settings",
    "read_results",
]

#: Settings keys a re-run takes over (the ``configs/evaluate.yaml`` options that change the numbers).
RESTORED_KEYS = (
    "model",
    "data",
    "split",
    "modes",
    "metrics",
    "dtype",
    "unknown_qrels",
    "ignore_identical_ids",
    "retrieval",
)
#: Restored when present (suite evaluations record them; single-dataset ones do not).
OPTIONAL_RESTORED_KEYS = ("suite", "reference", "tune_fusion")
_CHUNK = 1 << 20


def dataset_hash(dataset_dir: str | Path, split: str = "test") -> dict[str, Any]:
    """Fingerprint of a BEIR folder: ``{"sha256": hex, "hashed": [files]}``.

    The sha256 of ``manifest.json`` when the folder has one (the data builders record every file's hash
    there); otherwise one sha256 over ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv`` (or
    ``answers/<split>.jsonl``), each
    fed as its relative path, a NUL byte, its size in bytes, a NUL byte, then its bytes.
    """
    root = Path(dataset_dir)
    manifest = root / "manifest.json"
    judged = f"answers/{split}.jsonl" if (root / f"answers/{split}.jsonl").is_file() else f"qrels/{split}.tsv"
    files = ["manifest.json"] if manifest.is_file() else ["corpus.jsonl", "queries.jsonl", judged]
    digest = hashlib.sha256()
    for name in files:
        path = root / name
        if not path.is_file():
            raise FileNotFoundError(f"{path}: not found (dataset hash)")
        if name != "manifest.json":  # a lone manifest hashes as its own sha256sum would
            digest.update(f"{name}\0{path.stat().st_size}\0".encode())
        with path.open("rb") as handle:
            while block := handle.read(_CHUNK):
                digest.update(block)
    return {"sha256": digest.hexdigest(), "hashed": files}


def evaluation_settings(
    *,
    model: str,
    data: str | Sequence[str],
    names: Sequence[str],
    split: str,
    modes: Sequence[str],
    metrics: Sequence[str],
    retrieval: Mapping[str, Any],
    ignore_identical_ids: bool,
    unknown_qrels: str = "error",
    dtype: str = "float32",
    device: str = "cpu",
) -> dict[str, Any]:
    """The ``settings`` block (see the module docstring); ``names`` are the datasets' names in the results."""
    import torch
    import transformers

    dirs = [str(data)] if isinstance(data, str | Path) else [str(d) for d in data]
    if len(dirs) != len(names):
        raise ValueError(f"evaluation_settings: {len(names)} names for {len(dirs)} dataset folders")
    return {
        "model": str(model),
        "data": dirs[0] if isinstance(data, str | Path) else dirs,
        "split": str(split),
        "modes": [str(m) for m in modes],
        "metrics": [str(m) for m in metrics],
        "dtype": str(dtype),
        "unknown_qrels": str(unknown_qrels),
        "ignore_identical_ids": bool(ignore_identical_ids),
        "retrieval": dict(retrieval),
        "datasets": {
            name: {"path": folder, **dataset_hash(folder, split)}
            for name, folder in zip(names, dirs, strict=True)
        },
        "environment": {
            "device": str(device),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
    }


def read_json_object(path: str | Path, default_name: str, what: str) -> tuple[Path, dict]:
    """``(file, object)`` of a JSON file (``path``, or ``path/default_name`` for a folder); errors name the
    file, and the line for invalid JSON. ``what`` says what the file is, for the not-found message."""
    path = Path(path)
    if path.is_dir():
        path = path / default_name
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: {what} not found") from None
    except json.JSONDecodeError as err:
        raise DataError(f"invalid JSON ({err.msg})", path=path, line=err.lineno) from None
    if not isinstance(payload, dict):
        raise DataError("expected a JSON object", path=path)
    return path, payload


def read_results(path: str | Path) -> tuple[dict, dict | None]:
    """``(results, settings)`` of a ``results.json``; files written before settings existed give None."""
    _, payload = read_json_object(path, "results.json", "results file")
    if "results" in payload and "settings" in payload:
        return payload["results"], payload["settings"]
    return payload, None
