"""Offline tokenizer builder: a small Unigram tokenizer with XLM-RoBERTa's special tokens and ids.

Nothing can be downloaded in tests or in the offline demo, so m3lit trains its own tokenizer with the
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

Run ``python -m m3lit.tokenizer --texts corpus.txt --vocab-size 8000 --out DIR`` to build one from a
text file (one document per line).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

__all__ = ["SPECIAL_TOKENS", "build_tokenizer", "load_or_build_tokenizer"]

#: XLM-R's special tokens in id order; ``<mask>`` is appended after the learnt vocabulary.
SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>")
MASK_TOKEN = "<mask>"


def build_tokenizer(texts: Iterable[str], vocab_size: int = 8000) -> PreTrainedTokenizerFast:
    """Train a Unigram tokenizer on ``texts`` with XLM-R's special tokens at ids 0..3 and ``<mask>`` last.

    Args:
        texts: training documents (any iterable of strings; it is consumed once).
        vocab_size: target size including the special tokens. The trainer may return fewer pieces on a
            small corpus; ``len(tokenizer)`` is the real size.

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
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        cls_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token=MASK_TOKEN,
        model_max_length=8192,
        padding_side="right",
    )


def load_or_build_tokenizer(cache_dir: str | Path, texts: Iterable[str], vocab_size: int = 8000):
    """Return the tokenizer cached in ``cache_dir``, building and saving it there first if absent.

    The cache is keyed by the caller (e.g. the demo corpus puts its hash in ``cache_dir``'s name).
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
