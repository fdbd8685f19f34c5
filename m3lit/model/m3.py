"""``M3Model``: one Hugging Face encoder with BGE-M3's dense, lexical and multi-vector heads.

A plain ``nn.Module`` (no Lightning) so it can be trained, exported and used for inference on its own.
BGE-M3, arXiv:2402.03216 §3.2; the checkpoint layout is described in :mod:`m3lit.model.export_folder`.

Example (offline, tiny random model)::

    >>> import torch
    >>> from transformers import XLMRobertaConfig
    >>> from m3lit.model.tiny_tokenizer import build_tokenizer
    >>> tok = build_tokenizer(["a tiny corpus of words", "more words here"] * 20, vocab_size=60)
    >>> cfg = XLMRobertaConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1,
    ...                        num_attention_heads=2, intermediate_size=32, max_position_embeddings=40)
    >>> model = M3Model.from_config(cfg, tok, colbert_dim=8).eval()
    >>> ids = torch.tensor([[0, 7, 9, 2], [0, 8, 2, 1]])          # <s> ... </s> <pad>
    >>> out = model(ids, (ids != tok.pad_token_id).long())
    >>> out.dense.shape, out.sparse_weights.shape, out.colbert.shape
    (torch.Size([2, 16]), torch.Size([2, 4]), torch.Size([2, 3, 8]))
    >>> out.sparse_weights[:, 0].tolist(), out.sparse_weights[1, 3].item()   # <s> and <pad> weigh 0
    ([0.0, 0.0], 0.0)
"""

from __future__ import annotations

import inspect
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, PretrainedConfig, PreTrainedTokenizerBase

from m3lit.model.export_folder import (
    HEAD_FILES,
    check_model_source,
    load_head_state,
    resolve_file,
    save_head_state,
    save_tokenizer,
    set_config_dtype,
    write_sentence_transformers_files,
)
from m3lit.model.heads import ColbertHead, DenseHead, SparseHead
from m3lit.model.onednn_linear import use_onednn_linear
from m3lit.model.packing import can_pack, packed_hidden
from m3lit.model.positions import position_offset
from m3lit.model.reference import resolve_named_model

__all__ = ["M3Model", "M3Output", "special_token_ids"]

log = logging.getLogger(__name__)


@dataclass
class M3Output:
    """What :meth:`M3Model.forward` returns. Fields a caller did not ask for are None.

    Attributes:
        dense: (B, H) normalised CLS vectors.
        sparse_weights: (B, L) per-token lexical weights, 0 at special tokens and padding.
        token_ids: (B, L) the input ids the sparse weights belong to.
        colbert: (B, L-1, Dc) normalised token vectors for positions 1..L-1 (CLS dropped), 0 on padding.
        colbert_mask: (B, L-1) bool, True on real tokens (EOS included).
    """

    dense: torch.Tensor | None = None
    sparse_weights: torch.Tensor | None = None
    token_ids: torch.Tensor | None = None
    colbert: torch.Tensor | None = None
    colbert_mask: torch.Tensor | None = None


def special_token_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The ids whose lexical weight is dropped: cls/bos, eos/sep, pad and unk, read from the tokenizer."""
    names = ("cls_token_id", "bos_token_id", "eos_token_id", "sep_token_id", "pad_token_id", "unk_token_id")
    ids = {getattr(tokenizer, name, None) for name in names}
    return sorted(i for i in ids if i is not None)


class M3Model(nn.Module):
    """Encoder + DenseHead + SparseHead + ColbertHead.

    Args:
        encoder: any Hugging Face encoder whose forward returns ``last_hidden_state`` (B, L, H).
        tokenizer: its tokenizer; kept for saving and for reading the special-token ids.
        colbert_dim: ColBERT output width; ``<= 0`` means the hidden size (FlagEmbedding's -1).
        normalize: L2-normalise dense and ColBERT vectors (the reference default).
    """

    def __init__(
        self,
        encoder: nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        colbert_dim: int = -1,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.tokenizer = tokenizer
        hidden = encoder.config.hidden_size
        pad_config, pad_tokenizer = getattr(encoder.config, "pad_token_id", None), tokenizer.pad_token_id
        if position_offset(encoder.config) and pad_config != pad_tokenizer:
            log.warning(
                "encoder config pad_token_id=%s but the tokenizer pads with id %s: RoBERTa-style position ids "
                "would count padding as tokens. Set config.pad_token_id to the tokenizer's pad id.",
                pad_config,
                pad_tokenizer,
            )
        self.dense_head = DenseHead(normalize)
        self.sparse_head = SparseHead(hidden, special_token_ids(tokenizer))
        self.colbert_head = ColbertHead(hidden, colbert_dim, normalize)
        use_onednn_linear(self)  # CPU fp32 matrix products through oneDNN (m3lit.model.onednn_linear)
        #: Run padded batches through the encoder without their padding tokens (:mod:`m3lit.model.packing`);
        #: set by training (``model.net.padding_free``), off for inference, where batches are sorted by length.
        self.padding_free = False
        #: False while the sparse/ColBERT heads hold a fresh initialisation (from_pretrained without head
        #: files); M3LitModule sets it True after its first step in a stage that trains them.
        self.heads_loaded = True

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(
        cls, config: PretrainedConfig, tokenizer: PreTrainedTokenizerBase, colbert_dim: int = -1, **kwargs
    ) -> M3Model:
        """A randomly initialised encoder of ``config`` (tests, offline runs, pre-training from scratch)."""
        encoder = _without_pooler(AutoModel.from_config(config, **_no_pooler_kwargs(config)))
        return cls(encoder, tokenizer, colbert_dim=colbert_dim, **kwargs)

    @classmethod
    def from_pretrained(
        cls,
        model_name_or_path: str | os.PathLike,
        *,
        colbert_dim: int = -1,
        normalize: bool = True,
        torch_dtype: torch.dtype | str | None = torch.float32,
        trust_remote_code: bool = False,
        **hub_kwargs,
    ) -> M3Model:
        """Load a FlagEmbedding/m3lit folder or hub id (e.g. ``BAAI/bge-m3``, ``xlm-roberta-large``).

        Args:
            model_name_or_path: local folder (FlagEmbedding layout, see :mod:`m3lit.model.export_folder`), hub id, or
                ``m3lit:NAME`` for a registered named model (:func:`m3lit.model.reference.resolve_named_model`).
            colbert_dim: ColBERT width for freshly initialised heads (ignored when ``colbert_linear.pt`` exists:
                its shape decides).
            normalize: L2-normalise dense and ColBERT vectors.
            torch_dtype: dtype of the whole model. float32 by default and for None (what training needs), whatever
                dtype the files were saved in; ``torch.float16``/``torch.bfloat16`` for half-precision inference,
                ``"auto"`` for the dtype recorded in config.json.
            trust_remote_code: forwarded to transformers; off unless the user asks.
            hub_kwargs: forwarded to transformers and ``hf_hub_download`` (``revision``, ``cache_dir``, ...).

        Head files (``sparse_linear.pt`` and ``colbert_linear.pt``) are loaded when BOTH exist, safely
        (``weights_only=True``) and cast to the model dtype (bge-m3 ships them in fp16). Otherwise the heads keep
        their fresh initialisation, a warning says so, and ``model.heads_loaded`` is False: fine for training
        from a plain encoder, wrong for inference with the sparse or ColBERT outputs.

        Raises:
            FileNotFoundError: a local path that does not exist, or a folder without ``config.json``.
            ValueError: a head file that is not a Linear state dict of the encoder's width.
            pickle.UnpicklingError: a head file that would unpickle arbitrary objects.
        """
        path = resolve_named_model(str(model_name_or_path))  # m3lit:NAME -> its built folder
        check_model_source(path)
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code, **hub_kwargs)
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code, **hub_kwargs)
        encoder = _without_pooler(
            AutoModel.from_pretrained(
                path,
                config=config,
                dtype=torch.float32 if torch_dtype is None else torch_dtype,
                trust_remote_code=trust_remote_code,
                **_no_pooler_kwargs(config),
                **hub_kwargs,
            )
        )
        head_paths = {
            name: resolve_file(path, filename, **hub_kwargs) for name, filename in HEAD_FILES.items()
        }
        if all(p is not None for p in head_paths.values()):
            states = {
                name: load_head_state(p, hidden_size=config.hidden_size) for name, p in head_paths.items()
            }
            if states["sparse"]["weight"].shape[0] != 1:
                raise ValueError(
                    f"{head_paths['sparse']}: sparse head weight must be (1, H), got {tuple(states['sparse']['weight'].shape)}"
                )
            model = cls(
                encoder, tokenizer, colbert_dim=states["colbert"]["weight"].shape[0], normalize=normalize
            )
            model.sparse_head.linear.load_state_dict(states["sparse"])
            model.colbert_head.linear.load_state_dict(states["colbert"])
        else:
            model = cls(encoder, tokenizer, colbert_dim=colbert_dim, normalize=normalize)
            model.heads_loaded = False
            missing = [HEAD_FILES[name] for name, p in head_paths.items() if p is None]
            log.warning(
                "%s has no %s: the sparse and ColBERT heads are NEWLY INITIALISED. This is right for "
                "training from a plain encoder; for inference only the dense output is meaningful.",
                path,
                " / ".join(missing),
            )
        return model.to(encoder.dtype)

    # ------------------------------------------------------------------ forward
    def encode_hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, L) ids and mask -> (B, L, H) last hidden states of the encoder.

        With :attr:`padding_free` set and a padded batch the encoder can pack, one padding-free pass
        (:func:`m3lit.model.packing.packed_hidden`; zeros at padding), otherwise the plain padded pass.
        """
        if self.padding_free and can_pack(self.encoder, attention_mask):
            return packed_hidden(self.encoder, input_ids, attention_mask)
        return self.encoder(
            input_ids=input_ids, attention_mask=attention_mask, return_dict=True
        ).last_hidden_state

    def heads(
        self,
        hidden: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        *,
        dense: bool = True,
        sparse: bool = True,
        colbert: bool = True,
    ) -> M3Output:
        """Apply the requested heads to (B, L, H) hidden states."""
        out = M3Output(token_ids=input_ids)
        if dense:
            out.dense = self.dense_head(hidden)
        if sparse:
            out.sparse_weights = self.sparse_head(hidden, input_ids, attention_mask)
        if colbert:
            out.colbert, out.colbert_mask = self.colbert_head(hidden, attention_mask)
        return out

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        *,
        dense: bool = True,
        sparse: bool = True,
        colbert: bool = True,
    ) -> M3Output:
        """Encode (B, L) ``input_ids``/``attention_mask`` into the three representations (see M3Output).

        Turning heads off (``sparse=False, colbert=False`` for stage-1 dense-only training) skips their
        computation entirely.
        """
        if input_ids.shape != attention_mask.shape:
            raise ValueError(
                f"input_ids {tuple(input_ids.shape)} and attention_mask {tuple(attention_mask.shape)} differ"
            )
        hidden = self.encode_hidden(input_ids, attention_mask)
        return self.heads(hidden, input_ids, attention_mask, dense=dense, sparse=sparse, colbert=colbert)

    # ------------------------------------------------------------------ training switches
    @property
    def hidden_size(self) -> int:
        return self.encoder.config.hidden_size

    @property
    def colbert_dim(self) -> int:
        return self.colbert_head.linear.out_features

    def gradient_checkpointing(self, enable: bool = True) -> None:
        """Recompute encoder activations in backward (paper App. B.3). Non-reentrant, RNG-preserving.

        transformers also registers a forward hook making the embedding output require grad; only reentrant
        checkpointing needs it (non-reentrant checkpointing back-propagates into the layer's parameters
        whatever its inputs), and the hook is a local function that cannot be pickled, which broke DDP's
        spawned processes. It is removed again.
        """
        encoder = self.encoder
        if hasattr(encoder, "activation_checkpointing_enable"):  # transformers >= 5 name
            if enable:
                encoder.activation_checkpointing_enable(
                    activation_checkpointing_kwargs={"use_reentrant": False}
                )
            else:
                encoder.activation_checkpointing_disable()
        elif enable:
            encoder.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        else:
            encoder.gradient_checkpointing_disable()
        if enable:
            encoder.disable_input_require_grads()

    @property
    def is_gradient_checkpointing(self) -> bool:
        """Whether the encoder recomputes its activations in backward."""
        flag = getattr(self.encoder, "is_activation_checkpointing", None)
        return bool(flag if flag is not None else getattr(self.encoder, "is_gradient_checkpointing", False))

    def freeze(
        self,
        fix_encoder: bool = False,
        fix_position_embedding: bool = False,
        fix_word_embeddings: bool = False,
    ) -> None:
        """FlagEmbedding's ``fix_encoder`` (train only the sparse and ColBERT heads; dense is therefore frozen)
        and ``fix_position_embedding`` (freeze every parameter whose name contains ``position_embeddings``);
        ``fix_word_embeddings`` freezes the token embedding matrix alone (m3lit extension)."""
        words = self.encoder.get_input_embeddings().weight
        for name, param in self.encoder.named_parameters():
            if (
                fix_encoder
                or (fix_position_embedding and "position_embeddings" in name)
                or (fix_word_embeddings and param is words)
            ):
                param.requires_grad_(False)

    # ------------------------------------------------------------------ saving
    def save_pretrained(
        self, save_directory: str | os.PathLike, *, fp16: bool = False, sentence_transformers: bool = True
    ) -> Path:
        """Write the FlagEmbedding layout (+ sentence-transformers files) to ``save_directory``.

        Args:
            fp16: store the encoder and the head files in float16 (as the released bge-m3 does).
            sentence_transformers: also write modules.json, CLS pooling and Normalize.

        An encoder with LoRA adapters (:mod:`m3lit.model.lora`) is saved with the adapters merged into its
        weights (this model keeps them).
        """
        from m3lit.model.lora import has_lora, merged_copy

        if has_lora(self.encoder):  # LoRA adapters are merged: the folder loads without peft
            return merged_copy(self).save_pretrained(
                save_directory, fp16=fp16, sentence_transformers=sentence_transformers
            )
        folder = Path(save_directory)
        folder.mkdir(parents=True, exist_ok=True)
        state = {
            k: v.detach().to("cpu", torch.float16 if fp16 else v.dtype).clone()
            for k, v in self.encoder.state_dict().items()
        }
        self.encoder.save_pretrained(str(folder), state_dict=state)  # model.safetensors
        if fp16:
            set_config_dtype(folder / "config.json", "float16")
        save_tokenizer(self.tokenizer, folder)  # readable by transformers 4.x (FlagEmbedding)
        save_head_state(self.sparse_head.linear, folder / HEAD_FILES["sparse"], fp16=fp16)
        save_head_state(self.colbert_head.linear, folder / HEAD_FILES["colbert"], fp16=fp16)
        if sentence_transformers:
            no_pooler = _no_pooler_kwargs(self.encoder.config)  # nothing reported missing on load
            write_sentence_transformers_files(folder, self.hidden_size, self.max_length, model_args=no_pooler)
        return folder

    @property
    def max_length(self) -> int:
        """Longest input the encoder accepts (absolute positions minus XLM-R's padding offset)."""
        positions = getattr(self.encoder.config, "max_position_embeddings", 514)
        tokens = positions - position_offset(self.encoder.config)
        return min(tokens, int(getattr(self.tokenizer, "model_max_length", tokens)))


def _without_pooler(encoder: nn.Module) -> nn.Module:
    """Drop an unused BERT-style pooler: M3 never uses it and DDP would flag its parameters as unused."""
    if getattr(encoder, "pooler", None) is not None:
        encoder.pooler = None
    return encoder


def _no_pooler_kwargs(config: PretrainedConfig) -> dict:
    """``add_pooling_layer=False`` for encoders that accept it, so no unused pooler is built or reported missing."""
    model_class = AutoModel._model_mapping.get(type(config), None)
    accepts = (
        model_class is not None and "add_pooling_layer" in inspect.signature(model_class.__init__).parameters
    )
    return {"add_pooling_layer": False} if accepts else {}
