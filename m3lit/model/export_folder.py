"""The on-disk model layout: FlagEmbedding's BGE-M3 folder plus sentence-transformers' module files.

One folder loads in FlagEmbedding (``BGEM3FlagModel``), in sentence-transformers (dense: CLS pooling +
Normalize) and in m3lit::

    config.json, model.safetensors          Hugging Face encoder (``save_pretrained``)
    tokenizer.json, tokenizer_config.json   tokenizer (``save_pretrained``; special tokens live in the config)
    sparse_linear.pt                        state dict of Linear(H, 1): keys ``weight`` (1, H), ``bias`` (1,)
    colbert_linear.pt                       state dict of Linear(H, Dc): ``weight`` (Dc, H), ``bias`` (Dc,)
    modules.json, sentence_bert_config.json,
    config_sentence_transformers.json,
    1_Pooling/config.json, 2_Normalize/     sentence-transformers pipeline (Transformer -> CLS -> Normalize)

The head files are written with ``torch.save`` (the format FlagEmbedding reads) and always read back with
``torch.load(weights_only=True)``, which refuses pickled objects other than tensors. The released
``BAAI/bge-m3`` ships its heads in fp16; they are cast to the encoder's dtype on load.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

__all__ = [
    "check_model_source",
    "set_config_dtype",
    "HEAD_FILES",
    "load_head_state",
    "save_head_state",
    "write_sentence_transformers_files",
    "resolve_file",
    "save_tokenizer",
]

HEAD_FILES = {"sparse": "sparse_linear.pt", "colbert": "colbert_linear.pt"}


def resolve_file(model_name_or_path: str | os.PathLike, filename: str, **hub_kwargs) -> Path | None:
    """Path of ``filename`` in a local folder, or downloaded from the Hugging Face hub; None if absent.

    Hub look-ups honour ``HF_HUB_OFFLINE`` and the local cache; a missing file is not an error (a plain
    encoder folder has no head files).
    """
    local = Path(model_name_or_path)
    if local.is_dir():
        candidate = local / filename
        return candidate if candidate.is_file() else None
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError
    except ImportError:  # pragma: no cover - transformers always brings huggingface_hub
        return None
    try:
        return Path(hf_hub_download(str(model_name_or_path), filename, **hub_kwargs))
    except (EntryNotFoundError, LocalEntryNotFoundError, OSError):
        return None


def load_head_state(path: str | os.PathLike, hidden_size: int | None = None) -> dict[str, torch.Tensor]:
    """Read a head state dict safely (``weights_only=True``) and check its keys and shapes.

    Args:
        path: ``sparse_linear.pt`` or ``colbert_linear.pt``.
        hidden_size: when given, the weight must be (out, hidden_size) and the bias (out,).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file holds something other than a ``{"weight", "bias"}`` tensor dict of that shape.
        pickle.UnpicklingError: the file tries to unpickle arbitrary objects (refused by torch).
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"head file {path} not found")
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or set(state) != {"weight", "bias"}:
        keys = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{path}: expected a Linear state dict with keys ['bias', 'weight'], found {keys}")
    weight, bias = state["weight"], state["bias"]
    if not (isinstance(weight, torch.Tensor) and isinstance(bias, torch.Tensor)):
        raise ValueError(f"{path}: 'weight' and 'bias' must be tensors")
    if (
        weight.dim() != 2
        or bias.shape != weight.shape[:1]
        or (hidden_size is not None and weight.shape[1] != hidden_size)
    ):
        expected = f"(out, {hidden_size})" if hidden_size is not None else "(out, in)"
        raise ValueError(
            f"{path}: weight {tuple(weight.shape)} / bias {tuple(bias.shape)} do not form a Linear with weight "
            f"{expected} and bias (out,)"
        )
    return state


def save_head_state(linear: torch.nn.Linear, path: str | os.PathLike, fp16: bool = False) -> None:
    """Write ``linear``'s state dict in FlagEmbedding's format (optionally cast to fp16, as bge-m3 ships)."""
    state = {
        k: v.detach().to("cpu", torch.float16 if fp16 else v.dtype).clone()
        for k, v in linear.state_dict().items()
    }
    torch.save(state, str(path))


def write_sentence_transformers_files(
    folder: str | os.PathLike, hidden_size: int, max_seq_length: int, model_args: dict | None = None
) -> None:
    """Write the sentence-transformers pipeline files: Transformer -> CLS Pooling -> Normalize.

    Without them sentence-transformers falls back to mean pooling, which silently gives different
    embeddings (FlagEmbedding issue #1326). ``model_args`` go to ``sentence_bert_config.json``, which
    sentence-transformers (2.x on) passes to the encoder's ``from_pretrained``: M3Model gives
    ``{"add_pooling_layer": False}`` to encoders that accept it, since the folder holds no BERT pooler (M3 never
    uses it: CLS pooling reads the last hidden state), so none is built and none is reported missing
    (``pooler.dense.weight | MISSING``).
    """
    folder = Path(folder)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    pooling = {
        "word_embedding_dimension": hidden_size,
        "pooling_mode_cls_token": True,
        "pooling_mode_mean_tokens": False,
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
        "pooling_mode_weightedmean_tokens": False,
        "pooling_mode_lasttoken": False,
        "include_prompt": True,
    }
    (folder / "1_Pooling").mkdir(parents=True, exist_ok=True)
    (folder / "2_Normalize").mkdir(parents=True, exist_ok=True)
    _write_json(folder / "modules.json", modules)
    _write_json(folder / "1_Pooling" / "config.json", pooling)
    _write_json(
        folder / "sentence_bert_config.json",
        {
            "max_seq_length": max_seq_length,
            "do_lower_case": False,
            **({"model_args": model_args} if model_args else {}),
        },
    )
    _write_json(
        folder / "config_sentence_transformers.json",
        {"prompts": {}, "default_prompt_name": None, "similarity_fn_name": "cosine"},
    )


def save_tokenizer(tokenizer, folder: str | os.PathLike) -> None:
    """``tokenizer.save_pretrained(folder)``, readable by transformers 4.x too (FlagEmbedding pins 4.x).

    transformers 5 records a tokenizer built from a ``tokenizers`` object as ``"TokenizersBackend"``, a class
    4.x does not have; ``"PreTrainedTokenizerFast"`` names the same tokenizer.json-backed class in both.
    """
    tokenizer.save_pretrained(str(folder))
    config_path = Path(folder) / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if config.get("tokenizer_class") == "TokenizersBackend":
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
        _write_json(config_path, config)


def check_model_source(path: str) -> None:
    """Raise FileNotFoundError for a missing local model folder or one without config.json.

    Anything that does not look like a local path (``org/name``) is left to the hub.
    """
    local = Path(path).expanduser()
    if local.exists():
        if not local.is_dir():
            raise FileNotFoundError(
                f"{path} is a file; M3Model.from_pretrained expects a model folder or hub id"
            )
        if not (local / "config.json").is_file():
            raise FileNotFoundError(f"{local / 'config.json'} not found: {path} is not a saved model folder")
        return
    looks_local = local.is_absolute() or path.startswith((".", "~")) or path.count("/") > 1 or "\\" in path
    if looks_local:
        raise FileNotFoundError(f"model folder {path} does not exist")


def set_config_dtype(config_path: Path, dtype: str) -> None:
    """Record ``dtype`` in a saved config.json (the encoder was written in that dtype)."""
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["torch_dtype"] = dtype
    config["dtype"] = dtype
    config_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def _write_json(path: Path, payload: object) -> None:
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
