"""TREC run files: the ranked lists behind a results table, re-scorable with trec_eval / pytrec_eval.

One line per (query, retrieved document), best first, six space-separated columns::

    qid Q0 docid rank score run_tag

``rank`` starts at 1 and follows m3lit's order (score descending, then corpus row ascending). trec_eval
and pytrec_eval ignore ``rank``: they sort by ``score``, held as a C float (float32), and break ties by
docid, descending, which would re-order documents with equal scores (duplicate passages are common). So
within a run of equal scores each later one is written one float32 step (``np.nextafter``) below its
predecessor: a change of a few 1e-7 relative, on tied documents only, that makes trec_eval see exactly
m3lit's order and so reproduce its metrics. Scores are written with 9 significant digits (exact float32).

A ranking's padding (index -1, after a short sparse/BM25 list) is not written.

Ids. BEIR allows any string as a query or document id, but a TREC line is split at whitespace, so ids are
written escaped (:func:`trec_id`): every whitespace character and every ``%`` becomes ``%XX`` per UTF-8
byte (``"getting started"`` -> ``getting%20started``, ``"50%"`` -> ``50%25``), the percent-encoding of
URLs; every other character is kept, so ids without whitespace or ``%`` are written as they are. The
escaping is reversible (:func:`from_trec_id`, ``urllib.parse.unquote``); :func:`read_trec_run` undoes it.
trec_eval matches ids as strings, so qrels given to it must hold the escaped ids too.

:func:`read_trec_run` reads such a file (or any TREC run over the same dataset) back into a
:class:`Ranking`, ordered as trec_eval orders it: score descending, ties by docid descending.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote

import numpy as np

from m3lit.files.jsonl import DataError
from m3lit.retrieval.beir import RetrievalDataset
from m3lit.retrieval.index.ranking import Ranking

__all__ = [
    "from_trec_id",
    "read_trec_run",
    "strictly_decreasing",
    "trec_id",
    "write_trec_run",
    "write_trec_runs",
]


def trec_id(value: str) -> str:
    """``value`` with whitespace and ``%`` percent-encoded (module docstring): one TREC column, reversibly.

    >>> trec_id("getting started"), trec_id("50%"), trec_id("d1")
    ('getting%20started', '50%25', 'd1')
    """
    return "".join(_percent(c) if c.isspace() or c == "%" else c for c in value)


def from_trec_id(text: str) -> str:
    """The id :func:`trec_id` escaped into ``text``: ``from_trec_id(trec_id(x)) == x`` for every string."""
    return unquote(text, errors="strict")


def _percent(char: str) -> str:
    return "".join(f"%{byte:02X}" for byte in char.encode("utf-8"))


def write_trec_run(path: str | Path, ranking: Ranking, dataset: RetrievalDataset, run_tag: str) -> Path:
    """Write ``ranking`` (rows = ``dataset.query_ids``, indices = corpus rows) as a TREC run file.

    Args:
        path: output file (parent folders are created).
        ranking: (Q, k) lists of corpus rows, best first.
        dataset: the dataset the ranking was made on (query and document ids).
        run_tag: the sixth column, e.g. the mode name (no whitespace).
    """
    if ranking.num_queries != len(dataset.query_ids):
        raise ValueError(f"write_trec_run: {ranking.num_queries} lists for {len(dataset.query_ids)} queries")
    if not run_tag or any(c.isspace() for c in run_tag):
        raise ValueError(f"write_trec_run: run_tag must be one word, got {run_tag!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for q, qid in enumerate(map(trec_id, dataset.query_ids)):
        docs, scores = ranking.row(q)
        for rank, (doc, score) in enumerate(zip(docs.tolist(), strictly_decreasing(scores), strict=True), 1):
            lines.append(f"{qid} Q0 {trec_id(dataset.corpus_ids[doc])} {rank} {score:.9g} {run_tag}\n")
    path.write_text("".join(lines), encoding="utf-8")
    return path


def strictly_decreasing(scores: np.ndarray) -> list[float]:
    """(k,) float32 scores sorted best first -> the same values, each tie stepped one float32 below its predecessor."""
    out = np.asarray(scores, dtype=np.float32).copy()
    for i in range(1, out.size):
        if out[i] >= out[i - 1]:
            out[i] = np.nextafter(out[i - 1], np.float32(-np.inf))
    return out.tolist()


def write_trec_runs(
    folder: str | Path, rankings: dict[str, Ranking], dataset: RetrievalDataset
) -> list[Path]:
    """One ``<folder>/<mode>.trec`` per mode of ``rankings``, the mode as run tag."""
    return [write_trec_run(Path(folder) / f"{mode}.trec", r, dataset, mode) for mode, r in rankings.items()]


def read_trec_run(path: str | Path, dataset: RetrievalDataset) -> Ranking:
    """Read a TREC run over ``dataset`` -> (Q, k) Ranking, rows = ``dataset.query_ids``.

    Each query's documents are ordered as trec_eval orders them (score descending, ties by docid as written,
    descending); a query absent from the file gets an empty list. Ids are unescaped (:func:`from_trec_id`). A malformed line, an id the dataset does
    not have or a document listed twice for one query is a :class:`DataError` naming the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: TREC run file not found")
    query_rows = {qid: q for q, qid in enumerate(dataset.query_ids)}
    doc_rows = {did: d for d, did in enumerate(dataset.corpus_ids)}
    lists: list[list[tuple[float, str]]] = [[] for _ in dataset.query_ids]
    seen: set[tuple[int, str]] = set()
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 6:
                raise DataError(
                    f"expected 6 columns (qid Q0 docid rank score tag), got {len(fields)}",
                    path=path,
                    line=line_no,
                )
            qid, _, did, _, score_text, _ = fields
            try:
                score = float(score_text)
            except ValueError:
                raise DataError(f"score {score_text!r} is not a number", path=path, line=line_no) from None
            written = did
            qid, did = _unescaped(qid, path, line_no), _unescaped(did, path, line_no)
            for kind, value, rows in (("query", qid, query_rows), ("document", did, doc_rows)):
                if value not in rows:
                    raise DataError(
                        f"unknown {kind} id {value!r} (not in {dataset.name})", path=path, line=line_no
                    )
            if (query_rows[qid], did) in seen:
                raise DataError(f"document {did!r} listed twice for query {qid!r}", path=path, line=line_no)
            seen.add((query_rows[qid], did))
            lists[query_rows[qid]].append((score, written, did))
    width = max((len(docs) for docs in lists), default=0)
    indices = np.full((len(lists), width), -1, np.int64)
    scores = np.full((len(lists), width), -np.inf, np.float32)
    for q, docs in enumerate(lists):
        docs.sort(reverse=True)  # score descending, then docid as written descending (trec_eval)
        indices[q, : len(docs)] = [doc_rows[did] for _, _, did in docs]
        scores[q, : len(docs)] = [score for score, _, _ in docs]
    return Ranking(indices, scores)


def _unescaped(text: str, path: Path, line_no: int) -> str:
    try:
        return from_trec_id(text)
    except UnicodeDecodeError:
        raise DataError(f"id {text!r} holds a %-escape that is not UTF-8", path=path, line=line_no) from None
