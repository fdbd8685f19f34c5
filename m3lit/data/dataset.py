"""Training datasets: expand ``train_data`` into files, load each file as one dataset, sample query groups.

Spec §4.2-4.3. One JSONL file is one dataset; a folder holds many (its ``*.jsonl``/``*.json`` files,
not recursive, in name order); ``train_data`` may be a path or a list of paths, each optionally a mapping
``{path: ..., no_in_batch_neg: true}``. A folder whose name ends in ``no_in_batch_neg`` (or a file whose
stem does) marks its datasets no-in-batch-negatives (the loss then scores a query only against its own
group, spec §3.1).

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

from m3lit.data.schema import Example, SkipReport, read_jsonl
from m3lit.files.jsonl import DataError

__all__ = ["SamplingOptions", "TrainDataset", "expand_train_data", "load_dataset", "sample_group"]

NO_IN_BATCH_SUFFIX = "no_in_batch_neg"
DATA_SUFFIXES = (".jsonl", ".json")


@dataclass
class TrainDataset:
    """One training file after validation.

    Attributes:
        name: display name (``folder/file.jsonl``) used in logs and ``M3Batch.dataset``.
        path: the file.
        examples: its validated lines.
        group_size: G used for every batch of this dataset (spec §4.2 type/column rules).
        batch_size: per-rank batch size from the file's ``batch_size`` column (first line), or None.
        no_in_batch_neg: the no-in-batch-negatives flag (folder/file name suffix or explicit).
        type: the ``type`` of the first line, or None.
        has_scores: True when teacher scores are emitted for this dataset.
    """

    name: str
    path: Path
    examples: list[Example]
    group_size: int
    batch_size: int | None
    no_in_batch_neg: bool
    type: str | None
    has_scores: bool

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


def expand_train_data(
    train_data: str | Path | dict | Sequence, key: str = "data.train_data"
) -> list[tuple[Path, bool, str]]:
    """Expand ``train_data`` (the value of config key ``key``) into ``(file, no_in_batch_neg, display_name)``
    triples, in order. Nothing is read, so it doubles as the start-up check of the paths.

    Raises:
        DataError: a path that does not exist, or a folder without any ``.jsonl``/``.json`` file.
    """
    if train_data is None:
        raise DataError(f"{key} is not set: give a JSONL file, a folder of them, or a list")
    entries = [train_data] if isinstance(train_data, str | Path | dict) else list(train_data)
    if not entries:
        raise DataError(f"{key} is an empty list")
    out: list[tuple[Path, bool, str]] = []
    for entry in entries:
        flag = False
        if isinstance(entry, dict) or hasattr(entry, "keys"):
            unknown = set(entry) - {"path", "no_in_batch_neg"}
            if "path" not in entry or unknown:
                raise DataError(
                    f"{key} entry {dict(entry)!r}: expected keys 'path' and optional 'no_in_batch_neg'"
                )
            flag, entry = bool(entry.get("no_in_batch_neg", False)), entry["path"]
        path = Path(str(entry)).expanduser()
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in DATA_SUFFIXES)
            if not files:
                raise DataError("folder has no .jsonl/.json files", path=path)
            folder_flag = flag or path.name.endswith(NO_IN_BATCH_SUFFIX)
            out += [
                (f, folder_flag or f.stem.endswith(NO_IN_BATCH_SUFFIX), f"{path.name}/{f.name}")
                for f in files
            ]
        elif path.is_file():
            out.append(
                (path, flag or path.stem.endswith(NO_IN_BATCH_SUFFIX), f"{path.parent.name}/{path.name}")
            )
        else:
            raise DataError(f"no such file or folder ({key})", path=path)
    return out


def load_dataset(
    path: Path,
    *,
    name: str,
    no_in_batch_neg: bool,
    train_group_size: int,
    on_bad_line: str = "error",
    report: SkipReport | None = None,
    use_teacher_scores: bool = True,
) -> TrainDataset:
    """Read one file and fix its group size, batch size and teacher-score use.

    Group size (spec §4.2; the first line decides): its ``train_group_size`` column if set; else 2 for
    type ``only_1neg``; else for ``symmetric_class`` ``min(G, 1 + fewest negatives of any line)``; else
    ``train_group_size``. With G > 1 every line needs at least one negative. Teacher scores are used
    when the first line has them; then every line must have them (a file mixing both is an error).
    """
    examples = read_jsonl(path, on_bad_line=on_bad_line, report=report)
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
    kept = []
    for ex in examples:
        error = None
        if group > 1 and not ex.neg:
            error = DataError(f"no negatives, but train_group_size is {group} for this file", field="neg")
        elif (ex.pos_scores is not None) != has_scores:
            state = "lacks" if has_scores else "has"
            problem = f"line {state} teacher scores while line {first.line} does not agree"
            error = DataError(problem, field="pos_scores")
        if error is None:
            kept.append(ex)
            continue
        if on_bad_line == "error":
            raise error.at(path, ex.line)
        report.add(str(path), str(error.at(path, ex.line)))
    if not kept:
        raise DataError("every line was skipped; nothing left to train on", path=path)
    return TrainDataset(
        name=name,
        path=path,
        examples=kept,
        group_size=max(1, group),
        batch_size=first.batch_size,
        no_in_batch_neg=no_in_batch_neg,
        type=first.type,
        has_scores=has_scores and use_teacher_scores,
    )


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
