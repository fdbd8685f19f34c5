"""Reading a benchmark's Hub dataset with mteb's retrieval loader, and what a failed read says."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, nullcontext

from m3lit.corpora.paper.catalog import PaperBenchmark
from m3lit.data.hf_cache import local_folder_cache
from m3lit.files.errors import UsageError, UserError

__all__ = ["HubReadError", "corpus_rows", "has_split", "loader", "reading"]


class HubReadError(UserError):
    """A benchmark's Hub dataset could not be read (offline, no access, or a local copy in another layout)."""


def loader(repo: str, revision: str, split: str, subset: str):
    """mteb's retrieval loader for one split of one subset (reads the Hub, or the local copy)."""
    try:
        from mteb.abstasks.retrieval_dataset_loaders import RetrievalDatasetLoader
    except ImportError:
        raise UsageError("suite=<benchmark> reads the Hub through mteb: pip install 'm3lit[mteb]'") from None
    return RetrievalDatasetLoader(
        hf_repo=repo, revision=_revision(repo, revision), split=split, config=subset or None
    )


def has_split(repo: str, revision: str, subset: str, split: str) -> bool:
    """Whether the qrels config of ``subset`` publishes ``split`` (mteb's loader would silently fall back
    to the only split there is, so a missing dev split must be detected here, not by loading it)."""
    from datasets import get_dataset_split_names

    config = f"{subset}-qrels" if subset else "default"
    return split in get_dataset_split_names(repo, config_name=config, revision=_revision(repo, revision))


def _revision(repo: str, revision: str) -> str | None:
    """``revision`` for a Hub id; None for a local copy (an absolute path), which has no revisions: there,
    ``datasets`` would key its cache by the revision and serve another copy's rows."""
    return None if os.path.isabs(repo) else revision


def corpus_rows(corpus) -> Iterable[dict[str, str]]:
    """BEIR corpus lines from mteb's corpus Dataset (columns id, text, optional title), streamed."""
    titles = "title" in corpus.column_names
    for row in corpus:
        yield {"_id": str(row["id"]), "title": (row["title"] or "") if titles else "", "text": row["text"]}


@contextmanager
def reading(
    bench: PaperBenchmark, repo: str, revision: str, what: str = "", *, source: str | None = None
) -> Iterator[None]:
    """Turn any failure to read ``repo`` at ``revision`` (network, access, layout) into one
    :class:`HubReadError` line naming the benchmark, the dataset and what was being read.

    ``source`` is what is actually read when it is not ``repo`` itself: a local copy (an absolute path),
    which is read with a ``datasets`` cache of its own (:mod:`m3lit.data.hf_cache`).
    """
    try:
        local = source is not None and os.path.isabs(source)
        with local_folder_cache(source) if local else nullcontext():
            yield
    except UserError:
        raise
    except Exception as error:  # the datasets / huggingface_hub error types vary by version and cause
        first = (str(error).strip().splitlines() or [""])[0]
        raise HubReadError(
            f"suite={bench.name}: cannot read {repo}@{revision[:12]}{f' ({what})' if what else ''}: "
            f"{type(error).__name__}: {first} (offline, pass hub_dir=DIR with a local copy at DIR/{repo})"
        ) from error
