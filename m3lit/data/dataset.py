"""Training datasets: load each dataset of a source, then sample query groups from its examples.

Spec §4.2-4.3. :func:`~m3lit.data.entries.expand_train_data` names the datasets of ``train_data`` (one JSONL,
parquet or Arrow file, one save_to_disk folder or one Hub split each); :func:`load_dataset` reads and
validates one (JSONL through :mod:`m3lit.data.schema`, the others through :mod:`m3lit.data.tables`, memory-
mapped) and fixes its group size. A dataset marked no-in-batch-negatives has the loss score a query only
against its own group (spec §3.1).

Per query, :func:`sample_group` draws one positive uniformly and ``G - 1`` negatives without replacement,
repeating the negative list when it is too short; teacher scores follow the sampled passages, optionally
with the negatives sorted by teacher score (descending) as in the paper code.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from m3lit.data.columns import ColumnMap
from m3lit.data.entries import DataEntry
from m3lit.data.schema import Example, SkipReport, read_jsonl
from m3lit.data.tables import TableRows, read_table
from m3lit.files.jsonl import DataError

__all__ = ["SamplingOptions", "TrainDataset", "load_dataset", "sample_group"]


@dataclass
class TrainDataset:
    """One training file after validation.

    Attributes:
        name: display name (``folder/file.jsonl``) used in logs and ``M3Batch.dataset``.
        path: the file.
        examples: its validated lines: a list (JSONL) or :class:`~m3lit.data.tables.TableRows` (read on access).
        group_size: G used for every batch of this dataset (spec §4.2 type/column rules).
        batch_size: per-rank batch size from the file's ``batch_size`` column (first line), or None.
        no_in_batch_neg: the no-in-batch-negatives flag (folder/file name suffix or explicit).
        type: the ``type`` of the first line, or None.
        has_scores: True when teacher scores are emitted for this dataset.
        files: the files its rows are read from (their bytes key the token-length cache); empty: not cached.
        columns: the column mapping it was read through, or None.
    """

    name: str
    path: Path
    examples: Sequence[Example]
    group_size: int
    batch_size: int | None
    no_in_batch_neg: bool
    type: str | None
    has_scores: bool
    files: tuple[Path, ...] = ()
    columns: ColumnMap | None = None

    def __len__(self) -> int:
        return len(self.examples)


@dataclass(frozen=True)
class SamplingOptions:
    """How :func:`sample_group` turns an example into texts (all off by default, as for BGE-M3).

    Attributes:
        shuffle_ratio: probability of the positive-passage chunk shuffle augmentation (paper: 0.002).
        sort_negatives_by_teacher: order sampled negatives by teacher score, descending (RES does).
        query_instruction: global instruction prepended to queries, or None.
        passage_instruction: global instruction prepended to passages, or None.
        instruction_format: ``format(instruction, text)`` template.
        use_prompt: use a line's ``prompt`` field as its query instruction (overrides the global one).
    """

    shuffle_ratio: float = 0.0
    sort_negatives_by_teacher: bool = True
    query_instruction: str | None = None
    passage_instruction: str | None = None
    instruction_format: str = "{}{}"
    use_prompt: bool = False


def load_dataset(
    source: DataEntry | str | Path,
    *,
    name: str | None = None,
    no_in_batch_neg: bool = False,
    train_group_size: int,
    on_bad_line: str = "error",
    report: SkipReport | None = None,
    use_teacher_scores: bool = True,
) -> TrainDataset:
    """Read one dataset and fix its group size, batch size and teacher-score use.

    Args:
        source: an entry of :func:`~m3lit.data.entries.expand_train_data`, or a JSONL file (then ``name``
            and ``no_in_batch_neg`` describe it).

    Group size (spec §4.2; the first line decides): its ``train_group_size`` column if set; else 2 for
    type ``only_1neg``; else for ``symmetric_class`` ``min(G, 1 + fewest negatives of any line)``; else
    ``train_group_size``. With G > 1 every line needs at least one negative. Teacher scores are used
    when the first line has them; then every line must have them (a file mixing both is an error).
    """
    if not isinstance(source, DataEntry):
        source = DataEntry("jsonl", Path(source), name or str(source), no_in_batch_neg)
    entry = source
    examples, files = _read(entry, on_bad_line, report)
    first = examples[0]
    if first.train_group_size:
        group = first.train_group_size
    elif first.type == "only_1neg":
        group = 2
    elif first.type == "symmetric_class":
        group = min(train_group_size, 1 + min(len(ex.neg) for ex in examples))
    else:
        group = train_group_size
    has_scores = first.pos_scores is not None
    unit = "line" if entry.kind == "jsonl" else "row"
    keep = []
    for index, ex in enumerate(examples):
        error = None
        if group > 1 and not ex.neg:
            error = DataError(f"no negatives, but train_group_size is {group} for this file", field="neg")
        elif (ex.pos_scores is not None) != has_scores:
            state = "lacks" if has_scores else "has"
            problem = f"{unit} {state} teacher scores while {unit} {first.line} does not agree"
            error = DataError(problem, field="pos_scores")
        if error is None:
            keep.append(index)
            continue
        located = error.at(entry.path, ex.line) if unit == "line" else error.at(entry.name, row=ex.line)
        if on_bad_line == "error":
            raise located
        report.add(str(entry.path) if unit == "line" else entry.name, str(located))
    if not keep:
        raise DataError("every line was skipped; nothing left to train on", path=entry.path)
    if len(keep) < len(examples):
        examples = examples.take(keep) if isinstance(examples, TableRows) else [examples[i] for i in keep]
    return TrainDataset(
        name=entry.name,
        path=entry.path,
        examples=examples,
        group_size=max(1, group),
        batch_size=first.batch_size,
        no_in_batch_neg=entry.no_in_batch_neg,
        type=first.type,
        has_scores=has_scores and use_teacher_scores,
        files=files,
        columns=entry.columns,
    )


def _read(
    entry: DataEntry, on_bad_line: str, report: SkipReport | None
) -> tuple[Sequence[Example], tuple[Path, ...]]:
    """The validated examples of ``entry`` and the files they are read from."""
    if entry.kind == "jsonl":
        return read_jsonl(
            entry.path, on_bad_line, report, entry.columns.fields if entry.columns is not None else None
        ), (entry.path,)
    return read_table(entry, on_bad_line=on_bad_line, report=report)


def sample_group(
    example: Example, group_size: int, rng: random.Random, options: SamplingOptions, with_scores: bool
) -> tuple[str, list[str], list[float] | None]:
    """Sample one query group (spec §4.2).

    Args:
        example: the line.
        group_size: G; the group is [positive, G-1 negatives].
        rng: the random source (seeded per example and step by the caller, so resume is exact).
        options: augmentation and instruction settings.
        with_scores: return the teacher scores of the sampled passages.

    Returns:
        ``(query, passages, scores)``: the formatted query, G formatted passages, and G floats or None.
    """
    pos_index = rng.randrange(len(example.pos))
    need = group_size - 1
    if need <= 0:
        neg_indices: list[int] = []
    elif len(example.neg) < need:
        pool = list(range(len(example.neg))) * math.ceil(need / len(example.neg))
        neg_indices = rng.sample(pool, need)
    else:
        neg_indices = rng.sample(range(len(example.neg)), need)
    scores = None
    if with_scores:
        neg_scores = example.neg_scores or ()
        if options.sort_negatives_by_teacher:
            neg_indices = sorted(neg_indices, key=lambda j: -neg_scores[j])  # stable: ties keep sample order
        scores = [example.pos_scores[pos_index], *(neg_scores[j] for j in neg_indices)]
    positive = example.pos[pos_index]
    if options.shuffle_ratio > 0 and len(positive) > 100 and rng.random() < options.shuffle_ratio:
        positive = shuffle_chunks(positive, rng)
    passages = [positive, *(example.neg[j] for j in neg_indices)]
    query_instruction = (example.prompt if options.use_prompt else None) or options.query_instruction
    passage_instruction = options.passage_instruction
    if example.type in ("symmetric_sts", "symmetric_clustering"):
        passage_instruction = query_instruction  # symmetric tasks: both sides get the query's instruction
    query = _format(options.instruction_format, query_instruction, example.query)
    passages = [_format(options.instruction_format, passage_instruction, p) for p in passages]
    return query, passages, scores


def shuffle_chunks(text: str, rng: random.Random) -> str:
    """Cut ``text`` into three character chunks, shuffle them and join with spaces (paper App. A.1)."""
    size = len(text) // 3 + 1
    chunks = [text[i : i + size] for i in range(0, len(text), size)]
    rng.shuffle(chunks)
    return " ".join(chunks)


def _format(template: str, instruction: str | None, text: str) -> str:
    return template.format(instruction, text) if instruction else text
