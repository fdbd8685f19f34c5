"""Every path a training run reads, checked at start-up: before a model loads or a logger starts a run.

``python -m m3lit.train`` calls :func:`check_paths` on the composed config before Hydra creates the run
folder, and :func:`m3lit.train.train` calls it again first thing, so a typo in ``data.train_data`` costs
seconds, not a model load and an empty W&B run. Nothing is read or built here; each check only looks at
the file system (and, for a hub id, at the hub's reachability: :func:`m3lit.model.reference.check_model_reference`):

=============================  =============================================================================
key                            must be
=============================  =============================================================================
``data.train_data``,           a JSONL/parquet/Arrow file, a folder, an ``hf:`` id, a mapping or a list
``data.pairs_data``            (:func:`m3lit.data.entries.expand_train_data`)
``data.tokenizer``             a tokenizer folder (when a path is given)
``model.net.name_or_path``     a model folder with ``config.json``, a ``.ckpt`` file, a hub id or ``m3lit:NAME``
``model.net.tokenizer``        a tokenizer folder
``ckpt_path``                  a checkpoint file
``evaluate.dataset_dir``       a BEIR folder with ``qrels/<evaluate.split>.tsv`` (when evaluation is on)
``evaluate.suite``             a folder with ``suite.json`` (when evaluation is on)
``evaluate.reference``         its ``name_or_path``, as ``model.net.name_or_path``
=============================  =============================================================================

A key that a corpus fills in at start-up (:mod:`m3lit.config.corpus`: the data, tokenizer and evaluation
paths of the corpus it builds) is only checked when it is set.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from m3lit.files.errors import PathError

__all__ = ["check_paths"]


def check_paths(cfg: DictConfig | Mapping) -> None:
    """Raise a user error (naming the key) for the first configured path that is wrong (module docstring).

    Raises:
        DataError: ``data.train_data`` / ``data.pairs_data`` names a missing file or an empty folder.
        ModelReferenceError: a model reference that cannot be loaded.
        PathError: any other missing or wrong path.
    """
    from m3lit.data.entries import expand_train_data
    from m3lit.model.reference import check_model_reference
    from m3lit.retrieval.beir import check_beir_folder
    from m3lit.retrieval.suite import check_suite_folder

    plain = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    data = plain.get("data") or {}
    for key in ("train_data", "pairs_data"):
        if data.get(key) not in (None, "", []):
            expand_train_data(data[key], f"data.{key}", data.get("columns"))
    if isinstance(data.get("tokenizer"), str):
        _folder("data.tokenizer", data["tokenizer"])
    net = (plain.get("model") or {}).get("net") or {}
    if net.get("name_or_path"):
        check_model_reference(str(net["name_or_path"]), "model.net.name_or_path")
    if net.get("tokenizer"):
        _folder("model.net.tokenizer", net["tokenizer"])
    if plain.get("ckpt_path") and not Path(str(plain["ckpt_path"])).expanduser().is_file():
        raise PathError("ckpt_path", plain["ckpt_path"], "no such checkpoint file")
    evaluate = plain.get("evaluate") or {}
    if not evaluate.get("enabled"):
        return
    if evaluate.get("suite"):
        check_suite_folder(str(evaluate["suite"]), "evaluate.suite")
    elif evaluate.get("dataset_dir"):
        check_beir_folder(
            str(evaluate["dataset_dir"]), str(evaluate.get("split", "test")), "evaluate.dataset_dir"
        )
    reference: Any = evaluate.get("reference") or {}
    if isinstance(reference, Mapping) and reference.get("name_or_path"):
        check_model_reference(str(reference["name_or_path"]), "evaluate.reference.name_or_path")


def _folder(key: str, value: Any) -> None:
    if not Path(str(value)).expanduser().is_dir():
        raise PathError(key, value, "no such folder")
