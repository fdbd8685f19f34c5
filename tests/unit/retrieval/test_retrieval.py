"""Every index's top-k equals brute-force scoring of every (query, document) pair on random data."""

from __future__ import annotations

import numpy as np
import pytest

from m3lit.retrieval import (
    BM25Index,
    ColbertStore,
    DenseIndex,
    Ranking,
    SparseIndex,
    fuse,
    sparse_matrix,
    union_candidates,
)


def brute_topk(scores: np.ndarray, k: int, keep: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Reference top-k: sort every column by (score desc, index asc) with Python's sort; -1/-inf padded."""
    idx = np.full((scores.shape[0], k), -1, np.int64)
    val = np.full((scores.shape[0], k), -np.inf)
    for q in range(scores.shape[0]):
        docs = [d for d in range(scores.shape[1]) if keep is None or keep[q, d]]
        docs.sort(key=lambda d: (-scores[q, d], d))
        docs = docs[:k]
        idx[q, : len(docs)] = docs
        val[q, : len(docs)] = scores[q, docs]
    return idx, val


def assert_ranking(got: Ranking, ref_idx: np.ndarray, ref_val: np.ndarray, atol: float = 1e-5) -> None:
    np.testing.assert_array_equal(got.indices, ref_idx)
    np.testing.assert_allclose(got.scores, ref_val, atol=atol, rtol=1e-5)


def random_unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def random_sparse(
    rng: np.random.Generator, n: int, vocab: int, lo: int, hi: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for _ in range(n):
        ids = rng.choice(vocab, size=int(rng.integers(lo, hi + 1)), replace=False)
        out.append((ids.astype(np.int64), rng.uniform(0.05, 1.0, ids.size).astype(np.float32)))
    return out


def naive_lexical(q: tuple[np.ndarray, np.ndarray], p: tuple[np.ndarray, np.ndarray]) -> float:
    """s_lex = sum over shared tokens of w_q * w_p (BGE-M3 §3.2), straight from the formula."""
    pw = {int(i): float(w) for i, w in zip(*p, strict=True)}
    return sum(float(w) * pw[int(i)] for i, w in zip(*q, strict=True) if int(i) in pw)


def naive_maxsim(q: np.ndarray, p: np.ndarray) -> float:
    """s_mul = mean over query vectors of the max inner product with any passage vector."""
    return float(np.mean([max(float(qi @ pj) for pj in p) for qi in q]))


# ---------------------------------------------------------------------------------------------- ranking
def test_ranking_from_scores_breaks_ties_by_lower_index():
    scores = np.array([[0.5, 0.7, 0.7, 0.1, 0.7], [1.0, 1.0, 1.0, 1.0, 1.0]], np.float32)
    got = Ranking.from_scores(scores, k=2)
    assert got.indices.tolist() == [[1, 2], [0, 1]]
    assert_ranking(got, *brute_topk(scores, 2))


# ---------------------------------------------------------------------------------------------- dense
@pytest.mark.parametrize("k", [1, 7, 500])
def test_dense_chunked_search_equals_brute_force(k):
    rng = np.random.default_rng(0)
    docs, queries = random_unit(rng, 300, 16), random_unit(rng, 9, 16)
    index = DenseIndex(16, capacity=100, block_elements=9 * 40)  # 40-document chunks, grown capacity
    for shard in np.array_split(docs, 4):
        index.add(shard)
    assert len(index) == 300
    scores = queries.astype(np.float64) @ docs.T.astype(np.float64)
    assert_ranking(index.search(queries, k), *brute_topk(scores, min(k, 300)))


def test_dense_float16_storage_and_candidate_scores():
    rng = np.random.default_rng(1)
    docs, queries = random_unit(rng, 120, 8), random_unit(rng, 5, 8)
    index = DenseIndex(8, dtype="float16")
    index.add(docs)
    stored = docs.astype(np.float16).astype(np.float64)
    scores = queries.astype(np.float64) @ stored.T
    assert_ranking(index.search(queries, 10), *brute_topk(scores, 10))
    cand = np.array([[3, -1, 7], [0, 1, 2], [-1, -1, -1], [119, 5, 5], [9, 8, 7]])
    got = index.score(queries, cand)
    expected = np.where(cand >= 0, np.take_along_axis(scores, np.maximum(cand, 0), 1), -np.inf)
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_dense_faiss_flat_equals_brute_force_and_ivf_returns_true_scores():
    rng = np.random.default_rng(2)
    docs, queries = random_unit(rng, 400, 16), random_unit(rng, 6, 16)
    scores = queries.astype(np.float64) @ docs.T.astype(np.float64)
    flat = DenseIndex(16, faiss_factory="Flat")
    for shard in np.array_split(docs, 3):
        flat.add(shard)
    assert_ranking(flat.search(queries, 12), *brute_topk(scores, 12))
    ivf = DenseIndex(16, faiss_factory="IVF4,Flat")  # trained on the first shard; approximate search
    for shard in np.array_split(docs, 2):
        ivf.add(shard)
    got = ivf.search(queries, 12)
    valid = got.indices >= 0
    assert valid[:, 0].all()
    true = np.take_along_axis(scores, np.maximum(got.indices, 0), 1)
    np.testing.assert_allclose(got.scores[valid], true[valid], atol=1e-5)


def test_dense_rejects_bad_shapes():
    index = DenseIndex(4)
    with pytest.raises(ValueError, match=r"expected \(n, 4\)"):
        index.add(np.zeros((3, 5), np.float32))
    with pytest.raises(ValueError, match="not finite"):
        index.add(np.full((1, 4), np.nan, np.float32))


# ---------------------------------------------------------------------------------------------- sparse
def test_sparse_search_and_score_equal_brute_force():
    rng = np.random.default_rng(3)
    vocab = 120
    docs = random_sparse(rng, 200, vocab, 1, 12)
    docs[50] = docs[10]  # identical documents tie: the lower index must come first
    queries = random_sparse(rng, 7, vocab, 1, 6)
    queries[0] = (docs[10][0][:3], np.ones(min(3, docs[10][0].size), np.float32))
    queries.append((np.array([vocab - 1]), np.array([0.5], np.float32)))  # may match nothing
    index = SparseIndex(vocab)
    index.add(docs[:80])
    index.add(sparse_matrix(docs[80:], vocab))
    scores = np.array([[naive_lexical(q, p) for p in docs] for q in queries])
    for k in (1, 5, 300):
        ref_idx, ref_val = brute_topk(scores, k, keep=scores > 0)
        width = int((ref_idx >= 0).sum(1).max())
        assert_ranking(index.search(sparse_matrix(queries, vocab), k), ref_idx[:, :width], ref_val[:, :width])
    got0 = index.search(sparse_matrix(queries, vocab), 300).row(0)[0].tolist()
    assert got0.index(10) < got0.index(50)
    cand = rng.integers(-1, 200, size=(len(queries), 9))
    expected = np.where(cand >= 0, np.take_along_axis(scores, np.maximum(cand, 0), 1), -np.inf)
    np.testing.assert_allclose(index.score(sparse_matrix(queries, vocab), cand), expected, rtol=1e-5)


def test_sparse_matrix_rejects_bad_vectors():
    with pytest.raises(ValueError, match="sparse vector 1: repeated token ids"):
        sparse_matrix([(np.array([1]), np.array([1.0])), (np.array([2, 2]), np.array([1.0, 2.0]))], 10)
    with pytest.raises(ValueError, match=r"sparse vector 0: token id outside \[0, 10\)"):
        sparse_matrix([(np.array([10]), np.array([1.0]))], 10)
    with pytest.raises(ValueError, match="finite and >= 0"):
        sparse_matrix([(np.array([1]), np.array([-1.0]))], 10)
    unsorted = (np.array([7, 2, 5]), np.array([0.5, 1.0, 2.0]))  # fine: ids in any order
    with pytest.raises(ValueError, match="sparse vector 2: repeated token ids"):
        sparse_matrix(
            [unsorted, (np.array([9, 1]), np.array([1.0, 1.0])), (np.array([5, 3, 5]), np.ones(3))], 10
        )
    with pytest.raises(ValueError, match="sparse vector 1: .*finite"):
        sparse_matrix([unsorted, (np.array([4]), np.array([np.nan]))], 10)


def test_sparse_matrix_equals_dense_rows_whatever_the_id_order():
    rng = np.random.default_rng(0)
    vectors = [(rng.permutation(50)[: rng.integers(0, 8)], rng.random(8)) for _ in range(20)]
    vectors = [(ids, w[: ids.size]) for ids, w in vectors]
    dense = np.zeros((20, 50), np.float32)
    for row, (ids, w) in enumerate(vectors):
        dense[row, ids] = w
    matrix = sparse_matrix(vectors, 50)
    assert matrix.has_canonical_format
    np.testing.assert_array_equal(matrix.toarray(), dense)


# ---------------------------------------------------------------------------------------------- colbert
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_colbert_scores_equal_naive_maxsim(dtype, monkeypatch):
    import m3lit.retrieval.index.colbert as colbert_module

    monkeypatch.setattr(colbert_module, "CANDIDATE_ELEMENTS", 3 * 12 * 8)  # groups of ~3 padded candidates
    rng = np.random.default_rng(4)
    docs = [random_unit(rng, int(n), 8) for n in rng.integers(1, 13, size=40)]
    queries = [random_unit(rng, int(n), 8) for n in rng.integers(1, 7, size=5)]
    store = ColbertStore(8, dtype=dtype)
    store.add(np.arange(0, 25), docs[:25])
    store.add(np.arange(25, 40), docs[25:])
    assert len(store) == 40
    stored = [d.astype(dtype).astype(np.float64) for d in docs]
    scores = np.array([[naive_maxsim(q.astype(np.float64), p) for p in stored] for q in queries])
    cand = np.stack([rng.permutation(40)[:12] for _ in queries])
    cand[1, 5:] = -1
    got = store.score(queries, cand)
    expected = np.where(cand >= 0, np.take_along_axis(scores, np.maximum(cand, 0), 1), -np.inf)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    # Multi-vec mode = the candidates re-ranked by MaxSim: with every document a candidate, brute force.
    every = np.tile(np.arange(40), (len(queries), 1))
    assert_ranking(
        fuse(every, None, None, store.score(queries, every), (0, 0, 1), k=10), *brute_topk(scores, 10)
    )
    with pytest.raises(KeyError, match="document 41 is not stored"):
        store.get(41)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("blocks", [1, 3])
@pytest.mark.parametrize("elements", [5 * 8, 8 * 1024 * 1024])  # one item per GEMM; one GEMM in all
@pytest.mark.parametrize("chunks", [(3,), (128, 64, 32, 16, 8)])  # documents cut into many items; adaptive
def test_colbert_padding_free_scores_equal_per_pair_loop(dtype, blocks, elements, chunks, monkeypatch):
    import m3lit.retrieval.index.colbert as colbert_module

    monkeypatch.setattr(colbert_module, "CANDIDATE_ELEMENTS", elements)
    monkeypatch.setattr(colbert_module, "_CHUNK_SIZES", chunks)
    rng = np.random.default_rng(7)
    lengths = rng.integers(1, 20, size=30)
    lengths[:3], lengths[3] = 1, 0  # length-1 documents and one without vectors
    docs = [rng.standard_normal((int(n), 8)).astype(np.float32) for n in lengths]
    queries = [rng.standard_normal((n, 8)).astype(np.float32) for n in (5, 1, 9, 0, 3, 7)]  # one empty
    store = ColbertStore(8, dtype=dtype)
    for part in np.array_split(rng.permutation(30), blocks):  # documents added out of index order
        store.add(part, [docs[i] for i in part])
    cand = rng.integers(0, 30, size=(6, 15))
    cand[0, :4] = [3, 0, 3, 1]  # duplicates, the empty document, length-1 documents
    cand[2, :5] = cand[2, 5]
    cand[1, 9:], cand[5] = -1, -1  # no candidate at all for query 5

    def naive(q: np.ndarray, p: np.ndarray) -> float:  # per-pair MaxSim; 0 without vectors on a side
        if not len(q) or not len(p):
            return 0.0
        return float(np.mean([max(float(qi @ pj) for pj in p) for qi in q.astype(np.float64)]))

    stored = [d.astype(dtype).astype(np.float64) for d in docs]
    expected = [
        [naive(q, stored[c]) if c >= 0 else -np.inf for c in row]
        for q, row in zip(queries, cand, strict=True)
    ]
    got = store.score(queries, cand)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, np.array(expected), rtol=1e-6, atol=1e-5)
    with pytest.raises(KeyError, match=r"documents \[31\] are not stored"):
        store.score(queries[:1], np.array([[0, 31]]))


# ---------------------------------------------------------------------------------------------- hybrid
def test_union_and_fusion_equal_brute_force():
    rng = np.random.default_rng(5)
    vocab, n_docs = 80, 150
    dense_docs, dense_q = random_unit(rng, n_docs, 8), random_unit(rng, 6, 8)
    sparse_docs, sparse_q = random_sparse(rng, n_docs, vocab, 1, 8), random_sparse(rng, 6, vocab, 1, 5)
    d_index, s_index = DenseIndex(8), SparseIndex(vocab)
    d_index.add(dense_docs)
    s_index.add(sparse_docs)
    q_csr = sparse_matrix(sparse_q, vocab)
    d_scores = dense_q.astype(np.float64) @ dense_docs.T.astype(np.float64)
    s_scores = np.array([[naive_lexical(q, p) for p in sparse_docs] for q in sparse_q])
    w_d, w_s = 0.2, 0.8
    fused_ref = w_d * d_scores + w_s * s_scores
    for depth in (10, n_docs):  # depth >= N: the union holds every document -> exact brute force
        dense_rank, sparse_rank = d_index.search(dense_q, depth), s_index.search(q_csr, depth)
        cand = union_candidates(dense_rank, sparse_rank)
        for q in range(len(dense_q)):
            expected = set(dense_rank.row(q)[0].tolist()) | set(sparse_rank.row(q)[0].tolist())
            assert cand[q][cand[q] >= 0].tolist() == sorted(expected)
        got = fuse(
            cand, d_index.score(dense_q, cand), s_index.score(q_csr, cand), None, (w_d, w_s, 0.0), k=10
        )
        keep = np.zeros_like(fused_ref, bool)
        for q in range(len(dense_q)):
            keep[q, cand[q][cand[q] >= 0]] = True
        assert_ranking(got, *brute_topk(fused_ref, 10, keep=keep))
        if depth == n_docs:
            assert keep.all()


# ---------------------------------------------------------------------------------------------- bm25
def test_bm25_equals_formula_and_bm25s():
    import bm25s

    rng = np.random.default_rng(6)
    vocab = 40
    docs = [rng.integers(0, vocab, size=int(n)).tolist() for n in rng.integers(1, 30, size=60)]
    queries = [rng.integers(0, vocab, size=int(n)).tolist() for n in rng.integers(1, 5, size=6)]
    k1, b = 1.2, 0.75
    index = BM25Index(vocab, k1=k1, b=b)
    index.add(docs[:30])
    index.add(docs[30:])
    n, avgdl = len(docs), np.mean([len(d) for d in docs])

    def formula(q, d):
        total = 0.0
        for t in q:  # query tokens with multiplicity
            df = sum(t in doc for doc in docs)
            tf = d.count(t)
            idf = np.log(1 + (n - df + 0.5) / (df + 0.5))
            total += idf * tf / (tf + k1 * (1 - b + b * len(d) / avgdl)) if tf else 0.0
        return total

    scores = np.array([[formula(q, d) for d in docs] for q in queries])
    ref_idx, ref_val = brute_topk(scores, 15, keep=scores > 0)
    width = int((ref_idx >= 0).sum(1).max())
    assert_ranking(index.search(queries, 15), ref_idx[:, :width], ref_val[:, :width])
    # independent implementation: bm25s (Lucene variant), tokens given as strings
    ref = bm25s.BM25(k1=k1, b=b, method="lucene")
    ref.index([[str(t) for t in d] for d in docs], show_progress=False)
    for q, row in zip(queries, scores, strict=True):
        np.testing.assert_allclose(ref.get_scores([str(t) for t in q]), row, rtol=1e-5, atol=1e-6)
