"""Export a training checkpoint as ONE folder that FlagEmbedding, sentence-transformers and m3lit load.

Run::

    python -m m3lit.export model=logs/train/runs/<run>/checkpoints/last.ckpt output_dir=export/
    python -m m3lit.export model=CKPT output_dir=DIR fp16=true      # halve the size, as bge-m3 ships
    python -m m3lit.export model=some/model/folder output_dir=DIR   # re-export (e.g. to fp16)

The folder (FlagEmbedding layout + sentence-transformers files, spec §2)::

    config.json, model.safetensors         the Hugging Face encoder
    tokenizer.json, tokenizer_config.json  the tokenizer (readable by transformers 4.x and 5.x)
    sparse_linear.pt, colbert_linear.pt    the lexical and ColBERT heads ({"weight", "bias"} state dicts)
    modules.json, sentence_bert_config.json, config_sentence_transformers.json,
    1_Pooling/config.json, 2_Normalize/    sentence-transformers: Transformer -> CLS pooling -> Normalize
    m3lit.json                             provenance: source checkpoint, step, stage, config hash, version
    README.md                              model card: Hub metadata (model-index from the run's results.json),
                                           training recipe, loading snippets (:mod:`m3lit.export_card`)

``push_to_hub=<user/name>`` uploads the folder to the Hugging Face Hub (``huggingface_hub``'s ``create_repo`` +
``upload_folder``); with the Hub offline (``HF_HUB_OFFLINE=1``, no network) it stops with one ``error:`` line
before anything is written or uploaded::

    python -m m3lit.export model=CKPT output_dir=DIR push_to_hub=me/my-m3-model

LoRA runs (``model.net.lora``) are exported with the adapters merged into the encoder: the folder is a plain
model that loads without peft. ``adapter_only=true`` writes the adapter alone instead (peft's
``adapter_config.json`` + ``adapter_model.safetensors``, the two head files and ``m3lit.json``)::

    python -m m3lit.export model=CKPT output_dir=DIR adapter_only=true

Its ``adapter_config.json`` names the model the run started from (``base_model_name_or_path``, recorded in the
checkpoint); ``base_model=`` names another (e.g. a hub id instead of a local folder).

``format=onnx`` writes one ONNX graph (``model.onnx``, all three outputs, dynamic batch and length) and the
tokenizer, for ONNX Runtime (:mod:`m3lit.model.onnx_export`; loader: :class:`m3lit.inference.onnx_runtime.OnnxM3Embedder`)::

    python -m m3lit.export model=CKPT output_dir=DIR format=onnx
    python -m m3lit.export model=CKPT output_dir=DIR format=onnx onnx_int8=true   # + model.int8.onnx

``onnx_int8=true`` adds ``model.int8.onnx``, the int8 dynamic quantisation of the graph
(:func:`m3lit.model.onnx_export.quantize_int8`; ``OnnxM3Embedder(DIR, int8=True)`` loads it). Its cost on
multilingual-e5-small: see the README's performance section (``benchmarks/onnx_encode.py``).

Loading it::

    from m3lit import M3Embedder;          M3Embedder(DIR)                # all three outputs
    from FlagEmbedding import BGEM3FlagModel;  BGEM3FlagModel(DIR)        # (+ colbert_dim=Dc if Dc != H)
    from sentence_transformers import SentenceTransformer;  SentenceTransformer(DIR)   # dense only

The model (and ``base_model``) is checked before anything loads; a user error ends the command with one
``error: ...`` line (exit status 2 for a bad option, 1 for a bad file or model; ``--debug``: traceback).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import transformers

import m3lit
from m3lit.export_card import check_push, push_folder, write_card
from m3lit.files.errors import UsageError, run_command
from m3lit.files.options import command_help, parse_key_values
from m3lit.model import M3Model
from m3lit.model.lora import lora_settings, save_adapter
from m3lit.model.onnx_export import export_onnx, quantize_int8
from m3lit.model.reference import ModelReferenceError, check_model_reference
from m3lit.model.training_checkpoint import is_training_checkpoint, load_model, load_training_checkpoint

__all__ = ["ExportResult", "export", "main", "FORMATS", "OPTIONS", "PROVENANCE_FILE"]

PROVENANCE_FILE = "m3lit.json"

#: Command-line options (``key=value``) and their defaults.
OPTIONS: dict[str, Any] = {
    "model": None,  # Lightning .ckpt to export (or a model folder / hub id to re-export); required (ckpt_path=: deprecated)
    "output_dir": None,  # folder to write; required; must be empty or absent unless overwrite=true
    "fp16": False,  # store the encoder and both head files in float16 (as the released BAAI/bge-m3)
    "base_model": None,  # folder/hub id with the encoder config + tokenizer, for a .ckpt without m3lit metadata
    "overwrite": False,  # allow writing into a non-empty output_dir (files of the same name are replaced)
    "format": "flag",  # flag = FlagEmbedding + sentence-transformers folder; onnx = model.onnx + tokenizer
    "adapter_only": False,  # LoRA runs: write the peft adapter + head files only (base: base_model=, else the run's)
    "onnx_int8": False,  # format=onnx: also write model.int8.onnx (int8 dynamic quantisation, ONNX Runtime)
    "push_to_hub": None,  # Hub repo id (user/name): upload the folder after writing it; offline: error, nothing written
}
#: Values of the ``format`` option.
FORMATS = ("flag", "onnx")


@dataclass
class ExportResult:
    """What :func:`export` wrote: the folder, its files (relative paths) and the provenance record."""

    folder: Path
    files: list[str]
    provenance: dict[str, Any]


def export(
    ckpt_path: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    fp16: bool = False,
    base_model: str | os.PathLike | None = None,
    overwrite: bool = False,
    format: str = "flag",
    adapter_only: bool = False,
    onnx_int8: bool = False,
    push_to_hub: str | None = None,
) -> ExportResult:
    """Write the export folder of ``ckpt_path`` (see the module docstring for the layout).

    Args:
        ckpt_path: a Lightning ``.ckpt`` (read with ``weights_only=True``), or a model folder / hub id.
        output_dir: destination folder.
        fp16: save the encoder and head weights in float16.
        base_model: encoder config + tokenizer source for checkpoints that lack m3lit's metadata.
        overwrite: allow a non-empty ``output_dir``.
        format: ``flag`` (the folder above, LoRA adapters merged) or ``onnx`` (:mod:`m3lit.model.onnx_export`).
        adapter_only: write only the LoRA adapter and the heads (:func:`m3lit.model.lora.save_adapter`); its
            ``base_model_name_or_path`` is ``base_model``, else the model the run started from (recorded in the
            checkpoint).
        onnx_int8: with ``format=onnx``, also write ``model.int8.onnx`` (:func:`m3lit.model.onnx_export.quantize_int8`).
        push_to_hub: a Hub repo id to upload the finished folder to (:func:`m3lit.export_card.push_folder`).

    Raises:
        FileExistsError: ``output_dir`` is not empty and ``overwrite`` is False.
        ValueError: the source has no trained sparse/ColBERT heads (a plain encoder folder), an unknown
            ``format``, ``adapter_only`` without LoRA adapters or with ``format=onnx``, ``fp16`` with ONNX,
            or ``onnx_int8`` without ``format=onnx``.
    """
    if format not in FORMATS:
        raise UsageError(f"format={format!r}: expected one of {list(FORMATS)}")
    if format == "onnx" and (fp16 or adapter_only):
        raise UsageError(
            "format=onnx writes the whole fp32 graph: fp16=true and adapter_only=true do not apply"
        )
    if onnx_int8 and format != "onnx":
        raise UsageError(
            f"onnx_int8=true quantises the ONNX graph: it needs format=onnx (got format={format})"
        )
    folder = Path(output_dir)
    if folder.exists() and any(folder.iterdir()) and not overwrite:
        raise FileExistsError(f"output_dir={folder} is not empty; pass overwrite=true to write into it")
    if push_to_hub is not None:
        check_push(str(push_to_hub))
    check_model_reference(ckpt_path, "model")
    if base_model is not None:
        check_model_reference(base_model, "base_model")
    model, provenance = _load(ckpt_path, base_model, format)
    lora = lora_settings(model.encoder)
    if adapter_only:
        if lora is None:
            raise UsageError(
                f"adapter_only=true: {ckpt_path} has no LoRA adapters (trained without model.net.lora)"
            )
        recorded = model.encoder.config.name_or_path or None  # what the run loaded (checkpoint metadata)
        provenance["adapter_base"] = recorded if base_model is None else str(base_model)
        save_adapter(model, folder, base_model=provenance["adapter_base"])
    elif format == "onnx":
        export_onnx(model, folder)
        if onnx_int8:
            quantize_int8(folder)
    else:
        model.save_pretrained(folder, fp16=fp16, sentence_transformers=True)
    provenance.update(
        {
            "format": format,
            "adapter_only": bool(adapter_only),
            "lora": None if lora is None else lora.to_dict(),  # merged unless adapter_only
            "fp16": bool(fp16),
            "onnx_int8": bool(onnx_int8),
            "hidden_size": model.hidden_size,
            "colbert_dim": model.colbert_dim,
            "max_length": model.max_length,
            "m3lit_version": m3lit.__version__,
            "torch_version": torch.__version__,
            "transformers_version": transformers.__version__,
        }
    )
    (folder / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")
    write_card(folder, provenance, repo_id=push_to_hub)
    if push_to_hub is not None:
        provenance["pushed_to"] = push_folder(folder, str(push_to_hub))
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    return ExportResult(folder=folder, files=files, provenance=provenance)


def _load(
    source: str | os.PathLike, base_model: str | os.PathLike | None, format: str = "flag"
) -> tuple[M3Model, dict[str, Any]]:
    if is_training_checkpoint(source):
        ckpt = load_training_checkpoint(source, base_model=base_model)
        provenance = {
            "source_checkpoint": ckpt.source,
            "step": ckpt.step,
            "epoch": ckpt.epoch,
            "stage": ckpt.stage,
            "config_hash": ckpt.config_hash,
        }
        return ckpt.model, provenance
    model = load_model(source, key="model")
    if not model.heads_loaded:
        why = (
            "the ONNX export needs all three outputs (dense, sparse, ColBERT) and would bake random heads "
            "into the graph"
            if format == "onnx"
            else "exporting would ship untrained sparse and ColBERT heads that FlagEmbedding loads without "
            "complaint"
        )
        raise ModelReferenceError(
            f"model={source}: no trained sparse/ColBERT heads (sparse_linear.pt/colbert_linear.pt missing): "
            f"{why}. Export a trained checkpoint instead."
        )
    previous = Path(source) / PROVENANCE_FILE
    provenance = json.loads(previous.read_text(encoding="utf-8")) if previous.is_file() else {}
    provenance = {
        key: provenance.get(key) for key in ("source_checkpoint", "step", "epoch", "stage", "config_hash")
    }
    provenance["reexported_from"] = str(Path(source).resolve()) if Path(source).exists() else str(source)
    return model.float(), provenance


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (``python -m m3lit.export`` / ``m3lit-export``); a user error prints one
    ``error:`` line and raises ``SystemExit`` (:mod:`m3lit.files.errors`)."""
    return run_command(_run, argv, help=lambda: command_help(__name__, OPTIONS))


def _run(args: list[str]) -> int:
    options = parse_key_values(
        args, OPTIONS, "export", required=("model", "output_dir"), aliases={"ckpt_path": "model"}
    )
    source = options.pop("model")
    result = export(source, **options)
    print(f"exported {source} -> {result.folder}")
    for key in ("step", "stage", "config_hash", "format", "fp16", "onnx_int8", "lora", "pushed_to"):
        print(f"  {key}: {result.provenance.get(key)}")
    print("  files: " + ", ".join(result.files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
