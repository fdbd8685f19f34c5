"""Hard-negative mining with a trained m3lit model, like FlagEmbedding's ``hn_mine``, with false-negative filters.

Run (``key=value`` options, as every m3lit command; ``--help`` lists them with their defaults)::

    python -m m3lit.corpora.mining model=MODEL_DIR input=train.jsonl output=train_minedHN.jsonl \\
        [candidate_pool=corpus.jsonl] [range=10-210] [negative_number=15] [seed=42] \\
        [candidates=dense] [max_score=0.9] [absolute_margin=0.05] [relative_margin=0.05] [write_scores=true]

For every line of ``input`` (FlagEmbedding schema, validated as for training): encode the query and the
candidate pool with the model, retrieve the top ``hi`` candidates, keep ranks ``[lo, hi)`` (skipping the top
ranks, which are often unlabelled positives), drop the line's positives and the query itself, drop the
candidates the false-negative filters reject, and sample ``negative_number`` of the rest without replacement.
When fewer remain, random pool texts (again never a positive or the query, and passing the filters) fill up,
as hn_mine does. The pool is ``candidate_pool`` (JSONL with a ``text`` field per line) or, by default, every
distinct ``pos`` and ``neg`` text of the input.

``candidates`` picks the score s that ranks the pool and that the filters compare (BGE-M3, arXiv:2402.03216
§3.2): ``dense`` (s_dense, exact inner product, :class:`~m3lit.retrieval.index.dense.DenseIndex`; the default
and hn_mine's), ``sparse`` (s_lex, :class:`~m3lit.retrieval.index.sparse.SparseIndex`) or ``all`` (the dense
top ``hi`` re-ranked by s_dense + 0.3 s_lex + s_mul, Eq. (5) with the training ensemble's weights, as
``m3lit.evaluate``'s All mode). Scores come from :func:`m3lit.inference.pair_scores.pair_scores`.

False-negative filters (each off when null; in the spirit of sentence-transformers' ``mine_hard_negatives``),
with s+ the line's lowest positive score (a candidate above the weakest known positive is as suspect):

* ``max_score``: drop a candidate with s > max_score;
* ``absolute_margin``: drop a candidate with s > s+ - absolute_margin;
* ``relative_margin``: drop a candidate with s > s+ * (1 - relative_margin).

Each filter's count is how many rank-range candidates it rejects (a candidate may fail several; ``removed``
counts each rejected candidate once). The counts are logged, returned and, from the command, written to
``<output>.report.json``.

The output keeps every field of the input line except ``neg`` (replaced) and the teacher scores
``pos_scores``/``neg_scores``: dropped (they no longer align with the new negatives), or, with
``write_scores``, replaced by the mining model's scores s of the positives and of the new negatives, aligned.

The input files and the model are checked before the model loads; a user error ends the command with one
``error: ...`` line (exit status 2 for a bad option, 1 for a bad file or model; ``--debug``: traceback).
"""

from __future__ import annotations

import functools
import json
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from m3lit.data.schema import Example, read_jsonl
from m3lit.files.errors import PathError, UsageError, run_command
from m3lit.files.jsonl import DataError, read_records, write_jsonl
from m3lit.files.options import command_help, parse_key_values
from m3lit.retrieval.config import LENGTH_ALIASES

__all__ = [
    "CANDIDATES",
    "OPTIONS",
    "MiningResult",
    "NegativeFilters",
    "main",
    "mine_hard_negatives",
    "parse_range",
    "select_negatives",
]

log = logging.getLogger(__name__)

#: ``candidates`` -> the weights (w_d, w_s, w_c) of the score that ranks and filters (module docstring).
CANDIDATES: dict[str, tuple[float, float, float]] = {
    "dense": (1.0, 0.0, 0.0),
    "sparse": (0.0, 1.0, 0.0),
    "all": (1.0, 0.3, 1.0),
}

#: Command-line options (``key=value``) and their defaults.
OPTIONS: dict[str, Any] = {
    "model": None,  # m3lit export / FlagEmbedding folder, hub id or Lightning .ckpt; required
    "input": None,  # training JSONL (query, pos, neg, ...); required
    "output": None,  # the mined JSONL to write; required
    "candidate_pool": None,  # JSONL with a 'text' field per line; null: the input's distinct passages
    "range": "10-210",  # retrieval ranks to sample from, lo-hi (0-based, hi exclusive)
    "negative_number": 15,  # negatives per line
    "candidates": "dense",  # score that ranks and filters the pool: dense | sparse | all (s_dense + 0.3 s_lex + s_mul)
    "max_score": None,  # drop candidates scoring above this (null: off)
    "absolute_margin": None,  # drop candidates scoring above (lowest positive score - margin) (null: off)
    "relative_margin": None,  # drop candidates scoring above (lowest positive score * (1 - margin)) (null: off)
    "write_scores": False,  # write the model's scores of pos and the new neg as pos_scores/neg_scores
    "report": None,  # filter counts as JSON; null: <output>.report.json
    "batch_size": 256,  # encoding batch size
    "query_max_len": 512,  # query truncation in tokens (data.query_max_len's spelling)
    "passage_max_len": 512,  # passage truncation in tokens (data.passage_max_len's spelling)
    "query_instruction": None,  # instruction prepended to queries (off for BGE-M3)
    "seed": 42,  # sampling seed
    "device": None,  # cpu, cuda, ...; null: cuda when available
    "progress": True,  # progress bars while encoding and selecting
}


@dataclass(frozen=True)
class NegativeFilters:
    """The false-negative filters (module docstring); None turns one off.

    >>> NegativeFilters(max_score=0.9, absolute_margin=0.1).failing(score=0.85, pos_score=0.9)
    ['absolute_margin']
    """

    max_score: float | None = None
    absolute_margin: float | None = None
    relative_margin: float | None = None

    def __post_init__(self) -> None:
        for name in ("max_score", "absolute_margin", "relative_margin"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise UsageError(f"{name} must be a number or null, got {value!r}")
        if self.absolute_margin is not None and self.absolute_margin < 0:
            raise UsageError(f"absolute_margin must be >= 0, got {self.absolute_margin}")
        if self.relative_margin is not None and not 0 <= self.relative_margin < 1:
            raise UsageError(f"relative_margin must lie in [0, 1), got {self.relative_margin}")

    @property
    def names(self) -> list[str]:
        """The filters that are on."""
        return [f.name for f in fields(self) if getattr(self, f.name) is not None]

    def failing(self, score: float, pos_score: float) -> list[str]:
        """The filters that reject a candidate of score ``score`` for a line whose lowest positive scores
        ``pos_score``."""
        out = []
        if self.max_score is not None and score > self.max_score:
            out.append("max_score")
        if self.absolute_margin is not None and score > pos_score - self.absolute_margin:
            out.append("absolute_margin")
        if self.relative_margin is not None and score > pos_score * (1 - self.relative_margin):
            out.append("relative_margin")
        return out


@dataclass
class MiningResult:
    """What :func:`mine_hard_negatives` wrote and removed.

    Attributes:
        lines: lines written.
        pool: candidate pool size.
        filled_randomly: lines that needed random fill-up.
        considered: rank-range candidates seen by the filters (positives and the query excluded).
        removed: candidates rejected by at least one filter.
        removed_by: per filter that is on, the candidates it rejects.
    """

    lines: int
    pool: int
    filled_randomly: int
    considered: int = 0
    removed: int = 0
    removed_by: dict[str, int] = field(default_factory=dict)


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
    keep: Callable[[list[int]], list[int]] | None = None,
) -> tuple[list[int], bool]:
    """Pool indices of the negatives of one line, from its ranked pool indices (best first).

    Args:
        keep: the false-negative filter: given candidate indices, those that pass (order kept); None = all.

    Returns:
        ``(negatives, filled)``: ``number`` pool indices (fewer only if the pool is too small), and whether
        random pool texts had to fill up.
    """
    banned = set(example.pos) | {example.query}
    keep = keep or (lambda indices: indices)
    lo, hi = rank_range
    candidates = keep([i for i in ranked[lo:hi] if i >= 0 and pool[i] not in banned])  # -1 pads short lists
    picked = rng.sample(candidates, number) if len(candidates) > number else candidates
    filled = len(picked) < number
    if filled:
        chosen = set(picked)
        rest = keep([i for i in range(len(pool)) if i not in chosen and pool[i] not in banned])
        picked = picked + rng.sample(rest, min(number - len(picked), len(rest)))
    return picked, filled


def mine_hard_negatives(
    model,
    input_file: str | Path,
    output_file: str | Path,
    *,
    candidate_pool: str | Path | None = None,
    rank_range: tuple[int, int] = (10, 210),
    negative_number: int = 15,
    candidates: str = "dense",
    filters: NegativeFilters | None = None,
    write_scores: bool = False,
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
        model: an :class:`~m3lit.model.M3Model` (the heads that ``candidates`` uses).
        input_file: training JSONL (FlagEmbedding schema).
        output_file: where to write the mined JSONL.
        candidate_pool: JSONL with a ``text`` field per line, or None for the input's passages.
        rank_range: ``(lo, hi)``: sample from retrieval ranks ``lo <= r < hi``.
        negative_number: negatives per line.
        candidates: ``dense``, ``sparse`` or ``all`` (:data:`CANDIDATES`): the score that ranks and filters.
        filters: the false-negative filters (None: none).
        write_scores: write the scores of ``pos`` and of the new ``neg`` as ``pos_scores``/``neg_scores``.
        batch_size / query_max_len / passage_max_len / device: encoding settings.
        query_instruction / instruction_format: optional query instruction (off for BGE-M3).
        seed: seeds the sampling.
        progress: tqdm bars while encoding queries and pool, and while selecting negatives.
    """
    _check_candidates(candidates)
    filters = filters or NegativeFilters()
    examples = read_jsonl(input_file)
    raw = dict(read_records(input_file))  # line number -> the object, extra keys kept for the output
    pool = _pool(candidate_pool, examples)
    if not pool:
        raise DataError("the candidate pool is empty", path=candidate_pool or input_file)
    queries = [
        instruction_format.format(query_instruction, ex.query) if query_instruction else ex.query
        for ex in examples
    ]
    scored = write_scores or bool(filters.names)
    # to score them, the positives missing from the pool are encoded after it (never searched)
    texts = pool + (sorted({t for ex in examples for t in ex.pos} - set(pool)) if scored else [])
    row_of = {text: i for i, text in enumerate(texts)}
    encode = functools.partial(_encode, model, CANDIDATES[candidates], batch_size=batch_size, device=device)
    q = encode(queries, query_max_len, _bar(len(queries), "encode queries", progress))
    p = encode(texts, passage_max_len, _bar(len(texts), "encode pool", progress))
    ranking = _rank(model, q, p, len(pool), candidates, rank_range[1])
    scorer = _Scorer(q, p, CANDIDATES[candidates])
    rng = random.Random(seed)
    result, rows = MiningResult(len(examples), len(pool), 0, removed_by=dict.fromkeys(filters.names, 0)), []
    for row, ex in enumerate(tqdm(examples, desc="select negatives", unit="line", disable=not progress)):
        pos_scores = scorer(row, [row_of[t] for t in ex.pos]) if scored else []
        keep = _filter(filters, scorer, row, min(pos_scores, default=0.0), result) if filters.names else None
        picked, was_filled = select_negatives(ranking[row], pool, ex, rank_range, negative_number, rng, keep)
        result.filled_randomly += was_filled
        kept = {k: v for k, v in raw[ex.line].items() if k not in ("pos_scores", "neg_scores")}
        rows.append({**kept, "neg": [pool[i] for i in picked]})
        if write_scores:
            rows[-1].update(pos_scores=pos_scores, neg_scores=scorer(row, picked))
    Path(output_file).parent.mkdir(parents=True, exist_ok=True)
    write_jsonl(output_file, rows)
    _log_result(result, negative_number, rank_range, filters)
    return result


class _Scorer:
    """The mining score s of query row ``q`` with text rows (:func:`~m3lit.inference.pair_scores.pair_scores`),
    as Python floats rounded to float32's precision."""

    def __init__(self, queries, texts, weights: Sequence[float]) -> None:
        self.queries, self.texts, self.weights = queries, texts, weights

    def __call__(self, q: int, rows: Sequence[int]) -> list[float]:
        from m3lit.inference.pair_scores import pair_scores

        if not rows:
            return []
        return pair_scores(self.queries, self.texts, [q] * len(rows), list(rows), self.weights).tolist()


def _filter(filters: NegativeFilters, scorer: _Scorer, row: int, pos_score: float, result: MiningResult):
    """The ``keep`` function of :func:`select_negatives` for one line. The first call (the rank-range
    candidates) is counted in ``result``; later ones (random fill-up) are filtered alike, not counted."""
    calls = []

    def keep(indices: list[int]) -> list[int]:
        out = []
        for i, score in zip(indices, scorer(row, indices), strict=True):
            failing = filters.failing(score, pos_score)
            if not calls:
                result.considered += 1
                result.removed += bool(failing)
                for name in failing:
                    result.removed_by[name] += 1
            if not failing:
                out.append(i)
        calls.append(len(indices))
        return out

    return keep


def _encode(model, weights: Sequence[float], texts: list[str], max_length: int, progress, **options):
    from m3lit.inference.encoding import encode_texts
    from m3lit.inference.pair_scores import needed_heads

    return encode_texts(
        model, texts, max_length=max_length, progress=progress, **needed_heads(weights), **options
    )


def _rank(model, q, p, pool_size: int, candidates: str, depth: int) -> list[list[int]]:
    """Per query, the pool rows (< ``pool_size``) ranked by the ``candidates`` score, best first (-1 pads)."""
    from m3lit.retrieval.index.dense import DenseIndex
    from m3lit.retrieval.index.sparse import SparseIndex, sparse_matrix

    k = min(depth, pool_size)
    if candidates == "sparse":
        vocab = max(int(model.encoder.config.vocab_size), len(model.tokenizer))
        index = SparseIndex(vocab)
        index.add(p.sparse[:pool_size])
        return index.search(sparse_matrix(q.sparse, vocab), k=k).indices.tolist()
    index = DenseIndex(p.dense.shape[1], capacity=pool_size)
    index.add(p.dense[:pool_size])
    ranked = index.search(q.dense, k=k).indices
    if candidates == "dense":
        return ranked.tolist()
    from m3lit.inference.pair_scores import pair_scores

    valid = ranked >= 0
    scores = np.full(ranked.shape, -np.inf, np.float32)
    rows = np.nonzero(valid)
    scores[rows] = pair_scores(q, p, rows[0].tolist(), ranked[rows].tolist(), CANDIDATES["all"])
    order = np.argsort(-scores, axis=1, kind="stable")  # All re-ranks the dense top-k, ties in dense order
    return np.take_along_axis(ranked, order, axis=1).tolist()


def _log_result(
    result: MiningResult, negative_number: int, rank_range: tuple[int, int], filters: NegativeFilters
) -> None:
    if filters.names:
        log.info(
            "false-negative filters removed %d of %d candidates (%s)",
            result.removed,
            result.considered,
            ", ".join(f"{name}={getattr(filters, name)}: {n}" for name, n in result.removed_by.items()),
        )
    if result.filled_randomly:
        log.warning(
            "%d of %d lines had fewer than %d candidates in ranks %s; filled up with random pool texts",
            result.filled_randomly,
            result.lines,
            negative_number,
            rank_range,
        )


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
    _check_candidates(options["candidates"])
    filters = NegativeFilters(
        **{name: _number(name, options[name]) for name in ("max_score", "absolute_margin", "relative_margin")}
    )
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
        candidates=options["candidates"],
        filters=filters,
        write_scores=options["write_scores"],
        batch_size=options["batch_size"],
        query_max_len=options["query_max_len"],
        passage_max_len=options["passage_max_len"],
        query_instruction=options["query_instruction"],
        seed=options["seed"],
        device=device,
        progress=options["progress"],
    )
    summary = {
        "output": options["output"],
        **vars(result),
        "negatives_per_line": options["negative_number"],
        "candidates": options["candidates"],
        "filters": {name: getattr(filters, name) for name in filters.names},
    }
    report = Path(options["report"] or f"{options['output']}.report.json")
    report.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(summary))
    return 0


def _check_candidates(value: str) -> None:
    if value not in CANDIDATES:
        raise UsageError(f"mining: candidates must be one of {', '.join(CANDIDATES)}, got {value!r}")


def _number(key: str, value: str | None) -> float | None:
    """A float option given as text (None stays None)."""
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        raise UsageError(f"mining: {key} must be a number or null, got {value!r}") from None


if __name__ == "__main__":
    raise SystemExit(main())
