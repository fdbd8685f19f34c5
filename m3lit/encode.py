"""Encode a file of passages from the command line: dense .npy, sparse JSONL, optional ColBERT vectors.

Run::

    python -m m3lit.encode model=export/ input=corpus.jsonl output_dir=emb/
    python -m m3lit.encode model=export/ input=passages.txt output_dir=emb/ colbert=true
    python -m m3lit.encode model=run/last.ckpt input=queries.jsonl output_dir=q/ max_length=64 sparse=false

Input: ``.jsonl`` (one object per line; text in ``text_field``, optional ``title_field`` prepended with a
space, id in ``id_field``; BEIR's corpus.jsonl works as is) or any other file read as plain text, one
passage per line (the id is the 0-based line number). Blank lines of a ``.jsonl`` are ignored. An empty
passage, a line that is not JSON or an object without the text field stops with a
:class:`~m3lit.files.jsonl.DataError` naming the file, line and field; ``skip_invalid=true`` skips such
lines instead and reports how many.

Output in ``output_dir`` (rows in input order)::

    ids.txt            one id per line
    dense.npy          (N, H) float32, L2-normalised                       [dense=true]
    sparse.jsonl       {"id": ..., "weights": {"token_id": weight, ...}}    [sparse=true]
    colbert.npy        (total_tokens, Dc) float32 (float16: colbert_fp16)   [colbert=true]
    colbert_offsets.npy (N + 1,) int64: rows of passage i are offsets[i]:offsets[i+1]
    meta.json          model, counts, dims, options, skipped lines, seconds

Passages are encoded in chunks of ``chunk_size`` so memory stays bounded; a tqdm bar shows progress.
The input and the model are checked before the model loads; a user error ends the command with one
``error: ...`` line (exit status 2 for a bad option, 1 for a bad file or model; ``--debug``: traceback).
"""

from __future__ import annotations

import functools
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from m3lit.files.errors import PathError, UsageError, run_command
from m3lit.files.jsonl import DataError, read_records
from m3lit.files.options import command_help, parse_key_values
from m3lit.inference.encoding import MCLS_AND_WINDOW, encode_texts
from m3lit.inference.mcls import DEFAULT_INTERVAL
from m3lit.model.device import default_device
from m3lit.model.reference import ModelReferenceError, check_model_reference
from m3lit.model.training_checkpoint import load_model

__all__ = ["OPTIONS", "read_passages", "encode_file", "main"]

#: Command-line options (``key=value``) and their defaults.
OPTIONS: dict[str, Any] = {
    "model": None,  # export folder, FlagEmbedding folder, hub id or Lightning .ckpt; required
    "input": None,  # .jsonl (objects) or plain text (one passage per line); required
    "output_dir": None,  # where the files go (created); required
    "text_field": "text",  # JSONL key holding the passage
    "title_field": "title",  # JSONL key prepended to the text when present and non-empty (null: never)
    "id_field": "_id",  # JSONL key of the id (BEIR); the line number when absent
    "dense": True,  # write dense.npy
    "sparse": True,  # write sparse.jsonl
    "colbert": False,  # write colbert.npy + colbert_offsets.npy (large: one vector per token)
    "colbert_fp16": False,  # store ColBERT vectors in float16 (half the disk)
    "batch_size": 256,  # texts per forward pass (shrinks x3/4 on out-of-memory)
    "max_length": 512,  # most tokens read per text (capped at the model's positions unless window is set)
    "chunk_size": 8192,  # texts per encode call (bounds host memory)
    "device": None,  # cpu | cuda | cuda:1 ...; null: cuda when available, else cpu
    "fp16": True,  # float16 weights on GPU (CPU always runs float32)
    "mcls": False,  # multiple-CLS pooling for long passages (paper App. B.2)
    "mcls_interval": DEFAULT_INTERVAL,  # tokens per CLS when mcls=true
    "window": 0,  # encode longer passages as windows of this many tokens (<= the model's positions), merged; 0 = off
    "skip_invalid": False,  # skip (and count) invalid lines instead of stopping
    "progress": True,  # show a progress bar
}


def read_passages(
    path: str | os.PathLike,
    *,
    text_field: str = "text",
    title_field: str | None = "title",
    id_field: str = "_id",
    skip_invalid: bool = False,
) -> tuple[list[str], list[str], int]:
    """(ids, texts, skipped) from a JSONL or plain-text file (see the module docstring).

    Raises:
        DataError: an invalid line (naming file, line number and field) unless ``skip_invalid``.
    """
    skipped: list[DataError] = []
    skip = skipped.append if skip_invalid else None
    try:
        if Path(path).suffix == ".jsonl":
            parse = functools.partial(
                _passage, text_field=text_field, title_field=title_field, id_field=id_field
            )
            rows = [
                (str(n - 1) if pid is None else pid, text)
                for n, (pid, text) in read_records(path, parse, skip=skip)
            ]
        else:
            rows = list(_text_lines(path, skip))
    except DataError as err:
        hint = f"{err.problem} (skip_invalid=true skips such lines)"
        raise DataError(hint, path=err.path, line=err.line, field=err.field) from None
    return [pid for pid, _ in rows], [text for _, text in rows], len(skipped)


def _check_sizes(opts: dict[str, Any]) -> None:
    """Stop on a size option that would fail only once encoding had begun (and its files were written)."""
    least = {"batch_size": 1, "max_length": 1}
    if opts["mcls"]:
        least["mcls_interval"] = 1
    if opts["window"]:
        least["window"] = 3  # <s>, one token, </s>
    for name, smallest in least.items():
        if int(opts[name]) < smallest:
            hint = " (0 = off)" if name == "window" else ""
            raise UsageError(f"encode: {name} must be >= {smallest}{hint}, got {opts[name]}")
    if opts["mcls"] and opts["window"]:
        raise UsageError(f"encode: mcls=true with window={opts['window']}: {MCLS_AND_WINDOW}")


def encode_file(**options: Any) -> dict[str, Any]:
    """Encode ``options["input"]`` into ``options["output_dir"]``; returns the meta.json record."""
    opts = {**OPTIONS, **options}
    if not (opts["dense"] or opts["sparse"] or opts["colbert"]):
        raise UsageError("encode: enable at least one of dense, sparse, colbert")
    _check_sizes(opts)
    if not Path(opts["input"]).is_file():
        raise PathError("input", opts["input"], "no such file")
    check_model_reference(opts["model"], "model")
    started = time.perf_counter()
    ids, texts, skipped = read_passages(
        opts["input"],
        text_field=opts["text_field"],
        title_field=opts["title_field"],
        id_field=opts["id_field"],
        skip_invalid=opts["skip_invalid"],
    )
    device = torch.device(opts["device"] or default_device())
    model = load_model(opts["model"]).eval()
    if (opts["sparse"] or opts["colbert"]) and not model.heads_loaded:
        raise ModelReferenceError(
            f"model={opts['model']}: no trained sparse/ColBERT heads: use sparse=false colbert=false"
        )
    if opts["window"] and opts["window"] > model.max_length:
        raise UsageError(
            f"encode: window={opts['window']} exceeds the model's {model.max_length} positions; "
            f"use window <= {model.max_length} (max_length={opts['max_length']} caps the tokens read)"
        )
    if device.type != "cpu" and opts["fp16"]:
        model.half()
    out = Path(opts["output_dir"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "ids.txt").write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")
    _write_outputs(model, ids, texts, out, device, opts)
    meta = {
        "model": str(opts["model"]),
        "input": str(opts["input"]),
        "count": len(texts),
        "skipped": skipped,
        "hidden_size": model.hidden_size,
        "colbert_dim": model.colbert_dim if opts["colbert"] else None,
        "files": sorted(p.name for p in out.iterdir() if p.is_file()) + ["meta.json"],
        "options": {k: v for k, v in opts.items() if k not in ("model", "input", "output_dir")},
        "seconds": round(time.perf_counter() - started, 3),
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return meta


def _write_outputs(
    model, ids: list[str], texts: list[str], out: Path, device: torch.device, opts: dict[str, Any]
) -> None:
    """Encode ``texts`` chunk by chunk into dense.npy, sparse.jsonl and colbert.npy (+ offsets) in ``out``."""
    dense = (
        np.lib.format.open_memmap(out / "dense.npy", "w+", np.float32, (len(texts), model.hidden_size))
        if opts["dense"]
        else None
    )
    colbert_dtype = np.float16 if opts["colbert_fp16"] else np.float32
    offsets = [0]
    bar = _bar(len(texts), opts["progress"])
    with (
        open(out / "sparse.jsonl", "w", encoding="utf-8") if opts["sparse"] else _null() as sparse_file,
        tempfile.TemporaryFile(dir=out) if opts["colbert"] else _null() as colbert_raw,
    ):
        for start in range(0, len(texts), opts["chunk_size"]):
            chunk = texts[start : start + opts["chunk_size"]]
            enc = encode_texts(
                model,
                chunk,
                batch_size=opts["batch_size"],
                max_length=opts["max_length"],
                dense=opts["dense"],
                sparse=opts["sparse"],
                colbert=opts["colbert"],
                device=device,
                progress=bar or False,
                mcls_interval=opts["mcls_interval"] if opts["mcls"] else None,
                window=opts["window"] or None,
            )
            if dense is not None:
                dense[start : start + len(chunk)] = enc.dense
            for j, (tok_ids, weights) in enumerate(enc.sparse or []):
                record = {
                    "id": ids[start + j],
                    "weights": {str(int(t)): float(w) for t, w in zip(tok_ids, weights, strict=True)},
                }
                sparse_file.write(json.dumps(record) + "\n")
            for vecs in enc.colbert or []:
                colbert_raw.write(np.ascontiguousarray(vecs, dtype=colbert_dtype).tobytes())
                offsets.append(offsets[-1] + len(vecs))
        if opts["colbert"]:
            _raw_to_npy(colbert_raw, out / "colbert.npy", colbert_dtype, (offsets[-1], model.colbert_dim))
            np.save(out / "colbert_offsets.npy", np.asarray(offsets, dtype=np.int64))
    if bar is not None:
        bar.close()
    if dense is not None:
        dense.flush()
        del dense


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (``python -m m3lit.encode`` / ``m3lit-encode``); a user error prints one
    ``error:`` line and raises ``SystemExit`` (:mod:`m3lit.files.errors`)."""
    return run_command(_run, argv, help=lambda: command_help(__name__, OPTIONS))


def _run(args: list[str]) -> int:
    options = parse_key_values(args, OPTIONS, "encode", required=("model", "input", "output_dir"))
    meta = encode_file(**options)
    skipped = f", skipped {meta['skipped']} invalid lines" if meta["skipped"] else ""
    print(f"encoded {meta['count']} passages in {meta['seconds']:.1f}s{skipped} -> {options['output_dir']}")
    print("  files: " + ", ".join(meta["files"]))
    return 0


# ---------------------------------------------------------------------------------------------- helpers
def _text_lines(path: str | os.PathLike, skip) -> Iterator[tuple[str, str]]:
    """(0-based line number as the id, text) per line of a plain-text file; an empty line is bad."""
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            text = line.rstrip("\n").rstrip("\r")
            if text.strip():
                yield str(number - 1), text
            elif skip is None:
                raise DataError("empty passage", path=path, line=number)
            else:
                skip(DataError("empty passage", path=path, line=number))


def _passage(obj: dict, *, text_field: str, title_field: str | None, id_field: str) -> tuple[str | None, str]:
    """(id or None, title + " " + text) of one JSONL object (for :func:`read_records`)."""
    text = obj.get(text_field)
    if not isinstance(text, str):
        raise DataError("missing or not a string", field=text_field)
    title = obj.get(title_field) if title_field else None
    if isinstance(title, str) and title.strip():
        text = f"{title} {text}"
    if not text.strip():
        raise DataError("empty passage", field=text_field)
    pid = obj.get(id_field)
    return (None if pid is None else str(pid)), text


def _raw_to_npy(raw, path: Path, dtype, shape: tuple[int, int]) -> None:
    """Copy a raw row-major buffer of ``shape`` into an .npy file block by block."""
    target = np.lib.format.open_memmap(path, "w+", dtype, shape)
    raw.seek(0)
    row_bytes = shape[1] * np.dtype(dtype).itemsize
    block = max(1, (64 << 20) // max(1, row_bytes))
    for start in range(0, shape[0], block):
        rows = min(block, shape[0] - start)
        target[start : start + rows] = np.frombuffer(raw.read(rows * row_bytes), dtype=dtype).reshape(
            rows, shape[1]
        )
    target.flush()
    del target


class _null:
    """A do-nothing context manager standing in for an output that is switched off."""

    def __enter__(self):
        return None

    def __exit__(self, *exc) -> None:
        return None


def _bar(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="encode", unit="passage")


if __name__ == "__main__":
    sys.exit(main())
