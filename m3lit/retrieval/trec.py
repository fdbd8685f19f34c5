"""TREC run files: the ranked lists behind a results table, re-scorable with trec_eval / pytrec_eval.

One line per (query, retrieved document), best first, six space-separated columns::

    qid Q0 docid rank score run_tag

``rank`` starts at 1 and follows m3lit's order (score descending, then corpus row ascending); ``score``
is the float32 score written with 9 significant digits (enough to tell any two float32 values apart).
trec_eval orders a query's documents by ``score`` alone (ties by docid), so two documents with exactly
equal scores may be re-ordered by it; no such tie occurs with dense scores in practice.

A ranking's padding (index -1, after a short sparse/BM25 list) is not written.
"""

from __future__ import annotations

from pathlib import Path

from m3lit.retrieval.beir import RetrievalDataset
from m3lit.retrieval.ranking import Ranking

__all__ = ["write_trec_run", "write_trec_runs"]


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
    for kind, ids in (("query", dataset.query_ids), ("document", dataset.corpus_ids)):
        bad = next((i for i in ids if any(c.isspace() for c in i)), None)
        if bad is not None:
            raise ValueError(
                f"write_trec_run: {kind} id {bad!r} contains whitespace (not representable in TREC)"
            )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for q, qid in enumerate(dataset.query_ids):
        docs, scores = ranking.row(q)
        for rank, (doc, score) in enumerate(zip(docs.tolist(), scores.tolist(), strict=True), start=1):
            lines.append(f"{qid} Q0 {dataset.corpus_ids[doc]} {rank} {score:.9g} {run_tag}\n")
    path.write_text("".join(lines), encoding="utf-8")
    return path


def write_trec_runs(
    folder: str | Path, rankings: dict[str, Ranking], dataset: RetrievalDataset
) -> list[Path]:
    """One ``<folder>/<mode>.trec`` per mode of ``rankings``, the mode as run tag."""
    return [write_trec_run(Path(folder) / f"{mode}.trec", r, dataset, mode) for mode, r in rankings.items()]
