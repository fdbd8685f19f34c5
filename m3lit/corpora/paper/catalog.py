"""Which Hub dataset, at which revision, stands for each of the paper's benchmarks.

The original releases (``miracl/miracl`` + ``miracl/miracl-corpus``, ``Shitao/MLDR``, ``BeIR/<name>``) are
script-based datasets that ``datasets`` 4 and later no longer run. mteb keeps parquet copies of the same
corpora, queries and qrels on the Hub, pinned by commit; m3lit reads those copies at the revisions that
mteb 2.26 pins (:data:`BENCHMARKS`, :data:`BEIR_TASKS`), so a table names exactly the data it was made on.

How each maps onto BGE-M3 (arXiv:2402.03216, §4; spec §6):

- ``miracl``: MIRACL dev, 18 languages, nDCG@10 and Recall@100 (paper Table 1; Table 12 for Recall@100).
  MIRACL has no second labelled split, so its fusion weights are the fixed ones, never tuned on the
  evaluated queries.
- ``mldr``: MLDR test, 13 languages, nDCG@10 (paper Table 4), passages up to 8192 tokens (the paper's MLDR
  setting: queries 512, passages 8192); its dev split tunes the fusion weights.
- ``mkqa``: MKQA as the paper uses it (Table 2; Table 13 for Recall@20): the 25 non-English query
  languages (English on request) against the English NQ passages of BEIR (``mteb/nq``'s corpus), a hit
  when a retrieved passage contains an answer string (``qa_recall@100``, ``qa_recall@20``:
  :mod:`m3lit.retrieval.answers`). The questions and answers are FlagEmbedding's evaluation file
  ``MKQA_test-data.zip`` in ``Shitao/bge-m3-data``; that repository is read at ``main`` (the commit the
  file arrived in is not known here) and the commit actually read is recorded in each language's manifest.
- ``beir:<name>``: one BEIR set in English, nDCG@10 and Recall@100 (MSMARCO on its dev split, as BEIR
  reports it); a set that publishes dev qrels tunes the fusion weights on them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["BEIR_TASKS", "BENCHMARKS", "PaperBenchmark", "paper_benchmark"]


@dataclass(frozen=True)
class PaperBenchmark:
    """One benchmark of the paper, as a Hub dataset in mteb's retrieval layout.

    Attributes:
        name: what ``suite=`` names (``miracl``, ``mldr``, ``beir:scifact``).
        task: the suite task's name, i.e. the table's title.
        repo: Hub dataset id (configs ``<lang>-corpus``, ``<lang>-queries``, ``<lang>-qrels``, or
            ``corpus``, ``queries`` and ``default`` for a one-language set).
        revision: the commit the data is read at.
        languages: the Hub subsets (language codes), or ``()`` for a one-language set.
        test_split: the labelled split the table reports.
        dev_split: the split that tunes the fusion weights (``tune_fusion``), or None.
        metrics: the task's metrics, the primary one first.
        retrieval: RetrievalConfig overrides for the task (lengths).
        extra_languages: subsets that may be asked for but are not built by default (MKQA's English).
        corpus: (Hub id, revision) of a corpus shared by every language (MKQA), or None.
    """

    name: str
    task: str
    repo: str
    revision: str
    languages: tuple[str, ...]
    test_split: str
    dev_split: str | None
    metrics: tuple[str, ...]
    retrieval: dict[str, Any] = field(default_factory=dict)
    extra_languages: tuple[str, ...] = ()
    corpus: tuple[str, str] | None = None


_MIRACL_LANGUAGES = (
    "ar", "bn", "de", "en", "es", "fa", "fi", "fr", "hi", "id", "ja", "ko", "ru", "sw", "te", "th", "yo", "zh",
)  # fmt: skip
_MLDR_LANGUAGES = ("ar", "de", "en", "es", "fr", "hi", "it", "ja", "ko", "pt", "ru", "th", "zh")
_MKQA_LANGUAGES = (
    "ar", "da", "de", "es", "fi", "fr", "he", "hu", "it", "ja", "km", "ko", "ms", "nl", "no", "pl", "pt", "ru",
    "sv", "th", "tr", "vi", "zh_cn", "zh_hk", "zh_tw",
)  # fmt: skip

#: The multilingual benchmarks, by ``suite=`` name.
BENCHMARKS: dict[str, PaperBenchmark] = {
    "miracl": PaperBenchmark(
        name="miracl",
        task="MIRACL",
        repo="mteb/MIRACLRetrieval",
        revision="9c09abc13478308c27598f350e31d8f06b9b5481",
        languages=_MIRACL_LANGUAGES,
        test_split="dev",
        dev_split=None,
        metrics=("ndcg@10", "recall@100"),
    ),
    "mldr": PaperBenchmark(
        name="mldr",
        task="MLDR",
        repo="mteb/MultiLongDocRetrieval",
        revision="837028901907a7d419b4ab906f28e011ce1cc824",
        languages=_MLDR_LANGUAGES,
        test_split="test",
        dev_split="dev",
        metrics=("ndcg@10",),
        retrieval={"query_max_len": 512, "passage_max_len": 8192},
    ),
    "mkqa": PaperBenchmark(
        name="mkqa",
        task="MKQA",
        repo="Shitao/bge-m3-data",
        revision="main",
        languages=_MKQA_LANGUAGES,
        test_split="test",
        dev_split=None,
        metrics=("qa_recall@100", "qa_recall@20"),
        extra_languages=("en",),
        corpus=("mteb/nq", "b774495ed302d8c44a3a7ea25c90dbce03968f31"),
    ),
}

#: BEIR sets: ``beir:<name>`` -> (Hub id, revision, evaluated split). Revisions as pinned by mteb 2.26.
BEIR_TASKS: dict[str, tuple[str, str, str]] = {
    "arguana": ("mteb/arguana", "c22ab2a51041ffd869aaddef7af8d8215647e41a", "test"),
    "climate-fever": ("mteb/climate-fever", "47f2ac6acb640fc46020b02a5b59fdda04d39380", "test"),
    "dbpedia-entity": ("mteb/dbpedia", "c0f706b76e590d620bd6618b3ca8efdd34e2d659", "test"),
    "fever": ("mteb/fever", "bea83ef9e8fb933d90a2f1d5515737465d613e12", "test"),
    "fiqa": ("mteb/fiqa", "27a168819829fe9bcd655c2df245fb19452e8e06", "test"),
    "hotpotqa": ("mteb/hotpotqa", "ab518f4d6fcca38d87c25209f94beba119d02014", "test"),
    "msmarco": ("mteb/msmarco", "c5a29a104738b98a9e76336939199e264163d4a0", "dev"),
    "nfcorpus": ("mteb/nfcorpus", "ec0fa4fe99da2ff19ca1214b7966684033a58814", "test"),
    "nq": ("mteb/nq", "b774495ed302d8c44a3a7ea25c90dbce03968f31", "test"),
    "quora": ("mteb/quora", "e4e08e0b7dbe3c8700f0daef558ff32256715259", "test"),
    "scidocs": ("mteb/scidocs", "f8c2fcf00f625baaa80f62ec5bd9e1fff3b8ae88", "test"),
    "scifact": ("mteb/scifact", "d56462d0e63a25450459c4f213e49ffdb866f7f9", "test"),
    "trec-covid": ("mteb/trec-covid", "bb9466bac8153a0349341eb1b22e06409e78ef4e", "test"),
    "webis-touche2020": ("mteb/touche2020", "a34f9a33db75fa0cbb21bb5cfc3dae8dc8bec93f", "test"),
}


def paper_benchmark(name: str) -> PaperBenchmark:
    """The benchmark that ``suite=<name>`` names.

    Raises:
        KeyError: an unknown name; the message lists the known ones.
    """
    if name in BENCHMARKS:
        return BENCHMARKS[name]
    kind, _, beir = name.partition(":")
    if kind == "beir" and beir in BEIR_TASKS:
        repo, revision, split = BEIR_TASKS[beir]
        return PaperBenchmark(
            name=name,
            task=f"BEIR {beir}",
            repo=repo,
            revision=revision,
            languages=(),
            test_split=split,
            dev_split="dev" if split != "dev" else None,
            metrics=("ndcg@10", "recall@100"),
        )
    known = [*BENCHMARKS, *(f"beir:{b}" for b in BEIR_TASKS)]
    raise KeyError(f"unknown benchmark {name!r}; known: {', '.join(known)}")
