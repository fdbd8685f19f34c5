"""Batch encoding of raw texts into numpy outputs: the one inference loop every m3lit tool shares.

``encode_texts`` is what ``M3Embedder``, evaluation, hard-negative mining and the ``encode`` command use.
It follows FlagEmbedding's inference procedure (``M3Embedder.encode_single_device``), so results agree with
``BGEM3FlagModel`` on the same checkpoint:

1. tokenise every text without padding, truncated to ``max_length`` (special tokens included; capped at the
   model's positions unless ``window`` cuts the text into windows that fit them);
2. sort by token count, longest first, and cut batches of at most ``batch_size`` texts, ended early once
   padding would exceed ``MAX_PADDING`` (5%) of a batch's real tokens (at least 8 texts a batch);
3. encode batch by batch with right padding under ``torch.inference_mode`` in eval mode (under SDPA the
   encoder gets a (B, 1, 1, L) key mask, see :func:`encoder_mask`); on out-of-memory the batch size
   shrinks to 3/4 and the batch is retried (down to 1);
4. restore the input order.

Outputs per text (BGE-M3, arXiv:2402.03216 §3.2): the normalised CLS vector; the lexical weights
max-pooled per unique token id with the tokenizer's cls/eos/pad/unk ids dropped and only weights > 0
kept (ids in order of their first weighted occurrence, as FlagEmbedding's dicts); the ColBERT vectors of
all real tokens but CLS (``</s>`` included). With ``mcls_interval`` set, long texts get extra CLS tokens
(App. B.2, see :mod:`m3lit.inference.mcls`); with ``window`` set, longer texts are encoded as consecutive
windows whose outputs are merged (:mod:`m3lit.inference.windows`). ``pooling="mean"`` replaces the CLS
vector by the normalised attention-mask mean of the last hidden states (released baselines such as
multilingual-e5), and ``prefix`` is prepended to every text before tokenisation (e5's ``"query: "`` /
``"passage: "``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from m3lit.files.errors import UsageError
from m3lit.inference.mcls import insert_cls_tokens, mcls_forward
from m3lit.inference.sparse_pool import sparse_rows
from m3lit.inference.windows import merge_windows, split_windows
from m3lit.model import M3Model, M3Output
from m3lit.model.cpu_dropout import ATTENTION_NAME
from m3lit.model.heads import mean_pool

__all__ = [
    "EncodedTexts",
    "MCLS_AND_WINDOW",
    "WindowError",
    "check_window",
    "encode_texts",
    "forward_batches",
    "encoder_mask",
    "MAX_PADDING",
    "POOLINGS",
    "tokenize_texts",
    "pad_batch",
    "is_out_of_memory",
    "sparse_to_dict",
    "sparse_rows",
]

log = logging.getLogger(__name__)

#: Padding allowed per batch, relative to its real tokens (:func:`forward_batches`). Fixed batches of 256
#: sorted texts of 50-500 tokens carry ~10-30% padding, and attention costs grow with its square.
MAX_PADDING = 0.05
#: Dense pooling: the CLS hidden state (BGE-M3, §3.2) or the attention-mask mean of the last hidden states.
POOLINGS = ("cls", "mean")


@dataclass
class EncodedTexts:
    """Outputs of :func:`encode_texts`; a field is None when it was not requested.

    Attributes:
        dense: (N, H) float32 normalised CLS (or MCLS, or mean-pooled) vectors.
        sparse: per text ``(ids, weights)``: unique int64 token ids and their float32 weights (> 0).
        colbert: per text a float32 array (n_tokens - 1, Dc): every real token but CLS.
        batch_size: the batch size finally used (smaller than requested after an out-of-memory back-off).
    """

    dense: np.ndarray | None = None
    sparse: list[tuple[np.ndarray, np.ndarray]] | None = None
    colbert: list[np.ndarray] | None = None
    batch_size: int = 0


def _check_texts(texts: Sequence[str]) -> None:
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}] is {type(text).__name__}, expected str")


def tokenize_texts(tokenizer, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Token ids of every text, special tokens added, truncated to ``max_length``, unpadded."""
    _check_texts(texts)
    if not texts:
        return []
    return tokenizer(list(texts), truncation=True, max_length=max_length, padding=False)["input_ids"]


def encode_texts(
    model: M3Model,
    texts: Sequence[str],
    *,
    batch_size: int = 256,
    max_length: int = 512,
    dense: bool = True,
    sparse: bool = False,
    colbert: bool = False,
    device: torch.device | str | None = None,
    progress: bool | Any = False,
    mcls_interval: int | None = None,
    pooling: str = "cls",
    prefix: str = "",
    window: int | None = None,
) -> EncodedTexts:
    """Encode ``texts`` with ``model`` (see the module docstring for the procedure).

    Args:
        model: an ``M3Model``; it is put in eval mode for the call and its training flag restored after.
        texts: the strings to encode.
        batch_size: at most this many texts per forward pass (the starting value of the out-of-memory
            back-off); batches end earlier when padding would exceed ``MAX_PADDING``.
        max_length: truncation length in tokens, special tokens included: the most tokens read of a text.
            Capped at ``model.max_length`` in one pass; with ``window`` it may exceed it (the whole text up to
            ``max_length`` tokens is read and cut into windows).
        dense / sparse / colbert: which outputs to compute.
        device: where to run; None = where the model's parameters are. The model is moved there.
        progress: True for a tqdm progress bar over texts, or an existing bar (anything with ``update(n)``)
            to advance, e.g. one bar shared by several calls.
        mcls_interval: insert a CLS token every this many tokens (App. B.2, :mod:`m3lit.inference.mcls`); None = off.
        pooling: ``"cls"`` (BGE-M3) or ``"mean"`` (attention-mask mean of the last hidden states, then
            normalised as the dense head does); only the dense output changes. Not with ``mcls_interval``.
        prefix: prepended to every text before tokenisation (e.g. ``"query: "`` for multilingual-e5).
        window: encode a text of more than this many tokens as consecutive windows of at most this many
            (:mod:`m3lit.inference.windows`); at most ``model.max_length``. None = one pass of up to
            ``max_length`` tokens. Not with ``mcls_interval``.

    Returns:
        :class:`EncodedTexts` in the order of ``texts``.
    """
    _check_request(batch_size, dense, sparse, colbert, pooling, mcls_interval, window)
    check_window(window, model.max_length)
    if window is None and max_length > model.max_length:
        _warn_once(
            "max_length=%d exceeds the model's limit; truncating to %d tokens", max_length, model.max_length
        )
        max_length = model.max_length
    device = torch.device(device) if device is not None else next(model.parameters()).device
    items, owners = _items(model.tokenizer, texts, max_length, prefix, mcls_interval, window)
    order = np.argsort([-len(ids) for ids, _ in items], kind="stable")  # longest first
    heads = {"dense": dense, "sparse": sparse, "colbert": colbert, "pooling": pooling}
    outputs, batch_size = _encode_sorted(
        model, [items[i] for i in order], batch_size, device, heads, progress
    )
    result = _in_input_order(outputs, order, batch_size, heads, model.hidden_size)
    if owners is not None:
        result.dense, result.sparse, result.colbert = merge_windows(
            owners,
            dense=result.dense,
            sparse=result.sparse,
            colbert=result.colbert,
            normalize=model.dense_head.normalize,
        )
    return result


def _check_request(
    batch_size: int,
    dense: bool,
    sparse: bool,
    colbert: bool,
    pooling: str,
    mcls_interval: int | None,
    window: int | None,
) -> None:
    """Reject an :func:`encode_texts` request whose options cannot go together, before any work."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not (dense or sparse or colbert):
        raise ValueError("encode_texts: request at least one of dense, sparse, colbert")
    if pooling not in POOLINGS:
        raise ValueError(f"encode_texts: pooling must be one of {list(POOLINGS)}, got {pooling!r}")
    if pooling == "mean" and mcls_interval is not None:
        raise ValueError(
            "encode_texts: MCLS (mcls_interval) averages CLS tokens; it cannot use pooling='mean'"
        )
    if window is not None and mcls_interval is not None:
        raise ValueError(MCLS_AND_WINDOW)


#: Why MCLS and windows do not go together (every entry point says it the same way).
MCLS_AND_WINDOW = (
    "choose MCLS (mcls_interval: extra CLS tokens in one pass) or windowed encoding (window), not both"
)


class WindowError(UsageError, ValueError):
    """A ``window`` that cannot work: a usage error (one ``error:`` line, exit status 2) and a ValueError."""


def check_window(window: int | None, positions: int | None = None, key: str = "window") -> None:
    """A window must hold ``<s>``, a token and ``</s>`` and fit the encoder's ``positions`` (``model.max_length``;
    None: not checked yet). ``key`` names the option in the message. Raises :class:`WindowError`."""
    if window is None:
        return
    if window < 3:
        raise WindowError(f"{key} must be >= 3 (<s>, a token, </s>), got {window}")
    if positions is not None and window > positions:
        raise WindowError(
            f"{key}={window} exceeds the model's {positions} positions; use {key} <= {positions}"
        )


def _items(
    tokenizer,
    texts: Sequence[str],
    max_length: int,
    prefix: str,
    mcls_interval: int | None,
    window: int | None,
) -> tuple[list[tuple[list[int], list[bool] | None]], list[int] | None]:
    """The model inputs of ``texts`` (token ids, inserted-CLS flags or None) and, when windowed, the text
    each window belongs to (None otherwise)."""
    if prefix:
        _check_texts(texts)
        texts = [prefix + text for text in texts]
    items = _prepare(tokenizer, texts, max_length, mcls_interval)
    if window is None:
        return items, None
    cls_id, eos_id = tokenizer.cls_token_id, tokenizer.eos_token_id
    rows, owners = split_windows([ids for ids, _ in items], window, cls_id, eos_id)
    return [(ids, None) for ids in rows], owners


def _encode_sorted(
    model: M3Model,
    sorted_items: Sequence[tuple[list[int], list[bool] | None]],
    batch_size: int,
    device: torch.device,
    heads: dict[str, Any],
    progress: bool | Any,
) -> tuple[dict[str, list], int]:
    """Run the batches of ``sorted_items`` and collect numpy outputs per head, in sorted order.

    Returns:
        ``({"dense": [(b, H) arrays], "sparse": [(ids, weights)], "colbert": [(n, Dc) arrays]}, batch size
        finally used)``.
    """
    outputs: dict[str, list] = {"dense": [], "sparse": [], "colbert": []}
    own_bar = progress is True
    bar = _progress_bar(len(sorted_items)) if own_bar else (progress or None)
    try:
        batches = forward_batches(model, sorted_items, batch_size, device, max_padding=MAX_PADDING, **heads)
        for chunk, out, used_batch_size in batches:
            if heads["dense"]:
                outputs["dense"].append(out.dense.float().cpu().numpy())
            if heads["sparse"]:
                outputs["sparse"].extend(
                    sparse_rows(out.sparse_weights.float().cpu().numpy(), out.token_ids.cpu().numpy())
                )
            if heads["colbert"]:
                vecs, keep = out.colbert.float().cpu().numpy(), out.colbert_mask.cpu().numpy()
                outputs["colbert"].extend(vecs[i][keep[i]] for i in range(len(chunk)))
            del out
            batch_size = used_batch_size  # smaller than asked after an out-of-memory back-off
            if bar is not None:
                bar.update(len(chunk))
    finally:
        if own_bar:
            bar.close()
    return outputs, batch_size


def _in_input_order(
    outputs: dict[str, list], order: np.ndarray, batch_size: int, heads: dict[str, Any], hidden_size: int
) -> EncodedTexts:
    """Undo the longest-first sort (``order``: sorted position -> input index) of every requested output."""
    inverse = np.empty(len(order), dtype=np.int64)
    inverse[order] = np.arange(len(order))
    result = EncodedTexts(batch_size=batch_size)
    if heads["dense"]:
        dense = outputs["dense"]
        stacked = np.concatenate(dense) if dense else np.zeros((0, hidden_size), np.float32)
        result.dense = stacked[inverse]
    if heads["sparse"]:
        result.sparse = [outputs["sparse"][i] for i in inverse]
    if heads["colbert"]:
        result.colbert = [outputs["colbert"][i] for i in inverse]
    return result


def is_out_of_memory(error: BaseException) -> bool:
    """True for CUDA/MPS/CPU allocation failures (``torch.OutOfMemoryError`` or an 'out of memory' message)."""
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


def sparse_to_dict(ids: np.ndarray, weights: np.ndarray) -> dict[str, np.float32]:
    """FlagEmbedding's ``lexical_weights`` form: ``{str(token_id): weight}``, insertion in given order."""
    return dict(zip(map(str, np.asarray(ids).tolist()), weights.astype(np.float32), strict=True))


# ---------------------------------------------------------------------------------------------- helpers
def _prepare(
    tokenizer, texts: Sequence[str], max_length: int, mcls_interval: int | None
) -> list[tuple[list[int], list[bool] | None]]:
    """Tokenised texts, each with its inserted-CLS flags when MCLS is on (None otherwise)."""
    ids = tokenize_texts(tokenizer, texts, max_length)
    if mcls_interval is None:
        return [(row, None) for row in ids]
    cls_id, eos_id = tokenizer.cls_token_id, tokenizer.eos_token_id
    return [insert_cls_tokens(row, mcls_interval, cls_id, eos_id, max_length) for row in ids]


def pad_batch(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token id lists -> (B, L) ``input_ids`` and (B, L) ``attention_mask`` (int64)."""
    length = max(len(ids) for ids in rows)
    input_ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
    for row, ids in enumerate(rows):
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, : len(ids)] = 1
    return input_ids, attention_mask


def forward_batches(
    model: M3Model,
    items: Sequence[tuple[list[int], list[bool] | None]],
    batch_size: int,
    device: torch.device,
    *,
    dense: bool = True,
    sparse: bool = True,
    colbert: bool = True,
    max_padding: float | None = None,
    pooling: str = "cls",
) -> Iterator[tuple[Sequence, M3Output, int]]:
    """Run ``model`` over ``items`` in consecutive batches (eval mode, inference mode, right padding).

    ``items`` are ``(token_ids, inserted_cls_flags or None)``; callers sort them by length first. Yields
    ``(chunk, output, batch_size)`` per batch: the items of the batch, the model's ``M3Output`` (rows in
    chunk order, padded to the chunk's longest) and the batch size in use. On out-of-memory the batch
    size shrinks to 3/4 and the batch is retried (down to 1). ``dense``/``sparse``/``colbert``: the heads run;
    ``pooling``: ``"cls"`` or ``"mean"`` for the dense output (see :func:`encode_texts`).
    ``max_padding``: also end a batch before its padded size (rows x longest) exceeds ``1 + max_padding``
    times its real tokens (items sorted longest first), keeping at least ``min(batch_size, 8)`` rows;
    None = fixed batches of ``batch_size``, as FlagEmbedding. The model's training flag is restored when
    the generator finishes or is closed.
    """
    was_training = model.training
    model.to(device).eval()
    pad_id = model.tokenizer.pad_token_id
    try:
        start = 0
        while start < len(items):
            rows = batch_size
            if max_padding is not None:
                rows = _rows_within_padding(items, start, batch_size, max_padding)
            chunk = items[start : start + rows]
            try:
                out = _forward(model, chunk, pad_id, device, dense, sparse, colbert, pooling)
            except RuntimeError as error:  # torch.OutOfMemoryError is a RuntimeError
                if not is_out_of_memory(error) or batch_size == 1:
                    raise
                batch_size = max(1, batch_size * 3 // 4)
                log.warning("out of memory; retrying with batch_size=%d", batch_size)
                _empty_cache(device)
                continue
            start += len(chunk)
            yield chunk, out, batch_size
    finally:
        model.train(was_training)


def _rows_within_padding(items: Sequence, start: int, batch_size: int, max_padding: float) -> int:
    """How many items from ``start`` (sorted longest first) keep rows x longest <= (1 + max_padding) x real."""
    longest, real, rows = len(items[start][0]), 0, 0
    for ids, _ in items[start : start + batch_size]:
        if rows >= min(batch_size, 8) and (rows + 1) * longest > (1 + max_padding) * (real + len(ids)):
            break
        real, rows = real + len(ids), rows + 1
    return rows


def encoder_mask(model: M3Model, attention_mask: torch.Tensor) -> torch.Tensor | None:
    """The cheapest padding mask for ``model``'s encoder that gives the same hidden states.

    With PyTorch SDPA attention, a (B, 1, 1, L) boolean key mask (broadcast over heads and queries; True =
    attend), or None when nothing is padded. Transformers would otherwise expand the (B, L) mask into a
    materialised (B, 1, L, L) one per forward pass (B * L^2 elements: 64M at B=256, L=500), which cost
    ~15% of an encoder pass of the tiny benchmark model; the hidden states at real tokens are bitwise
    identical. Other attention implementations (eager, flash-attention-2) get the (B, L) mask unchanged.
    """
    if getattr(model.encoder.config, "_attn_implementation", None) not in ("sdpa", ATTENTION_NAME):
        return attention_mask
    if bool(attention_mask.all()):
        return None
    return attention_mask.bool()[:, None, None, :]


def _forward(
    model, chunk, pad_id: int, device, dense: bool, sparse: bool, colbert: bool, pooling: str = "cls"
) -> M3Output:
    """Right-pad one batch and run the model (MCLS when the items carry inserted-CLS flags)."""
    input_ids, attention_mask = pad_batch([ids for ids, _ in chunk], pad_id)
    input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
    with torch.inference_mode():
        if chunk[0][1] is not None:
            inserted = torch.zeros(input_ids.shape, dtype=torch.bool)
            for row, (ids, flags) in enumerate(chunk):
                inserted[row, : len(ids)] = torch.tensor(flags, dtype=torch.bool)
            return mcls_forward(
                model,
                input_ids,
                attention_mask,
                inserted.to(device),
                dense=dense,
                sparse=sparse,
                colbert=colbert,
            )
        hidden = model.encode_hidden(input_ids, encoder_mask(model, attention_mask))
        cls_dense = dense and pooling == "cls"
        out = model.heads(hidden, input_ids, attention_mask, dense=cls_dense, sparse=sparse, colbert=colbert)
        if dense and not cls_dense:  # mean pooling over the real tokens (special tokens included, as e5)
            out.dense = mean_pool(hidden, attention_mask, normalize=model.dense_head.normalize)
        return out


def _progress_bar(total: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="encode", unit="text")


_WARNED: set[str] = set()


def _warn_once(message: str, *args: Any) -> None:
    """Log a warning the first time a given message (with its arguments) occurs in this process."""
    key = message % args
    if key not in _WARNED:
        _WARNED.add(key)
        log.warning(message, *args)


def _empty_cache(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
