"""Hard-negative mining with a trained m3lit model (dense retrieval), like FlagEmbedding's ``hn_mine``.

Run::

    python -m m3lit.data.mining --model MODEL_DIR --input train.jsonl --output train_minedHN.jsonl \\
        [--candidate-pool corpus.jsonl] [--range 10-210] [--negative-number 15] [--seed 42]

For every line of ``--input`` (FlagEmbedding schema, validated as for training): encode the query and the
candidate pool with the model's dense head (:func:`m3lit.inference.encoding.encode_texts`), retrieve the top
``hi`` candidates (:class:`m3lit.retrieval.dense.DenseIndex`, exact inner product), keep ranks
``[lo, hi)`` (skipping the top ranks, which are often unlabelled positives), drop the line's positives
and the query itself, and sample ``--negative-number`` of them without replacement. When fewer remain,
random pool texts (again never a positive or the query) fill up, as hn_mine does. The pool is
``--candidate-pool`` (JSONL with a ``text`` field per line) or, by default, every distinct ``pos`` and
``neg`` text of the input.

The output keeps every field of the input line except ``neg`` (replaced) and the teacher scores
``pos_scores``/``neg_scores`` (dropped: they no longer align with the new negatives).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from m3lit.data.schema import Example, read_jsonl
from m3lit.files.jsonl import DataError, read_records

__all__ = ["MiningResult", "main", "mine_hard_negatives", "parse_range", "select_negatives"]

log = logging.getLogger(__name__)


@dataclass
class MiningResult:
    """What :func:`mine_hard_negatives` wrote: line count, pool size, lines that needed random fill-up."""

    lines: int
    pool: int
    filled_randomly: int


def parse_range(text: str) -> tuple[int, int]:
    """``"10-210"`` -> ``(10, 210)``; ranks are 0-based, ``hi`` exclusive.

    >>> parse_range("2-200")
    (2, 200)
    """
    try:
        lo, hi = (int(x) for x in text.split("-"))
    except ValueError:
        raise ValueError(f"--range must look like 10-210, got {text!r}") from None
    if not 0 <= lo < hi:
        raise ValueError(f"--range needs 0 <= lo < hi, got {text!r}")
    return lo, hi


def select_negatives(
    ranked: Sequence[int],
    pool: Sequence[str],
    example: Example,
    rank_range: tuple[int, int],
    number: int,
    rng: random.Random,
) -> tuple[list[str], bool]:
    """Negatives for one line from its ranked pool indices (best first).

    Returns:
        ``(negatives, filled)``: ``number`` texts (fewer only if the pool is too small), and whether
        random pool texts had to fill up.
    """
    banned = set(example.pos) | {example.query}
    lo, hi = rank_range
    candidates = [i for i in ranked[lo:hi] if i >= 0 and pool[i] not in banned]  # -1 pads short lists
    picked = rng.sample(candidates, number) if len(candidates) > number else candidates
    filled = len(picked) < number
    if filled:
        chosen = set(picked)
        rest = [i for i in range(len(pool)) if i not in chosen and pool[i] not in banned]
        picked = picked + rng.sample(rest, min(number - len(picked), len(rest)))
    return [pool[i] for i in picked], filled


def mine_hard_negatives(
    model,
    input_file: str | Path,
    output_file: str | Path,
    *,
    candidate_pool: str | Path | None = None,
    rank_range: tuple[int, int] = (10, 210),
    negative_number: int = 15,
    batch_size: int = 256,
    query_max_len: int = 512,
    passage_max_len: int = 512,
    query_instruction: str | None = None,
    instruction_format: str = "{}{}",
    seed: int = 42,
    device: str | None = None,
    progress: bool = False,
) -> MiningResult:
    """Mine hard negatives for ``input_file`` into ``output_file`` (see the module docstring).

    Args:
        model: an :class:`~m3lit.model.M3Model` (its dense head is used).
        input_file: training JSONL (FlagEmbedding schema).
        output_file: where to write the mined JSONL.
        candidate_pool: JSONL with a ``text`` field per line, or None for the input's passages.
        rank_range: ``(lo, hi)``: sample from retrieval ranks ``lo <= r < hi``.
        negative_number: negatives per line.
        batch_size / query_max_len / passage_max_len / device: encoding settings.
        query_instruction / instruction_format: optional query instruction (off for BGE-M3).
        seed: seeds the sampling.
        progress: tqdm bars while encoding queries and pool, and while selecting negatives.
    """
    from m3lit.inference.encoding import encode_texts
    from m3lit.retrieval.dense import DenseIndex

    examples = read_jsonl(input_file)
    raw = dict(read_records(input_file))  # line number -> the object, extra keys kept for the output
    pool = _pool(candidate_pool, examples)
    if not pool:
        raise DataError("the candidate pool is empty", path=candidate_pool or input_file)
    queries = [
        instruction_format.format(query_instruction, ex.query) if query_instruction else ex.query
        for ex in examples
    ]
    encode = functools.partial(encode_texts, model, batch_size=batch_size, device=device, sparse=False)
    q = encode(
        queries, max_length=query_max_len, progress=_bar(len(queries), "encode queries", progress)
    ).dense
    p = encode(pool, max_length=passage_max_len, progress=_bar(len(pool), "encode pool", progress)).dense
    index = DenseIndex(p.shape[1], capacity=len(pool))
    index.add(p)
    ranking = index.search(q, k=min(rank_range[1], len(pool)))
    rng = random.Random(seed)
    filled = 0
    Path(output_file).parent.mkdir(parents=True, exist_ok=True)
    with open(output_file, "w", encoding="utf-8", newline="\n") as handle:
        for row, ex in enumerate(tqdm(examples, desc="select negatives", unit="line", disable=not progress)):
            negatives, was_filled = select_negatives(
                ranking.indices[row].tolist(), pool, ex, rank_range, negative_number, rng
            )
            filled += was_filled
            obj = {k: v for k, v in raw[ex.line].items() if k not in ("pos_scores", "neg_scores")}
            obj["neg"] = negatives
            handle.write(json.dumps(obj, ensure_ascii=False) + "\n")
    if filled:
        log.warning(
            "%d of %d lines had fewer than %d candidates in ranks %s; filled up with random pool texts",
            filled,
            len(examples),
            negative_number,
            rank_range,
        )
    return MiningResult(len(examples), len(pool), filled)


def _bar(total: int, desc: str, enabled: bool):
    """A tqdm bar for :func:`~m3lit.inference.encoding.encode_texts` (False: none)."""
    return tqdm(total=total, desc=desc, unit="text") if enabled else False


def _pool(candidate_pool: str | Path | None, examples: Sequence[Example]) -> list[str]:
    if candidate_pool is None:
        texts = [t for ex in examples for t in (*ex.pos, *ex.neg)]
    else:
        texts = [text for _, text in read_records(candidate_pool, _pool_text)]
    return list(dict.fromkeys(texts))  # distinct, first-occurrence order (deterministic)


def _pool_text(obj: dict) -> str:
    """The ``text`` of one candidate-pool line."""
    text = obj.get("text")
    if not isinstance(text, str) or not text.strip():
        raise DataError("missing, not a string, or empty", field="text")
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Mine hard negatives with a trained m3lit model (dense retrieval)."
    )
    parser.add_argument(
        "--model", required=True, help="m3lit export / FlagEmbedding folder, hub id or Lightning .ckpt"
    )
    parser.add_argument("--input", required=True, help="training JSONL (query, pos, neg, ...)")
    parser.add_argument("--output", required=True, help="output JSONL")
    parser.add_argument(
        "--candidate-pool", default=None, help="JSONL with a 'text' field; default: the input's passages"
    )
    parser.add_argument(
        "--range", default="10-210", help="retrieval ranks to sample from, lo-hi (0-based, hi exclusive)"
    )
    parser.add_argument("--negative-number", type=int, default=15, help="negatives per line")
    parser.add_argument("--batch-size", type=int, default=256, help="encoding batch size")
    # the spelling of data.query_max_len / passage_max_len; the *-length forms are deprecated aliases
    parser.add_argument(
        "--query-max-len", "--query-max-length", type=int, default=512, help="query truncation"
    )
    parser.add_argument(
        "--passage-max-len", "--passage-max-length", type=int, default=512, help="passage truncation"
    )
    parser.add_argument(
        "--query-instruction", default=None, help="instruction prepended to queries (off for BGE-M3)"
    )
    parser.add_argument("--seed", type=int, default=42, help="sampling seed")
    parser.add_argument("--device", default=None, help="cpu, cuda, ...; default: cuda if available")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    for old in ("--query-max-length", "--passage-max-length"):
        if any(a == old or a.startswith(old + "=") for a in (argv if argv is not None else sys.argv[1:])):
            log.warning(
                "%s is deprecated: use %s (the training key's spelling)", old, old.removesuffix("gth")
            )
    import torch

    from m3lit.model.training_checkpoint import load_model

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    log.info("loading %s", args.model)
    model = load_model(args.model, key="--model")
    result = mine_hard_negatives(
        model,
        args.input,
        args.output,
        candidate_pool=args.candidate_pool,
        rank_range=parse_range(args.range),
        negative_number=args.negative_number,
        batch_size=args.batch_size,
        query_max_len=args.query_max_len,
        passage_max_len=args.passage_max_len,
        query_instruction=args.query_instruction,
        seed=args.seed,
        device=device,
        progress=not args.no_progress,
    )
    print(json.dumps({"output": args.output, **vars(result), "negatives_per_line": args.negative_number}))


if __name__ == "__main__":
    raise SystemExit(main())
