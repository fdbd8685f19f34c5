"""Hard-negative mining with a trained m3lit model (dense retrieval), like FlagEmbedding's ``hn_mine``.

Run (``key=value`` options, as every m3lit command; ``--help`` lists them with their defaults)::

    python -m m3lit.corpora.mining model=MODEL_DIR input=train.jsonl output=train_minedHN.jsonl \\
        [candidate_pool=corpus.jsonl] [range=10-210] [negative_number=15] [seed=42]

For every line of ``input`` (FlagEmbedding schema, validated as for training): encode the query and the
candidate pool with the model's dense head (:func:`m3lit.inference.encoding.encode_texts`), retrieve the top
``hi`` candidates (:class:`m3lit.retrieval.index.dense.DenseIndex`, exact inner product), keep ranks
``[lo, hi)`` (skipping the top ranks, which are often unlabelled positives), drop the line's positives
and the query itself, and sample ``negative_number`` of them without replacement. When fewer remain,
random pool texts (again never a positive or the query) fill up, as hn_mine does. The pool is
``candidate_pool`` (JSONL with a ``text`` field per line) or, by default, every distinct ``pos`` and
``neg`` text of the input.

The output keeps every field of the input line except ``neg`` (replaced) and the teacher scores
``pos_scores``/``neg_scores`` (dropped: they no longer align with the new negatives).

The input files and the model are checked before the model loads; a user error ends the command with one
``error: ...`` line (exit status 2 for a bad option, 1 for a bad file or model; ``--debug``: traceback).
"""

from __future__ import annotations

import functools
import json
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from m3lit.data.schema import Example, read_jsonl
from m3lit.files.errors import PathError, UsageError, run_command
from m3lit.files.jsonl import DataError, read_records, write_jsonl
from m3lit.files.options import command_help, parse_key_values
from m3lit.retrieval.config import LENGTH_ALIASES

__all__ = ["OPTIONS", "MiningResult", "main", "mine_hard_negatives", "parse_range", "select_negatives"]

log = logging.getLogger(__name__)

#: Command-line options (``key=value``) and their defaults.
OPTIONS: dict[str, Any] = {
    "model": None,  # m3lit export / FlagEmbedding folder, hub id or Lightning .ckpt; required
    "input": None,  # training JSONL (query, pos, neg, ...); required
    "output": None,  # the mined JSONL to write; required
    "candidate_pool": None,  # JSONL with a 'text' field per line; null: the input's distinct passages
    "range": "10-210",  # retrieval ranks to sample from, lo-hi (0-based, hi exclusive)
    "negative_number": 15,  # negatives per line
    "batch_size": 256,  # encoding batch size
    "query_max_len": 512,  # query truncation in tokens (data.query_max_len's spelling)
    "passage_max_len": 512,  # passage truncation in tokens (data.passage_max_len's spelling)
    "query_instruction": None,  # instruction prepended to queries (off for BGE-M3)
    "seed": 42,  # sampling seed
    "device": None,  # cpu, cuda, ...; null: cuda when available
    "progress": True,  # progress bars while encoding and selecting
}


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
        raise UsageError(f"range must look like 10-210, got {text!r}") from None
    if not 0 <= lo < hi:
        raise UsageError(f"range needs 0 <= lo < hi, got {text!r}")
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
    from m3lit.retrieval.index.dense import DenseIndex

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
    filled, rows = 0, []
    for row, ex in enumerate(tqdm(examples, desc="select negatives", unit="line", disable=not progress)):
        negatives, was_filled = select_negatives(
            ranking.indices[row].tolist(), pool, ex, rank_range, negative_number, rng
        )
        filled += was_filled
        kept = {k: v for k, v in raw[ex.line].items() if k not in ("pos_scores", "neg_scores")}
        rows.append({**kept, "neg": negatives})
    Path(output_file).parent.mkdir(parents=True, exist_ok=True)
    write_jsonl(output_file, rows)
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


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (``python -m m3lit.corpora.mining`` / ``m3lit-mine-negatives``); a user error
    prints one ``error:`` line and raises ``SystemExit`` (:mod:`m3lit.files.errors`)."""
    return run_command(_run, argv, help=lambda: command_help(__name__, OPTIONS))


def _run(args: list[str]) -> int:
    options = parse_key_values(
        args, OPTIONS, "mining", required=("model", "input", "output"), aliases=LENGTH_ALIASES
    )
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    rank_range = parse_range(options["range"])
    for key in ("input", "candidate_pool"):
        if options[key] is not None and not Path(options[key]).is_file():
            raise PathError(key, options[key], "no such file")
    from m3lit.model.device import default_device
    from m3lit.model.training_checkpoint import load_model

    device = options["device"] or default_device()
    log.info("loading %s", options["model"])
    model = load_model(options["model"], key="model")  # checks the reference first
    result = mine_hard_negatives(
        model,
        options["input"],
        options["output"],
        candidate_pool=options["candidate_pool"],
        rank_range=rank_range,
        negative_number=options["negative_number"],
        batch_size=options["batch_size"],
        query_max_len=options["query_max_len"],
        passage_max_len=options["passage_max_len"],
        query_instruction=options["query_instruction"],
        seed=options["seed"],
        device=device,
        progress=options["progress"],
    )
    print(
        json.dumps(
            {"output": options["output"], **vars(result), "negatives_per_line": options["negative_number"]}
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
