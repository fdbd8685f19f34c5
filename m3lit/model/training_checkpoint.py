"""Safe loading of Lightning training checkpoints (``*.ckpt``) into an :class:`~m3lit.model.M3Model`.

A Lightning checkpoint holds the LightningModule's ``state_dict`` (the M3 model's tensors under a prefix
such as ``model.``), ``global_step``, ``epoch``, ``hyper_parameters``, callback and optimizer states. It is
read with ``torch.load(weights_only=True)``: tensors and plain Python containers only, so a checkpoint
that tries to unpickle any other object (a class instance, a ``__reduce__`` payload) is refused before
anything runs. Keep ``hyper_parameters`` plain (dicts, lists, str, numbers), e.g. convert an OmegaConf
config with ``OmegaConf.to_container(cfg, resolve=True)`` before ``save_hyperparameters``.

To rebuild the model the loader needs the encoder config and the tokenizer. The LightningModule stores
them in the checkpoint itself, as plain strings, with one line::

    def on_save_checkpoint(self, checkpoint):
        checkpoint[CKPT_META_KEY] = checkpoint_metadata(self.model, prefix="model.", stage=self.stage)

Checkpoints without that entry load when ``base_model`` names the folder (or hub id) the run started
from: its config and tokenizer are used and every tensor is taken from the checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoTokenizer

from m3lit.files.errors import UserError
from m3lit.model import M3Model
from m3lit.model.lora import add_lora, lora_settings

__all__ = [
    "CKPT_META_KEY",
    "CheckpointError",
    "UnsafeCheckpointError",
    "TrainingCheckpoint",
    "checkpoint_metadata",
    "checkpoint_step",
    "config_hash",
    "is_training_checkpoint",
    "load_model",
    "load_training_checkpoint",
    "safe_torch_load",
]

#: Key of m3lit's metadata entry in a Lightning checkpoint dict.
CKPT_META_KEY = "m3lit"
_HEAD_KEY = "sparse_head.linear.weight"  # marks the M3Model inside a LightningModule's state dict


class CheckpointError(UserError, ValueError):
    """A ``.ckpt`` that cannot be used: unreadable (truncated, not a torch file) or without an M3 model."""


class UnsafeCheckpointError(CheckpointError, pickle.UnpicklingError):
    """A checkpoint that would unpickle objects other than tensors and plain containers (refused)."""


@dataclass
class TrainingCheckpoint:
    """A model rebuilt from a training checkpoint, with the provenance :mod:`m3lit.export` records.

    Attributes:
        model: the M3 model in eval mode, fp32.
        source: absolute path of the checkpoint file.
        step: Lightning ``global_step`` (optimizer steps), None if absent.
        epoch: Lightning ``epoch``, None if absent.
        stage: training stage (e.g. ``stage1_dense``/``stage2_unified``) if recorded, else None.
        config_hash: sha256 (16 hex digits) of the canonical JSON of ``hyper_parameters``.
        hyper_parameters: the checkpoint's ``hyper_parameters`` (empty if none).
    """

    model: M3Model
    source: str
    step: int | None = None
    epoch: int | None = None
    stage: str | None = None
    config_hash: str | None = None
    hyper_parameters: dict = field(default_factory=dict)


def checkpoint_metadata(
    model: M3Model, *, prefix: str = "model.", stage: str | None = None
) -> dict[str, Any]:
    """Plain-data description of ``model`` to store under ``checkpoint[CKPT_META_KEY]``.

    Args:
        model: the M3 model held by the LightningModule.
        prefix: the attribute path of ``model`` inside the LightningModule's state dict (``"model."`` for
            ``self.model``).
        stage: the current training stage, recorded for export provenance.

    Returns:
        A dict of str/int/bool/bytes only (safe under ``weights_only=True``): encoder config JSON, every
        tokenizer file, ColBERT width, normalisation flag, state-dict prefix, stage, LoRA settings and the
        base model (the encoder's ``name_or_path``: the hub id or folder it was loaded from, or None).
    """
    with tempfile.TemporaryDirectory() as tmp:
        model.tokenizer.save_pretrained(tmp)
        files = {p.name: p.read_bytes() for p in sorted(Path(tmp).iterdir()) if p.is_file()}
    return {
        "format": 1,
        "encoder_config": model.encoder.config.to_json_string(use_diff=False),
        "tokenizer_files": files,
        "colbert_dim": int(model.colbert_dim),
        "normalize": bool(model.dense_head.normalize),
        "prefix": prefix,
        "stage": stage,
        "lora": None if (lora := lora_settings(model.encoder)) is None else lora.to_dict(),
        # where the encoder was loaded from (hub id or folder; None for a random encoder): the base of a
        # LoRA adapter-only export
        "base_model": model.encoder.config.name_or_path or None,
    }


def safe_torch_load(path: str | os.PathLike, *, mmap: bool = False) -> Any:
    """``torch.load(weights_only=True)`` with errors that name the file.

    Raises:
        UnsafeCheckpointError: unpickling was refused (the file holds arbitrary pickled objects).
        CheckpointError: the file is truncated, empty or not a torch file at all.
    """
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as error:
        raise UnsafeCheckpointError(
            f"{path}: refused to load: the file contains pickled objects other than tensors and plain "
            f"containers, and m3lit never unpickles arbitrary objects (weights_only=True). Details: {error}"
        ) from error
    except (RuntimeError, EOFError, KeyError) as error:  # torch's errors for a damaged or foreign file
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"{path}: not a readable checkpoint (truncated, or not written by torch.save): {first}"
        ) from error


def checkpoint_step(path: str | os.PathLike) -> int:
    """The ``global_step`` of a Lightning checkpoint, read without loading its tensors (memory-mapped)."""
    ckpt = safe_torch_load(path, mmap=True)
    return int(ckpt.get("global_step") or 0)


def is_training_checkpoint(path: str | os.PathLike) -> bool:
    """True for a file ending in ``.ckpt`` (a Lightning checkpoint), False for folders and hub ids."""
    return Path(path).suffix == ".ckpt" and Path(path).is_file()


def load_training_checkpoint(
    path: str | os.PathLike, *, base_model: str | os.PathLike | None = None, prefix: str | None = None
) -> TrainingCheckpoint:
    """Rebuild the M3 model of a Lightning checkpoint (safely, see the module docstring).

    Args:
        path: the ``.ckpt`` file.
        base_model: folder or hub id giving the encoder config and tokenizer when the checkpoint has no
            ``CKPT_META_KEY`` entry (its weights are replaced by the checkpoint's).
        prefix: state-dict prefix of the M3 model; default: the recorded one, else the unique prefix of a
            ``sparse_head.linear.weight`` key.

    Raises:
        UnsafeCheckpointError: the file holds arbitrary pickled objects (a ``pickle.UnpicklingError``).
        CheckpointError: an unreadable file, no state dict, no or ambiguous M3 model inside, or no way to
            rebuild the architecture (a ``ValueError``).
    """
    path = Path(path).resolve()
    ckpt = safe_torch_load(path)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise CheckpointError(f"{path}: not a Lightning checkpoint (no 'state_dict' entry)")
    meta = ckpt.get(CKPT_META_KEY) or {}
    state = _strip_compile_prefix(ckpt["state_dict"])
    prefix = prefix if prefix is not None else meta.get("prefix", _find_prefix(path, state))
    own = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    if _HEAD_KEY not in own:
        raise CheckpointError(f"{path}: no '{prefix}{_HEAD_KEY}' in the state dict; wrong prefix {prefix!r}?")

    if meta:
        model = _model_from_metadata(meta, own)
    elif base_model is not None:
        model = M3Model.from_pretrained(base_model, colbert_dim=own["colbert_head.linear.weight"].shape[0])
        model.heads_loaded = True
    else:
        raise CheckpointError(
            f"{path}: the checkpoint carries no '{CKPT_META_KEY}' metadata (encoder config + tokenizer); "
            "pass base_model=<the folder or hub id the run started from>"
        )
    model.float()
    _load_state(model, own, path)
    hparams = ckpt.get("hyper_parameters") or {}
    return TrainingCheckpoint(
        model=model.eval(),
        source=str(path),
        step=ckpt.get("global_step"),
        epoch=ckpt.get("epoch"),
        stage=meta.get("stage") or _find_stage(hparams, ckpt.get("callbacks")),
        config_hash=config_hash(hparams),
        hyper_parameters=hparams,
    )


def load_model(
    model_name_or_path: str | os.PathLike,
    *,
    colbert_dim: int = -1,
    normalize: bool = True,
    trust_remote_code: bool = False,
    cache_dir: str | None = None,
    key: str = "model",
) -> M3Model:
    """Any supported source -> M3Model: a ``.ckpt`` training checkpoint, an m3lit export, a FlagEmbedding
    output folder, the ``BAAI/bge-m3`` layout (fp16 head files) or a plain encoder (heads untrained).

    ``key`` names the option in errors: a hub id while offline and not cached fails at once
    (:func:`m3lit.model.reference.check_model_reference`)."""
    from m3lit.model.reference import check_model_reference

    check_model_reference(model_name_or_path, key)
    if is_training_checkpoint(model_name_or_path):
        model = load_training_checkpoint(model_name_or_path).model
        if not normalize:
            model.dense_head.normalize = model.colbert_head.normalize = False
        return model
    hub_kwargs = {"cache_dir": cache_dir} if cache_dir is not None else {}
    return M3Model.from_pretrained(
        model_name_or_path,
        colbert_dim=colbert_dim,
        normalize=normalize,
        trust_remote_code=trust_remote_code,
        **hub_kwargs,
    )


def config_hash(hyper_parameters: dict) -> str:
    """sha256 (first 16 hex digits) of the canonical JSON of a config dict."""
    text = json.dumps(hyper_parameters, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------- helpers
def _model_from_metadata(meta: dict, own: dict[str, torch.Tensor]) -> M3Model:
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "config.json").write_text(meta["encoder_config"], encoding="utf-8")
        for name, payload in meta["tokenizer_files"].items():
            if Path(name).name != name:
                raise CheckpointError(f"unsafe tokenizer file name in checkpoint metadata: {name!r}")
            Path(tmp, name).write_bytes(payload)
        config = AutoConfig.from_pretrained(tmp)
        tokenizer = AutoTokenizer.from_pretrained(tmp)
    config.name_or_path = meta.get("base_model") or ""  # not the temporary folder
    colbert_dim = own["colbert_head.linear.weight"].shape[0]
    model = M3Model.from_config(
        config, tokenizer, colbert_dim=colbert_dim, normalize=meta.get("normalize", True)
    )
    if meta.get("lora"):
        add_lora(model.encoder, meta["lora"], "checkpoint metadata 'lora'")
    return model


def _load_state(model: M3Model, own: dict[str, torch.Tensor], path: Path) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(own))
    unexpected = sorted(set(own) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: state dict does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    for key, tensor in own.items():
        if tensor.shape != expected[key].shape:
            raise CheckpointError(
                f"{path}: '{key}' has shape {tuple(tensor.shape)}, model expects {tuple(expected[key].shape)}"
            )
    model.load_state_dict(own, strict=True)


def _find_prefix(path: Path, state: dict) -> str:
    prefixes = sorted({k[: -len(_HEAD_KEY)] for k in state if k.endswith(_HEAD_KEY)})
    if len(prefixes) != 1:
        raise CheckpointError(
            f"{path}: expected one M3 model in the state dict, found prefixes {prefixes}; pass prefix="
        )
    return prefixes[0]


def _strip_compile_prefix(state: dict) -> dict:
    """Drop ``_orig_mod.`` segments that ``torch.compile`` adds to parameter names."""
    return {k.replace("_orig_mod.", ""): v for k, v in state.items()}


def _find_stage(hparams: dict, callbacks: Any) -> str | None:
    if isinstance(hparams.get("stage"), str):
        return hparams["stage"]
    if isinstance(callbacks, dict):
        for state in callbacks.values():
            if isinstance(state, dict) and isinstance(state.get("stage"), str):
                return state["stage"]
    return None
