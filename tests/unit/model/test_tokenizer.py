"""The offline tokenizer builder: XLM-R special ids, templates, and run-to-run reproducibility."""

from __future__ import annotations

from conftest import builtin_docstrings

from m3lit.model.tiny_tokenizer import SPECIAL_TOKENS, build_tokenizer


def test_special_tokens_keep_xlmr_ids(tokenizer):
    assert [tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3]
    assert tokenizer.mask_token_id == len(tokenizer) - 1
    assert (
        tokenizer.cls_token_id,
        tokenizer.pad_token_id,
        tokenizer.sep_token_id,
        tokenizer.unk_token_id,
    ) == (0, 1, 2, 3)


def test_single_and_pair_templates(tokenizer):
    single = tokenizer("open a file")["input_ids"]
    assert single[0] == 0 and single[-1] == 2 and 2 not in single[1:-1]
    pair = tokenizer("open", "file")["input_ids"]
    assert pair[0] == 0 and pair[-1] == 2 and pair.count(2) == 3


def test_same_texts_give_the_same_tokenizer():
    texts = builtin_docstrings()
    first = build_tokenizer(texts, vocab_size=400).backend_tokenizer.to_str()
    second = build_tokenizer(texts, vocab_size=400).backend_tokenizer.to_str()
    assert first == second
