"""LoRA adapters on the encoder of an :class:`~m3lit.model.M3Model`, through ``peft`` (optional extra ``lora``).

LoRA (Hu et al. 2021, arXiv:2106.09685) freezes a Linear layer's weight W (out, in) and learns a low-rank
update: ``y = W x + (alpha / r) * B A dropout(x)`` with A (r, in) and B (out, r); B starts at zero, so the
adapted model starts equal to the base model. Here every encoder Linear whose name ends with one of
``target_modules`` gets an adapter (peft's matching rule); the rest of the encoder is frozen, while the
dense/sparse/ColBERT heads, which live outside the encoder, keep training fully. One adapter adds
``r * (in + out)`` trainable parameters per target layer.

The adapters are injected in place (``peft.inject_adapter_in_model``): the encoder stays the Hugging Face
module, its state dict gains ``<layer>.base_layer.weight`` and ``<layer>.lora_A.default.weight`` keys, and
:func:`lora_settings` reads the settings back for the checkpoint metadata (:mod:`m3lit.model.training_checkpoint`) so a ``.ckpt``
rebuilds the same architecture. :func:`merged_copy` folds ``W + (alpha / r) B A`` into plain Linear layers
for exports that load without peft; :func:`save_adapter` writes the adapter alone in peft's file layout.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from torch import nn

from m3lit.files.errors import UsageError
from m3lit.model.export_folder import HEAD_FILES, save_head_state

__all__ = [
    "LoraSettings",
    "add_lora",
    "has_lora",
    "lora_settings",
    "merge_lora",
    "merged_copy",
    "save_adapter",
    "trainable_parameters",
    "ADAPTER_FILES",
]

_ADAPTER = "default"  # peft's adapter name; one adapter per encoder
#: Files of an adapter-only export (``adapter_only=true``): peft's two + the heads.
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", *HEAD_FILES.values())


@dataclass(frozen=True)
class LoraSettings:
    """``model.net.lora`` (configs/model/default.yaml documents each key)."""

    r: int = 8  # adapter rank
    alpha: float = 16.0  # the update is scaled by alpha / r
    dropout: float = 0.0  # dropout on the adapter's input (the frozen path has the encoder's own dropout)
    target_modules: tuple[str, ...] = ("query", "key", "value", "dense")  # encoder Linear name suffixes

    @classmethod
    def from_mapping(cls, value: Mapping[str, Any], where: str = "model.net.lora") -> LoraSettings:
        """Validate a config mapping; errors name ``where`` and the key."""
        if not isinstance(value, Mapping):
            raise TypeError(f"{where} must be a mapping {{r, alpha, dropout, target_modules}} or null")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown}; valid keys: {sorted(known)}")
        data = dict(value)
        if "target_modules" in data:
            targets = data["target_modules"]
            if isinstance(targets, str) or not isinstance(targets, Sequence) or not targets:
                raise ValueError(f"{where}.target_modules must be a non-empty list of module names")
            data["target_modules"] = tuple(str(t) for t in targets)
        settings = cls(**data)
        if int(settings.r) != settings.r or settings.r < 1:
            raise ValueError(f"{where}.r must be a positive integer, got {settings.r!r}")
        if not 0.0 <= settings.dropout < 1.0:
            raise ValueError(f"{where}.dropout must be in [0, 1), got {settings.dropout!r}")
        return settings

    def to_dict(self) -> dict[str, Any]:
        """Plain data (checkpoint metadata is read with ``weights_only=True``)."""
        data = asdict(self)
        data["target_modules"] = list(self.target_modules)
        return data


def _peft():
    try:
        import peft
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "model.net.lora needs the optional dependency peft: pip install 'm3lit[lora]'"
        ) from error
    return peft


def add_lora(encoder: nn.Module, settings: LoraSettings | Mapping[str, Any], where: str = "model.net.lora"):
    """Inject LoRA adapters into ``encoder`` in place and freeze everything else in it; returns it.

    Raises:
        UsageError: ``target_modules`` matches no Linear layer of the encoder (the message names
            ``<where>.target_modules`` and lists the encoder's Linear names).
    """
    if not isinstance(settings, LoraSettings):
        settings = LoraSettings.from_mapping(settings, where)
    if has_lora(encoder):
        raise ValueError(f"{where}: the encoder already has LoRA adapters")
    peft = _peft()
    config = peft.LoraConfig(
        r=int(settings.r),
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
        bias="none",
    )
    try:
        peft.inject_adapter_in_model(config, encoder, adapter_name=_ADAPTER)
    except ValueError as error:
        if "not found in the base model" not in str(error):
            raise
        names = sorted({n.rsplit(".", 1)[-1] for n, m in encoder.named_modules() if isinstance(m, nn.Linear)})
        raise UsageError(
            f"{where}.target_modules={list(settings.target_modules)} matches no layer of the encoder; "
            f"its Linear layers are named {names}"
        ) from None
    return encoder


def has_lora(module: nn.Module) -> bool:
    """Whether ``module`` holds peft adapter layers."""
    return any(hasattr(m, "lora_A") and hasattr(m, "base_layer") for m in module.modules())


def lora_settings(encoder: nn.Module) -> LoraSettings | None:
    """The settings the encoder's adapters were built with (None without adapters)."""
    config = (getattr(encoder, "peft_config", None) or {}).get(_ADAPTER)
    if config is None or not has_lora(encoder):
        return None
    return LoraSettings(
        r=int(config.r),
        alpha=float(config.lora_alpha),
        dropout=float(config.lora_dropout),
        target_modules=tuple(sorted(config.target_modules)),
    )


def merge_lora(encoder: nn.Module) -> nn.Module:
    """Fold every adapter into its base Linear (``W += (alpha / r) B A``) and put the plain layer back, in place."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    adapted = [(name, m) for name, m in encoder.named_modules() if isinstance(m, BaseTunerLayer)]
    for name, layer in adapted:
        layer.merge()
        parent_name, _, child = name.rpartition(".")
        parent = encoder.get_submodule(parent_name) if parent_name else encoder
        setattr(parent, child, layer.get_base_layer())
    if hasattr(encoder, "peft_config"):
        del encoder.peft_config
    return encoder


def merged_copy(model: nn.Module) -> nn.Module:
    """A deep copy of an M3Model whose encoder has its adapters merged (the original keeps them)."""
    copied = copy.deepcopy(model)
    merge_lora(copied.encoder)
    return copied


def save_adapter(model: nn.Module, folder: str | os.PathLike, *, base_model: str | None = None) -> list[str]:
    """Write the adapter alone in peft's layout, plus the head files; returns the file names written.

    ``adapter_config.json`` + ``adapter_model.safetensors`` load with
    ``peft.PeftModel.from_pretrained(AutoModel.from_pretrained(base_model), folder)``; ``sparse_linear.pt``
    and ``colbert_linear.pt`` are the trained heads (FlagEmbedding layout). ``base_model`` is recorded as
    the config's ``base_model_name_or_path``.
    """
    from safetensors.torch import save_file

    peft = _peft()
    encoder = model.encoder
    if not has_lora(encoder):
        raise ValueError("adapter_only=true: the model has no LoRA adapters (trained without model.net.lora)")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = peft.get_peft_model_state_dict(encoder, adapter_name=_ADAPTER)
    # PeftModel prefixes its wrapped model's keys with "base_model.model."; loaders expect that prefix.
    state = {f"base_model.model.{k}": v.detach().to("cpu").contiguous() for k, v in state.items()}
    save_file(state, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
    config = copy.copy(encoder.peft_config[_ADAPTER])
    config.base_model_name_or_path = base_model
    config.save_pretrained(str(folder))
    save_head_state(model.sparse_head.linear, folder / HEAD_FILES["sparse"])
    save_head_state(model.colbert_head.linear, folder / HEAD_FILES["colbert"])
    return list(ADAPTER_FILES)


def trainable_parameters(module: nn.Module) -> int:
    """Number of parameters that receive gradients."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
