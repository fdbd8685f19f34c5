"""Build the :class:`~m3lit.model.M3Model` a run trains: from a hub id / folder, or randomly initialised.

Hydra instantiates :func:`net_from_config` from ``configs/model/*.yaml`` (``model.net``: every key is a
:class:`NetOptions` field) and passes the result to :class:`~m3lit.training.lit_module.M3LitModule`.
Python callers build a :class:`NetOptions` and call :func:`build_m3_model`.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer

from m3lit.files.errors import PathError, UsageError
from m3lit.files.jsonl import read_records
from m3lit.model import M3Model
from m3lit.model.cpu_dropout import use_fast_cpu_dropout
from m3lit.model.device import DTYPES, resolve_dtype
from m3lit.model.lexical_init import fit_lexical_head
from m3lit.model.lora import LoraSettings, add_lora, has_lora, merge_lora
from m3lit.model.positions import extend_position_embeddings
from m3lit.model.reference import check_model_reference
from m3lit.model.tiny import tiny_xlmr_config
from m3lit.model.training_checkpoint import is_training_checkpoint, load_training_checkpoint

__all__ = ["NetOptions", "build_m3_model", "check_lora", "net_from_config"]

log = logging.getLogger(__name__)


@dataclass
class NetOptions:
    """How to build the model to train; each field is a ``model.net.*`` config key.

    Attributes:
        name_or_path: hub id (``BAAI/bge-m3``, ``BAAI/bge-m3-retromae``, ``FacebookAI/xlm-roberta-large``),
            a local folder (e.g. a previous run's ``export/``) or a training ``.ckpt`` (its weights; a new
            run, not a resume). None: a random XLM-R of size ``init``.
        tokenizer: tokenizer folder for a random encoder (e.g. a corpus's own tokenizer); only then.
        init: keyword arguments of :func:`~m3lit.model.tiny.tiny_xlmr_config` for a random encoder.
        colbert_dim: ColBERT width for freshly initialised heads (<= 0: hidden size); loaded heads keep theirs.
        normalize: L2-normalise dense and ColBERT vectors.
        dtype: weights dtype (``float32``/``float16``/``bfloat16``); None keeps the checkpoint's. Mixed
            precision training wants float32 weights (``trainer.precision=bf16-mixed`` does the casting).
        gradient_checkpointing: recompute encoder activations in backward (paper App. B.3).
        fix_encoder / fix_position_embedding: FlagEmbedding's freezing switches (spec §3.5).
        fix_word_embeddings: freeze the token embedding matrix. For an XLM-R-vocabulary encoder it holds
            most of the parameters (250k x hidden: 96M of multilingual-e5-small's 118M), so freezing it
            removes most of the optimizer's work and memory; the rest of the encoder and the heads train.
        max_length: tokens the encoder must accept. When larger than its position table, the learnt
            absolute positions are extended (:func:`~m3lit.model.positions.extend_position_embeddings`,
            e.g. 512 -> 8192 as BGE-M3 did before pre-training, App. B.1). None keeps the model's.
        position_init: how new position rows start: ``copy`` (cyclic copies) or ``interpolate``.
        sparse_init_scale: multiply a FRESHLY initialised sparse head (weight and bias) by this. With
            temperature 0.02 the default ``nn.Linear`` init can give raw lexical scores so large that the
            first unified steps drive every ReLU weight to 0 for good (the all-zero sparse vectors of spec
            §7 item 5); a small scale (e.g. 0.1) starts the lexical logits near 0. Loaded heads are untouched.
        sparse_init_uniform: start a FRESHLY initialised sparse head at weight 0 and this bias instead, so
            every token weighs the same and s_lex (§3.2 eq. for e_lex) starts as ``value**2`` times the
            number of distinct tokens query and passage share: a bag-of-words match that training reshapes.
            A near-zero random head barely trains in a short run, because s_lex = sum w_q * w_p makes the
            gradient of each weight proportional to the other side's (near-zero) weights. Excludes
            ``sparse_init_scale``; loaded heads are untouched.
        sparse_init_idf: ``{texts, sample, mean_weight, ridge, max_length}``: fit a FRESHLY initialised
            sparse head to BM25's idf instead (:func:`~m3lit.model.lexical_init.fit_lexical_head`), so each
            token weighs about ``c * sqrt(idf)`` and s_lex starts as a BM25-like match. ``texts``: JSON-lines
            training file(s) whose ``query`` and ``pos`` texts are the idf's documents (e.g.
            ``${data.pairs_data}``). Excludes the other two ``sparse_init_*`` options.
        fast_cpu_dropout: draw the encoder's dropout masks on CPU from raw random bits
            (:mod:`m3lit.model.cpu_dropout`, cheaper than PyTorch's ``bernoulli_``; drop probability p
            rounded to a multiple of 2^-15). CUDA runs use PyTorch's dropout either way.
        padding_free: run padded training batches through the encoder without their padding tokens
            (:mod:`m3lit.model.packing`): only attention sees the padded layout, every other layer computes
            the real tokens alone. Needs ``fast_cpu_dropout`` (m3lit's attention function) and a BERT- or
            RoBERTa-style encoder (XLM-R included); otherwise the padded pass runs.
        lora: ``{r, alpha, dropout, target_modules}``: LoRA adapters on the encoder, which is otherwise
            frozen; the heads train fully (:mod:`m3lit.model.lora`, needs ``pip install m3lit[lora]``).
            None: full fine-tuning. A ``.ckpt`` of a LoRA run starts with its adapters merged.
    """

    name_or_path: str | None = None
    tokenizer: str | None = None
    init: Mapping | None = None
    colbert_dim: int = -1
    normalize: bool = True
    dtype: str | None = None
    gradient_checkpointing: bool = False
    fix_encoder: bool = False
    fix_position_embedding: bool = False
    fix_word_embeddings: bool = False
    max_length: int | None = None
    position_init: str = "copy"
    sparse_init_scale: float = 1.0
    sparse_init_uniform: float | None = None
    sparse_init_idf: Mapping | None = None
    fast_cpu_dropout: bool = True
    padding_free: bool = True
    lora: Mapping | None = None

    def check(self) -> None:
        """Reject option combinations that exclude each other, before anything is loaded.

        Raises:
            UsageError: naming the ``model.net`` keys at fault.
        """
        if self.dtype and self.dtype not in DTYPES:
            raise UsageError(f"model.net.dtype must be one of {sorted(DTYPES)} or null, got {self.dtype!r}")
        if self.name_or_path and self.tokenizer is not None:
            raise UsageError(
                "model.net.tokenizer is only for a randomly initialised encoder (name_or_path null)"
            )
        if not self.name_or_path and self.tokenizer is None:
            raise UsageError("model.net: a random encoder (name_or_path null) needs a tokenizer folder")


def net_from_config(**keys: Any) -> M3Model:
    """Hydra's ``_target_`` for ``model.net``: the keys are :class:`NetOptions` fields.

    Raises:
        TypeError: a key that is not a :class:`NetOptions` field.
    """
    return build_m3_model(NetOptions(**keys))


net_from_config.options_type = NetOptions  # the keys ``**keys`` takes (config/checks.py reads it)


def check_lora(net: Mapping[str, Any]) -> None:
    """Check ``model.net.lora`` before the model loads: its keys and values, the exclusion of ``fix_encoder``
    and, when the encoder's architecture is known without its weights (a random encoder, or a local folder's
    ``config.json``), that every ``target_modules`` entry names one of its layers (built on the meta device).

    Raises:
        UsageError: naming the ``model.net.lora`` key at fault.
    """
    try:
        settings = LoraSettings.from_mapping(net["lora"], "model.net.lora")
    except (TypeError, ValueError) as error:
        raise UsageError(str(error)) from None
    if net.get("fix_encoder"):
        raise UsageError(
            "model.net.lora and model.net.fix_encoder=true exclude each other (nothing to adapt)"
        )
    names = _encoder_layer_names(net)
    if names is None:  # a hub id or a checkpoint: add_lora checks the names after the load
        return
    linear = sorted({n.rsplit(".", 1)[-1] for n, is_linear in names.items() if is_linear})
    for target in settings.target_modules:
        if not any(n == target or n.endswith("." + target) for n in names):
            raise UsageError(
                f"model.net.lora.target_modules: {target!r} matches no layer of the encoder; its Linear layers "
                f"are named {linear}"
            )


def _encoder_layer_names(net: Mapping[str, Any]) -> dict[str, bool] | None:
    """Module name -> is a Linear, of the encoder ``net`` describes (no weights: meta device); None when its
    architecture is not known without loading (a hub id, a training checkpoint)."""
    from transformers import AutoConfig, AutoModel

    path = net.get("name_or_path")
    if path and (Path(str(path)) / "config.json").is_file():
        config = AutoConfig.from_pretrained(str(path))
    elif not path:
        config = tiny_xlmr_config(8, pad_token_id=1, **dict(net.get("init") or {}))
    else:
        return None
    with torch.device("meta"):
        encoder = AutoModel.from_config(config)
    return {name: isinstance(module, torch.nn.Linear) for name, module in encoder.named_modules() if name}


def build_m3_model(options: NetOptions) -> M3Model:
    """The model to train, in training mode: loaded or random (:func:`_load`), then its sparse head
    initialised when fresh, positions extended, LoRA added and parts frozen as ``options`` say."""
    opts = options
    opts.check()
    model = _load(opts)
    if opts.lora is not None and opts.fix_encoder:
        raise UsageError(
            "model.net.lora and model.net.fix_encoder=true exclude each other (nothing to adapt)"
        )
    if has_lora(model.encoder):  # weights of a LoRA run: a new run starts from the merged encoder
        merge_lora(model.encoder)
    _init_sparse_head(model, opts)
    if opts.fast_cpu_dropout:
        use_fast_cpu_dropout(model.encoder)
    model.padding_free = opts.padding_free
    if opts.max_length is not None and opts.max_length > model.max_length:
        extend_position_embeddings(model, int(opts.max_length), init=opts.position_init)
    if opts.lora is not None:
        add_lora(model.encoder, opts.lora, "model.net.lora")
    model.gradient_checkpointing(opts.gradient_checkpointing)
    model.freeze(
        fix_encoder=opts.fix_encoder,
        fix_position_embedding=opts.fix_position_embedding,
        fix_word_embeddings=opts.fix_word_embeddings,
    )
    return model.train()  # from_pretrained returns eval mode; Lightning keeps modes as it finds them


def _load(opts: NetOptions) -> M3Model:
    """A training checkpoint's model, a pretrained folder / hub id, or a random encoder of size ``init``."""
    dtype = resolve_dtype(opts.dtype) if opts.dtype else None
    if opts.name_or_path:
        check_model_reference(opts.name_or_path, "model.net.name_or_path")
        if is_training_checkpoint(opts.name_or_path):
            model = load_training_checkpoint(opts.name_or_path).model
            model.dense_head.normalize = model.colbert_head.normalize = opts.normalize
            return model.to(dtype) if dtype else model
        return M3Model.from_pretrained(
            opts.name_or_path, colbert_dim=opts.colbert_dim, normalize=opts.normalize, torch_dtype=dtype
        )
    tok = AutoTokenizer.from_pretrained(opts.tokenizer)
    config = tiny_xlmr_config(len(tok), pad_token_id=tok.pad_token_id, **dict(opts.init or {}))
    model = M3Model.from_config(config, tok, colbert_dim=opts.colbert_dim, normalize=opts.normalize)
    return model.to(dtype) if dtype else model


def _init_sparse_head(model: M3Model, opts: NetOptions) -> None:
    """``sparse_init_*``: start a FRESH sparse head scaled, uniform or fitted to idf (loaded heads stay)."""
    uniform, scale, idf = opts.sparse_init_uniform, opts.sparse_init_scale, opts.sparse_init_idf
    if uniform is not None and scale != 1.0:
        raise UsageError("model.net: give sparse_init_uniform or sparse_init_scale, not both")
    if uniform is not None and uniform <= 0:
        raise UsageError(f"model.net.sparse_init_uniform must be > 0, got {uniform}")
    if idf is not None and (uniform is not None or scale != 1.0):
        raise UsageError("model.net: sparse_init_idf excludes sparse_init_uniform and sparse_init_scale")
    if opts.name_or_path and model.heads_loaded:
        return
    if idf is not None:
        _fit_sparse_head_to_idf(model, dict(idf))
        return
    with torch.no_grad():
        if uniform is not None:
            model.sparse_head.linear.weight.zero_()
            model.sparse_head.linear.bias.fill_(uniform)
        else:
            model.sparse_head.linear.weight.mul_(scale)
            model.sparse_head.linear.bias.mul_(scale)


def _fit_sparse_head_to_idf(model: M3Model, options: dict) -> None:
    """``model.net.sparse_init_idf``: read the texts, fit the head, log the fit's R^2."""
    files = options.pop("texts", None)
    if not files:
        raise UsageError(
            "model.net.sparse_init_idf needs texts: a JSON-lines training file or a list of them"
        )
    texts: list[str] = []
    for path in [files] if isinstance(files, str) else list(files):
        if not Path(path).is_file():
            raise PathError("model.net.sparse_init_idf.texts", path, "no such file")
        for _, record in read_records(path):
            texts += [record["query"], *record.get("pos", [])]
    known = set(inspect.signature(fit_lexical_head).parameters) - {"model", "texts"}
    for key in sorted(
        set(options) - known
    ):  # checked here, so a TypeError inside the fit keeps its traceback
        raise UsageError(
            f"model.net.sparse_init_idf: unexpected keyword argument {key!r} (known: texts, {sorted(known)})"
        )
    r2 = fit_lexical_head(model, texts, **options)
    log.info("sparse head fitted to BM25 idf on %d texts (R^2 %.3f)", len(texts), r2)
