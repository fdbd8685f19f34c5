"""``python -m m3lit.vectordb index|search``: load passages into Qdrant, then search them as m3lit does.

Run::

    python -m m3lit.vectordb index path=qdrant/ collection=docs encoded=emb/
    python -m m3lit.vectordb index path=qdrant/ collection=docs model=export/ corpus=corpus.jsonl
    python -m m3lit.vectordb search path=qdrant/ collection=docs model=export/ dataset_dir=beir/ k=10

``index`` loads an ``m3lit.encode`` output folder (``dense.npy``, ``sparse.jsonl``, ``colbert.npy``,
``colbert_offsets.npy``, ``ids.txt``), or first encodes ``corpus`` with ``model`` into
``<path>/encoded/<collection>/`` (:func:`m3lit.encode.encode_file`, all three outputs). ``search`` encodes the
queries of a BEIR folder with ``model``, ranks the collection in each mode (:mod:`m3lit.vectordb.search`),
prints the metrics and, with ``output_dir``, writes ``results.json`` and one TREC run file per mode.
``path`` is Qdrant's local-mode folder (the database embedded in this process); ``url`` names a Qdrant
server instead. A user error ends the command with one ``error: ...`` line (exit status 2 for a bad
option, 1 for a bad file or model; ``--debug``: traceback).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from m3lit.files.errors import PathError, UsageError, run_command
from m3lit.files.options import command_help, parse_key_values

__all__ = ["INDEX_OPTIONS", "SEARCH_OPTIONS", "main"]

#: ``index`` options (``key=value``) and their defaults.
INDEX_OPTIONS: dict[str, Any] = {
    "path": None,  # Qdrant local-mode folder (created); required unless url is given
    "url": None,  # a Qdrant server (http://host:6333) instead of local mode
    "collection": None,  # collection name (replaced if it exists); required
    "encoded": None,  # an m3lit.encode output folder with dense, sparse and colbert (colbert=true)
    "model": None,  # with corpus: encode it first (export folder, .ckpt, hub id)
    "corpus": None,  # with model: passages file (.jsonl as m3lit.encode reads it, or plain text)
    "max_length": 512,  # with model: passage truncation in tokens
    "batch_size": 256,  # points per upsert
}

#: ``search`` options (``key=value``) and their defaults.
SEARCH_OPTIONS: dict[str, Any] = {
    "path": None,  # Qdrant local-mode folder written by index; required unless url is given
    "url": None,  # a Qdrant server instead of local mode
    "collection": None,  # collection name; required
    "model": None,  # the model that encoded the collection (encodes the queries); required
    "dataset_dir": None,  # BEIR folder: queries.jsonl + qrels/<split>.tsv; its corpus ids: the collection's
    "split": "test",  # qrels split
    "modes": "dense,sparse,dense+sparse,all",  # comma-separated subset of these four
    "metrics": "ndcg@10,recall@100",  # comma-separated metrics (ndcg@K, recall@K, mrr@K)
    "query_max_len": 512,  # query truncation in tokens
    "hybrid_k": 1000,  # Dense+Sparse: depth of each candidate list
    "hybrid_weights": "1.0,0.3",  # Dense+Sparse: w_dense,w_sparse
    "all_rerank_k": 200,  # All: dense candidates re-ranked with the three scores
    "all_candidates": "dense",  # All: dense (m3lit's default) or hybrid (union with the sparse top)
    "all_weights": "1.0,0.3,1.0",  # All: w_dense,w_sparse,w_colbert
    "output_dir": None,  # write results.json and runs/<mode>.trec here; null: print only
}


def main(argv: list[str] | None = None) -> dict:
    """Command-line entry point (``python -m m3lit.vectordb``); a user error prints one ``error:`` line."""
    args = list(sys.argv[1:] if argv is None else argv)
    command = args[0] if args else ""
    if command not in ("index", "search"):
        return run_command(_usage, args, help=lambda: __doc__.strip())
    table = INDEX_OPTIONS if command == "index" else SEARCH_OPTIONS
    name = "INDEX_OPTIONS" if command == "index" else "SEARCH_OPTIONS"
    work = _index if command == "index" else _search
    return run_command(work, args[1:], help=lambda: command_help(__name__, table, name))


def _usage(args: list[str]) -> None:
    raise UsageError(f"vectordb: expected 'index' or 'search' first, got {' '.join(args) or 'nothing'}")


def _client(options: dict[str, Any], must_exist: bool):
    from m3lit.vectordb.collection import open_client

    if not options["path"] and not options["url"]:
        raise UsageError("vectordb: path=... (a local-mode folder) or url=... (a Qdrant server) is required")
    if must_exist and options["path"] and not Path(options["path"]).is_dir():
        raise PathError("path", options["path"], "no such folder (run python -m m3lit.vectordb index first)")
    return open_client(options["path"], options["url"])


def _index(args: list[str]) -> dict:
    options = parse_key_values(args, INDEX_OPTIONS, "vectordb index", required=("collection",))
    if (options["encoded"] is None) == (options["model"] is None or options["corpus"] is None):
        raise UsageError("vectordb index: give encoded=<m3lit.encode folder>, or model=... with corpus=...")
    from m3lit.vectordb.collection import index_encoded, load_encoded

    folder = options["encoded"]
    if folder is not None:
        load_encoded(folder)  # every file checked before the database is touched
    else:
        from m3lit.encode import encode_file

        if not options["path"]:
            raise UsageError("vectordb index: model=/corpus= encode into <path>/encoded/: give path=")
        folder = Path(options["path"]) / "encoded" / options["collection"]
        encode_file(
            model=options["model"], input=options["corpus"], output_dir=str(folder), colbert=True,
            max_length=options["max_length"],
        )  # fmt: skip
    client = _client(options, must_exist=False)
    count = index_encoded(client, options["collection"], folder, batch_size=options["batch_size"])
    print(f"indexed {count} passages from {folder} into collection {options['collection']}")
    return {"count": count, "encoded": str(folder)}


def _numbers(key: str, value: str, size: int) -> tuple[float, ...]:
    try:
        numbers = tuple(float(v) for v in str(value).strip("[]()").split(","))
    except ValueError:
        numbers = ()
    if len(numbers) != size:
        raise UsageError(f"vectordb search: {key}={value}: expected {size} comma-separated numbers")
    return numbers


def _search(args: list[str]) -> dict:
    required = ("collection", "model", "dataset_dir")
    options = parse_key_values(args, SEARCH_OPTIONS, "vectordb search", required=required)
    from m3lit.model.reference import check_model_reference
    from m3lit.retrieval.beir import check_beir_folder
    from m3lit.retrieval.config import RetrievalConfig
    from m3lit.vectordb.search import MODES, plan_depths

    modes = tuple(m.strip() for m in options["modes"].split(",") if m.strip())
    metrics = [m.strip() for m in options["metrics"].split(",") if m.strip()]
    try:
        config = RetrievalConfig(
            query_max_len=options["query_max_len"], hybrid_k=options["hybrid_k"],
            hybrid_weights=_numbers("hybrid_weights", options["hybrid_weights"], 2),
            all_rerank_k=options["all_rerank_k"], all_candidates=options["all_candidates"],
            all_weights=_numbers("all_weights", options["all_weights"], 3),
        )  # fmt: skip
        plan_depths(modes, config, 1)
    except ValueError as error:
        raise UsageError(f"vectordb search: {error} (modes: {list(MODES)})") from None
    check_beir_folder(options["dataset_dir"], options["split"])
    check_model_reference(options["model"], "model")
    client = _client(options, must_exist=True)
    if not client.collection_exists(options["collection"]):
        raise UsageError(f"vectordb search: collection={options['collection']}: not in the database")
    return _run_search(client, options, modes, metrics, config)


def _run_search(client, options: dict[str, Any], modes, metrics, config) -> dict:
    from m3lit.model.training_checkpoint import load_model
    from m3lit.retrieval.beir import load_beir
    from m3lit.retrieval.metrics import parse_metric
    from m3lit.retrieval.pipeline import score_rankings
    from m3lit.retrieval.report.write import markdown_tables
    from m3lit.vectordb.collection import doc_ids
    from m3lit.vectordb.search import dataset_rows, encode_queries, relabel, search

    dataset = load_beir(options["dataset_dir"], options["split"])
    model = load_model(options["model"]).eval()
    queries = encode_queries(model, dataset.query_texts, config)
    depth = max(parse_metric(m)[1] for m in metrics) + 1  # +1: a hit on the query's own id is dropped
    found = search(client, options["collection"], queries, modes, config, depth)
    rows = dataset_rows(doc_ids(client, options["collection"]), dataset.corpus_ids)
    rankings = {mode: relabel(ranking, rows) for mode, ranking in found.rankings.items()}
    runs = None if options["output_dir"] is None else Path(options["output_dir"]) / "runs"
    results = score_rankings(rankings, dataset, metrics, runs_dir=runs)
    print(markdown_tables(results))
    print(f"search: {len(dataset.query_ids)} queries in {found.timings['search_total']:.2f} s")
    if options["output_dir"] is not None:
        payload = {
            "settings": {**options, "modes": list(modes)},
            "results": results,
            "timings": found.timings,
        }
        path = Path(options["output_dir"]) / "results.json"
        path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return {"results": results, "timings": found.timings}


if __name__ == "__main__":
    main()
