"""Offline tokenizer builder: a small Unigram tokenizer with XLM-RoBERTa's special tokens and ids.

Nothing can be downloaded in tests or in offline runs, so m3lit trains its own tokenizer with the
`tokenizers` library. It mirrors the XLM-R conventions that the rest of the code relies on (and reads
back from the tokenizer rather than hard-coding):

====  =========  =================================
 id    token      role
====  =========  =================================
 0     ``<s>``    bos / cls
 1     ``<pad>``  padding
 2     ``</s>``   eos / sep
 3     ``<unk>``  unknown
 V-1   ``<mask>`` mask (last id, as in XLM-R)
====  =========  =================================

Pre-tokenisation is SentencePiece's Metaspace (``▁`` marks a word start) and a single text is wrapped
as ``<s> text </s>``; a pair as ``<s> a </s></s> b </s>``, as XLM-R does.

Run ``python -m m3lit.model.tiny_tokenizer --texts corpus.txt --vocab-size 8000 --out DIR`` to build one from a
text file (one document per line).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

__all__ = ["SPECIAL_TOKENS", "build_tokenizer", "load_or_build_tokenizer", "wrap_xlmr_tokenizer"]

#: XLM-R's special tokens in id order; ``<mask>`` is appended after the learnt vocabulary.
SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>")
MASK_TOKEN = "<mask>"


def build_tokenizer(texts: Iterable[str], vocab_size: int = 8000) -> PreTrainedTokenizerFast:
    """Train a Unigram tokenizer on ``texts`` with XLM-R's special tokens at ids 0..3 and ``<mask>`` last.

    Args:
        texts: training documents (any iterable of strings; it is consumed once).
        vocab_size: target size including the special tokens. The trainer may return fewer pieces on a
            small corpus; ``len(tokenizer)`` is the real size.

    The learnt vocabulary is canonicalised (scores rounded, ties ordered), so the same texts give the
    same tokenizer on every run.

    Returns:
        A ``PreTrainedTokenizerFast`` that ``save_pretrained`` writes as ``tokenizer.json`` +
        ``tokenizer_config.json`` + ``special_tokens_map.json``, loadable by ``AutoTokenizer`` (and so
        by FlagEmbedding and sentence-transformers).
    """
    if vocab_size < len(SPECIAL_TOKENS) + 2:
        raise ValueError(
            f"vocab_size={vocab_size} is too small for the {len(SPECIAL_TOKENS) + 1} special tokens"
        )
    backend = Tokenizer(models.Unigram())
    backend.normalizer = normalizers.NFKC()
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size - 1,  # leave room for <mask>
        special_tokens=list(SPECIAL_TOKENS),
        unk_token="<unk>",
        shrinking_factor=0.75,
        max_piece_length=16,
        n_sub_iterations=2,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    state = json.loads(backend.to_str())
    state["model"]["vocab"] = _canonical_unigram_vocab(state["model"]["vocab"])
    backend = Tokenizer.from_str(json.dumps(state))
    backend.add_special_tokens([MASK_TOKEN])
    bos, eos = SPECIAL_TOKENS[0], SPECIAL_TOKENS[2]
    backend.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, backend.token_to_id(bos)), (eos, backend.token_to_id(eos))],
    )
    for expected_id, token in enumerate(SPECIAL_TOKENS):
        actual = backend.token_to_id(token)
        if actual != expected_id:  # pragma: no cover - guards a change in the tokenizers library
            raise RuntimeError(f"special token {token!r} got id {actual}, expected {expected_id}")
    return wrap_xlmr_tokenizer(backend)


def wrap_xlmr_tokenizer(backend: Tokenizer, model_max_length: int = 8192) -> PreTrainedTokenizerFast:
    """Wrap a ``tokenizers`` backend as a Hugging Face tokenizer with XLM-R's special-token roles.

    ``<s>`` is bos and cls, ``</s>`` eos and sep, plus ``<pad>``, ``<unk>`` and ``<mask>``; their ids are
    whatever the backend gives them (m3lit always reads ids from the tokenizer).
    """
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        cls_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token=MASK_TOKEN,
        model_max_length=model_max_length,
        padding_side="right",
    )


def _canonical_unigram_vocab(vocab: list[list], decimals: int = 4) -> list[list]:
    """Make a freshly trained Unigram vocabulary reproducible run to run.

    The ``tokenizers`` Unigram trainer finds the same pieces on every run, but their log-probabilities
    differ in the last digits (parallel float sums) and equal-score pieces come out in a run-dependent
    order (hash-map iteration). The single characters the trainer appends below every learnt piece (a
    ladder of scores 1e-4 apart, assigned in that run-dependent order) all get the ladder's top score.
    Rounding the scores to ``decimals`` and ordering the pieces by (score descending, piece) then gives
    identical files; the special tokens keep ids 0..3. Segmentation is unaffected but for score changes
    below 1e-3.
    """
    head, tail = vocab[: len(SPECIAL_TOKENS)], vocab[len(SPECIAL_TOKENS) :]
    if [piece for piece, _ in head] != list(SPECIAL_TOKENS):
        raise RuntimeError(f"unexpected special tokens at the start of the vocabulary: {head}")
    ladder: set[str] = set()
    previous = None
    for piece, score in sorted(tail, key=lambda x: (x[1], len(x[0]) > 1, x[0])):  # lowest scores first
        if len(piece) > 1 or (previous is not None and score - previous > 1.5e-4):
            break
        ladder.add(piece)
        previous = score
    top = max((score for piece, score in tail if piece in ladder), default=0.0)
    tail = [[piece, top if piece in ladder else score] for piece, score in tail]
    tail = sorted(([piece, round(score, decimals)] for piece, score in tail), key=lambda x: (-x[1], x[0]))
    return head + tail


def load_or_build_tokenizer(cache_dir: str | Path, texts: Iterable[str], vocab_size: int = 8000):
    """Return the tokenizer cached in ``cache_dir``, building and saving it there first if absent.

    The cache is keyed by the caller (e.g. a corpus puts its hash in ``cache_dir``'s name).
    """
    cache_dir = Path(cache_dir)
    if (cache_dir / "tokenizer.json").exists():
        return PreTrainedTokenizerFast.from_pretrained(str(cache_dir))
    tokenizer = build_tokenizer(texts, vocab_size=vocab_size)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(cache_dir))
    return tokenizer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", required=True, help="text file, one document per line")
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--out", required=True, help="output folder for tokenizer.json and configs")
    args = parser.parse_args(argv)
    with open(args.texts, encoding="utf-8") as handle:
        tokenizer = build_tokenizer((line.rstrip("\n") for line in handle), vocab_size=args.vocab_size)
    tokenizer.save_pretrained(args.out)
    print(f"saved a {len(tokenizer)}-token tokenizer to {args.out}")


if __name__ == "__main__":
    main()
