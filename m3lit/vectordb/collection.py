"""One Qdrant collection per corpus, holding BGE-M3's three representations of every passage.

A point is one passage: its id is the passage's row in the ``encode`` output (``ids.txt`` order) and its
payload ``{"doc_id": ...}`` the passage's own id. Three named vectors (BGE-M3 §3.2):

    dense     (H,) float32, DOT: s_dense = <e_q, e_p> (Eq. 1; the vectors are L2-normalised, so cosine)
    sparse    {token id: weight}, DOT: s_lex = sum over shared tokens of w_q,t * w_p,t (Eq. 2)
    colbert   (n_tokens, Dc) float32, multi-vector, MAX_SIM: sum_i max_j <q_i, p_j> (Eq. 3 without the 1/N_q,
              which :mod:`m3lit.vectordb.search` divides out)

The collection lives in Qdrant's local mode (``QdrantClient(path=...)``: the engine embedded in the process,
persisted in a folder) or on a Qdrant server (``QdrantClient(url=...)``); the code is the same.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from m3lit.files.errors import PathError, UserError

__all__ = [
    "DOC_ID",
    "VECTORS",
    "open_client",
    "create_collection",
    "load_encoded",
    "index_encoded",
    "doc_ids",
]

#: Payload key holding a passage's own id.
DOC_ID = "doc_id"
#: Names of the three vectors of a point.
VECTORS = ("dense", "sparse", "colbert")


def open_client(path: str | Path | None = None, url: str | None = None):
    """A Qdrant client: a server at ``url``, else local mode persisted in ``path`` (``None``: in memory)."""
    from qdrant_client import QdrantClient

    if url:
        return QdrantClient(url=url)
    return QdrantClient(path=str(path)) if path else QdrantClient(location=":memory:")


def create_collection(client, name: str, dense_dim: int, colbert_dim: int) -> None:
    """(Re)create collection ``name`` with the dense, sparse and ColBERT vectors of the module docstring."""
    from qdrant_client import models

    if client.collection_exists(name):
        client.delete_collection(name)
    client.create_collection(
        name,
        vectors_config={
            "dense": models.VectorParams(size=dense_dim, distance=models.Distance.DOT),
            "colbert": models.VectorParams(
                size=colbert_dim,
                distance=models.Distance.DOT,
                multivector_config=models.MultiVectorConfig(comparator=models.MultiVectorComparator.MAX_SIM),
            ),
        },
        sparse_vectors_config={"sparse": models.SparseVectorParams()},
    )


def load_encoded(folder: str | Path) -> tuple[list[str], np.ndarray, list[dict], np.ndarray, np.ndarray]:
    """Read an ``m3lit.encode`` output: ``(ids, dense (N, H), sparse rows, colbert (T, Dc), offsets (N+1,))``.

    The folder must hold all three representations (``python -m m3lit.encode ... colbert=true``).

    Raises:
        PathError: a missing file (naming it and the command that writes it).
        UserError: files that disagree on the number of passages, or a sparse line for another id.
    """
    folder = Path(folder)
    for name in ("ids.txt", "dense.npy", "sparse.jsonl", "colbert.npy", "colbert_offsets.npy"):
        if not (folder / name).is_file():
            why = "write it with python -m m3lit.encode ... dense=true sparse=true colbert=true"
            raise PathError("encoded", str(folder / name), f"missing ({why})")
    ids = (folder / "ids.txt").read_text(encoding="utf-8").splitlines()
    dense = np.load(folder / "dense.npy", mmap_mode="r")
    colbert = np.load(folder / "colbert.npy", mmap_mode="r")
    offsets = np.load(folder / "colbert_offsets.npy")
    with open(folder / "sparse.jsonl", encoding="utf-8") as handle:
        sparse = [json.loads(line) for line in handle if line.strip()]
    sizes = {"ids.txt": len(ids), "dense.npy": len(dense), "sparse.jsonl": len(sparse)}
    sizes["colbert_offsets.npy"] = len(offsets) - 1
    if len(set(sizes.values())) != 1 or offsets[-1] != len(colbert):
        raise UserError(f"{folder}: the encode outputs disagree on the number of passages: {sizes}")
    for line, (pid, row) in enumerate(zip(ids, sparse, strict=True), start=1):
        if row.get("id") != pid:
            raise UserError(f"{folder / 'sparse.jsonl'}:{line}: id {row.get('id')!r} but ids.txt has {pid!r}")
    return ids, dense, sparse, colbert, offsets


def _points(ids, dense, sparse, colbert, offsets, start: int, stop: int) -> Iterator:
    from qdrant_client import models

    for row in range(start, stop):
        weights = sparse[row]["weights"]
        yield models.PointStruct(
            id=row,
            vector={
                "dense": np.asarray(dense[row], np.float32).tolist(),
                "sparse": models.SparseVector(
                    indices=[int(t) for t in weights], values=[float(w) for w in weights.values()]
                ),
                "colbert": np.asarray(colbert[offsets[row] : offsets[row + 1]], np.float32).tolist(),
            },
            payload={DOC_ID: ids[row]},
        )


def index_encoded(client, name: str, folder: str | Path, batch_size: int = 256) -> int:
    """Load an ``m3lit.encode`` output folder into a new collection ``name``; return the number of points."""
    ids, dense, sparse, colbert, offsets = load_encoded(folder)
    create_collection(client, name, dense.shape[1], colbert.shape[1])
    for start in range(0, len(ids), batch_size):
        stop = min(start + batch_size, len(ids))
        client.upsert(
            name, points=list(_points(ids, dense, sparse, colbert, offsets, start, stop)), wait=True
        )
    return len(ids)


def doc_ids(client, name: str) -> list[str]:
    """The passage ids of collection ``name`` by point id (= row), read back from the payloads."""
    count = client.count(name, exact=True).count
    found: list[str | None] = [None] * count
    offset = None
    while True:
        points, offset = client.scroll(name, limit=4096, offset=offset, with_payload=[DOC_ID])
        for point in points:
            found[int(point.id)] = point.payload[DOC_ID]
        if offset is None:
            return [str(pid) for pid in found]
