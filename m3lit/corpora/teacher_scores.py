"""Teacher scores for distillation: add ``pos_scores`` and ``neg_scores`` to every line of a training file.

Run (``key=value`` options, as every m3lit command; ``--help`` lists them with their defaults)::

    python -m m3lit.corpora.teacher_scores model=BAAI/bge-reranker-v2-m3 input=train.jsonl \\
        output=train_scored.jsonl [batch_size=32] [max_length=512] [sigmoid=false]
    python -m m3lit.corpora.teacher_scores model=logs/train/runs/<run>/export input=... output=...

The input is a FlagEmbedding-style JSONL file (validated as for training, :mod:`m3lit.data.schema`; a bad
line stops the command with ``<file>:line N: field '...': ...`` before any model loads). Each output line
is the input line with ``pos_scores`` (one score per ``pos``) and ``neg_scores`` (one per ``neg``) set,
aligned, every other field kept; existing scores are replaced. Training reads them as FlagEmbedding's
``knowledge_distillation`` does: with ``data.use_teacher_scores=true`` (the default) every head's loss
becomes ``loss.kd_loss`` (``m3_kd_loss``) against softmax(scores) of each query's group, and the sampled
negatives are sorted by teacher score (``data.sort_negatives_by_teacher``).

Two kinds of teacher (``teacher=auto`` tells them apart: a ``.ckpt`` file, an ``m3lit:NAME`` model or a folder with
m3lit's head files is ``m3``, a model whose ``config.json`` names a ``...ForSequenceClassification`` architecture is
``cross_encoder``):

* ``cross_encoder``: any Hugging Face ``AutoModelForSequenceClassification`` with one logit per pair
  (bge-reranker-v2-m3 for a real user). The score of (query, passage) is that logit, the raw score that
  FlagEmbedding's rerankers write and its kd loss reads; ``sigmoid=true`` writes sigmoid(logit) instead.
* ``m3``: an m3lit ``.ckpt`` or export (anything ``M3Model`` loads). The score is its All score, the
  self-distillation teacher of BGE-M3 (arXiv:2402.03216 §3.3, Eq. (2)): s_inter = w_d s_dense + w_s s_lex +
  w_c s_mul, ``weights`` (1, 0.3, 1) by default, on unpadded outputs
  (:func:`m3lit.inference.pair_scores.pair_scores`). The written score is s / ``temperature``: kd applies
  softmax to it untempered, so ``temperature=0.02`` (the training tau) gives the target that
  self-distillation uses, softmax(s_inter / tau).

Resumable and idempotent: lines are scored in chunks of ``CHUNK_LINES`` and appended to ``<output>.partial``
(settings in ``<output>.partial.json``); a re-run with the same settings resumes after the last complete
chunk, so a resumed output is byte for byte the uninterrupted one; at the end the file is renamed to
``<output>`` and its settings kept in ``<output>.teacher.json``. A re-run whose output is finished with the
same settings does nothing and says so; with other settings it stops (``force=true`` scores again).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from m3lit.data.schema import read_jsonl
from m3lit.files.cache import sha256_file
from m3lit.files.errors import PathError, UsageError, run_command
from m3lit.files.jsonl import read_records
from m3lit.files.options import command_help, parse_key_values

__all__ = ["CHUNK_LINES", "OPTIONS", "TEACHERS", "main", "teacher_kind", "write_teacher_scores"]

log = logging.getLogger(__name__)

#: Lines scored and written together; a resume starts at a multiple of it (so batches are the same).
CHUNK_LINES = 64
TEACHERS = ("auto", "cross_encoder", "m3")

#: Command-line options (``key=value``) and their defaults.
OPTIONS: dict[str, Any] = {
    "model": None,  # teacher: a Hugging Face cross-encoder, or an m3lit .ckpt / export; required
    "input": None,  # training JSONL (query, pos, neg, ...); required
    "output": None,  # the JSONL to write, with pos_scores and neg_scores; required
    "teacher": "auto",  # auto | cross_encoder | m3 (see the module docstring)
    "batch_size": 32,  # (query, passage) pairs per forward pass (cross-encoder); texts per pass (m3)
    "max_length": 512,  # cross-encoder: truncation of the (query, passage) pair in tokens
    "sigmoid": False,  # cross-encoder: write sigmoid(logit) instead of the raw logit (FlagEmbedding kd: raw)
    "query_max_len": 512,  # m3 teacher: query truncation in tokens
    "passage_max_len": 512,  # m3 teacher: passage truncation in tokens
    "weights": "1,0.3,1",  # m3 teacher: w_dense,w_sparse,w_colbert of the All score s_inter
    "temperature": "1",  # written score = score / temperature (0.02: the self-distillation target's tau)
    "force": False,  # score again even when the output is finished (with the same or other settings)
    "device": None,  # cpu, cuda, ...; null: cuda when available
    "progress": True,  # progress bar over lines
}


def teacher_kind(model: str, teacher: str = "auto") -> str:
    """``cross_encoder`` or ``m3`` for the model reference ``model`` (module docstring).

    Raises:
        UsageError: an unknown ``teacher``, or ``auto`` that cannot tell.
    """
    _check_teacher(teacher)
    if teacher != "auto":
        return teacher
    path = Path(model)
    if model.startswith("m3lit:") or path.suffix == ".ckpt" or (path / "colbert_linear.pt").is_file():
        return "m3"
    from transformers import AutoConfig

    architectures = AutoConfig.from_pretrained(model).architectures or []
    if any(name.endswith("ForSequenceClassification") for name in architectures):
        return "cross_encoder"
    raise UsageError(
        f"model={model}: cannot tell the teacher kind (architectures {architectures}); "
        "pass teacher=cross_encoder or teacher=m3"
    )


def write_teacher_scores(
    score_pairs: Callable[[list[tuple[str, str]]], list[float]],
    input_file: str | Path,
    output_file: str | Path,
    settings: dict[str, Any],
    *,
    progress: bool = False,
) -> int:
    """Score every (query, passage) pair of ``input_file`` and write the lines with scores (resumable).

    Args:
        score_pairs: the teacher: a list of (query, passage) pairs -> one float each.
        input_file / output_file: the training JSONL in, the scored JSONL out.
        settings: what the scores depend on (teacher, lengths, ...); a partial file with other settings is
            started again, a finished output with other settings is an error (delete it or ``force``).
        progress: a tqdm bar over lines.

    Returns:
        the number of lines scored by this call (0: the output was already finished).
    """
    output, partial = Path(output_file), Path(f"{output_file}.partial")
    settings = {**settings, "input_sha256": sha256_file(input_file), "chunk_lines": CHUNK_LINES}
    if _finished(output, settings):
        return 0
    rows = [row for _, row in read_records(input_file)]
    examples = read_jsonl(input_file)
    done = _resume_point(partial, settings)
    output.parent.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=len(rows), initial=done, desc="teacher scores", unit="line", disable=not progress)
    with open(partial, "a", encoding="utf-8", newline="\n") as handle:
        for start in range(done, len(rows), CHUNK_LINES):
            chunk = examples[start : start + CHUNK_LINES]
            pairs = [(ex.query, text) for ex in chunk for text in (*ex.pos, *ex.neg)]
            scores = iter(score_pairs(pairs))
            for ex, row in zip(chunk, rows[start : start + CHUNK_LINES], strict=True):
                row["pos_scores"] = [next(scores) for _ in ex.pos]
                row["neg_scores"] = [next(scores) for _ in ex.neg]
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
            bar.update(len(chunk))
    bar.close()
    os.replace(partial, output)
    _settings_file(output, ".teacher.json").write_text(
        json.dumps(settings, indent=2) + "\n", encoding="utf-8"
    )
    _settings_file(partial, ".json").unlink(missing_ok=True)
    return len(rows) - done


def _settings_file(path: Path, suffix: str) -> Path:
    return Path(f"{path}{suffix}")


def _finished(output: Path, settings: dict) -> bool:
    """True when ``output`` was finished with ``settings`` (then nothing is to do); an error when it was
    finished with others; False when there is none."""
    if not output.exists():
        return False
    record = _settings_file(output, ".teacher.json")
    made = json.loads(record.read_text(encoding="utf-8")) if record.is_file() else None
    if made != settings:
        raise UsageError(
            f"output={output} exists and was not written with these settings "
            f"({'no ' + record.name if made is None else record.name + ' differs'}); "
            "delete it, choose another output, or pass force=true"
        )
    log.info("%s is already finished with these settings: nothing to do", output)
    return True


def _resume_point(partial: Path, settings: dict) -> int:
    """Lines of ``partial`` to keep: whole chunks written with ``settings`` (the file is cut there)."""
    record = _settings_file(partial, ".json")
    same = record.is_file() and json.loads(record.read_text(encoding="utf-8")) == settings
    if not same or not partial.is_file():
        if partial.exists():
            log.warning("%s was written with other settings: starting again", partial)
        partial.write_bytes(b"")
        record.write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
        return 0
    data = partial.read_bytes()
    complete = data.count(b"\n")
    keep = complete - complete % CHUNK_LINES
    cut = 0
    for _ in range(keep):
        cut = data.index(b"\n", cut) + 1
    with open(partial, "r+b") as handle:
        handle.truncate(cut)
    log.info("resuming %s after %d scored lines", partial, keep)
    return keep


# ------------------------------------------------------------------------------------------------ teachers
def cross_encoder_scorer(model_ref: str, options: dict) -> Callable[[list[tuple[str, str]]], list[float]]:
    """Scores of a Hugging Face cross-encoder: its one logit per pair (sigmoid of it with ``sigmoid``)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_ref)
    model = AutoModelForSequenceClassification.from_pretrained(model_ref).eval().to(options["device"])
    if model.config.num_labels != 1:
        raise UsageError(
            f"model={model_ref}: a teacher gives one logit per pair; this model has {model.config.num_labels}"
        )
    temperature = options["temperature"]
    max_length = min(options["max_length"], _longest_input(model.config, tokenizer))

    @torch.inference_mode()
    def score(pairs: list[tuple[str, str]]) -> list[float]:
        out = []
        for start in range(0, len(pairs), options["batch_size"]):
            batch = pairs[start : start + options["batch_size"]]
            enc = tokenizer(
                [q for q, _ in batch],
                [p for _, p in batch],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            ).to(options["device"])
            logits = model(**enc).logits.view(-1).float()
            out.append((logits.sigmoid() if options["sigmoid"] else logits).cpu().numpy())
        return (np.concatenate(out) / temperature).tolist() if out else []

    return score


def _longest_input(config, tokenizer) -> int:
    """Tokens the cross-encoder accepts: its positions minus the RoBERTa-style offset, and the tokenizer's limit
    (as ``M3Model.max_length``)."""
    from m3lit.model.positions import position_offset

    positions = getattr(config, "max_position_embeddings", None) or 10**9
    return min(positions - position_offset(config), int(getattr(tokenizer, "model_max_length", positions)))


def m3_scorer(model_ref: str, options: dict) -> Callable[[list[tuple[str, str]]], list[float]]:
    """Scores of an m3lit model: its All score s_inter (module docstring) / temperature."""
    from m3lit.inference.encoding import encode_texts
    from m3lit.inference.pair_scores import needed_heads, pair_scores
    from m3lit.model.training_checkpoint import load_model

    model = load_model(model_ref, key="model").eval()
    weights, temperature = options["weights"], options["temperature"]
    heads = needed_heads(weights)

    def score(pairs: list[tuple[str, str]]) -> list[float]:
        if not pairs:
            return []
        queries = list(dict.fromkeys(q for q, _ in pairs))
        passages = list(dict.fromkeys(p for _, p in pairs))
        common = {"batch_size": options["batch_size"], "device": options["device"], **heads}
        q = encode_texts(model, queries, max_length=options["query_max_len"], **common)
        p = encode_texts(model, passages, max_length=options["passage_max_len"], **common)
        q_row = {text: i for i, text in enumerate(queries)}
        p_row = {text: i for i, text in enumerate(passages)}
        s = pair_scores(q, p, [q_row[a] for a, _ in pairs], [p_row[b] for _, b in pairs], weights)
        return (s / temperature).tolist()

    return score


# ------------------------------------------------------------------------------------------------- command
def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (``python -m m3lit.corpora.teacher_scores``); a user error prints one
    ``error:`` line and raises ``SystemExit`` (:mod:`m3lit.files.errors`)."""
    return run_command(_run, argv, help=lambda: command_help(__name__, OPTIONS))


def _run(args: list[str]) -> int:
    options = parse_key_values(args, OPTIONS, "teacher_scores", required=("model", "input", "output"))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    _check_teacher(options["teacher"])
    options["weights"] = _floats("weights", options["weights"], 3)
    options["temperature"] = _floats("temperature", options["temperature"], 1)[0]
    if options["temperature"] <= 0:
        raise UsageError(f"teacher_scores: temperature must be > 0, got {options['temperature']}")
    if not Path(options["input"]).is_file():
        raise PathError("input", options["input"], "no such file")
    read_jsonl(options["input"])  # every line checked before the model loads
    from m3lit.model.device import default_device
    from m3lit.model.reference import check_model_reference

    model_ref = check_model_reference(options["model"], key="model")
    kind = teacher_kind(model_ref, options["teacher"])
    options["device"] = options["device"] or default_device()
    keys = ["batch_size", "temperature"] + (
        ["max_length", "sigmoid"]
        if kind == "cross_encoder"
        else ["query_max_len", "passage_max_len", "weights"]
    )
    settings = {"model": str(model_ref), "teacher": kind, **{k: options[k] for k in keys}}
    output = Path(options["output"])
    if options["force"]:
        output.unlink(missing_ok=True)
    if output.exists():
        _finished(
            output, {**settings, "input_sha256": sha256_file(options["input"]), "chunk_lines": CHUNK_LINES}
        )
        print(f"{output} is already finished with these settings: nothing to do", flush=True)
        return 0
    log.info("loading the %s teacher %s", kind, model_ref)
    scorer = (cross_encoder_scorer if kind == "cross_encoder" else m3_scorer)(model_ref, options)
    lines = write_teacher_scores(scorer, options["input"], output, settings, progress=options["progress"])
    print(json.dumps({"output": str(output), "teacher": kind, "lines_scored": lines}), flush=True)
    return 0


def _check_teacher(teacher: str) -> None:
    if teacher not in TEACHERS:
        raise UsageError(f"teacher_scores: teacher must be one of {', '.join(TEACHERS)}, got {teacher!r}")


def _floats(key: str, text: str, count: int) -> list[float]:
    try:
        values = [float(x) for x in str(text).split(",")]
    except ValueError:
        values = []
    if len(values) != count:
        raise UsageError(f"teacher_scores: {key} must be {count} comma-separated number(s), got {text!r}")
    return values


if __name__ == "__main__":
    raise SystemExit(main())
