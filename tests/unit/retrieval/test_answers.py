"""Answer-string recall (m3lit.retrieval.answers) against a direct count, and datasets judged by answers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from m3lit.files.jsonl import DataError
from m3lit.retrieval.answers import answer_tokens, per_query_values, score_dataset
from m3lit.retrieval.beir import load_beir, write_beir
from m3lit.retrieval.index.ranking import Ranking

CORPUS = {
    "p0": "The Eiffel Tower stands in Paris.",
    "p1": "Paris, Texas is a small city.",
    "p2": "Mount Everest is 8,849 metres high.",
    "p3": "Everest base camp sits at 5364 m.",
    "p4": "The Nile flows north into the Mediterranean.",
    "p5": "Lake Victoria feeds the White Nile.",
}
QUESTIONS = {
    "q0": ("Where is the Eiffel Tower?", ["paris"]),
    "q1": ("How high is Everest?", ["8,849 metres", "8849 m"]),
    "q2": ("Which sea does the Nile reach?", ["Mediterranean Sea"]),  # no passage holds the full answer
    "q3": ("What feeds the White Nile?", ["lake victoria"]),
}


def _folder(tmp_path, answers=None):
    root = write_beir(
        tmp_path / "mkqa", CORPUS, {q: text for q, (text, _) in QUESTIONS.items()}, {"q0": {"p0": 1}}
    )
    (root / "qrels" / "test.tsv").unlink()
    (root / "answers").mkdir()
    rows = answers or [{"_id": q, "answers": strings} for q, (_, strings) in QUESTIONS.items()]
    (root / "answers" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def _naive_hit(text: str, answers: list[str]) -> bool:
    """A passage holds an answer when the answer's lower-cased words run contiguously in its words."""
    words = text.lower().replace(".", " . ").replace(",", " , ").split()
    for answer in answers:
        wanted = answer.lower().replace(",", " , ").split()
        if any(words[i : i + len(wanted)] == wanted for i in range(len(words) - len(wanted) + 1)):
            return True
    return False


def test_qa_recall_equals_a_direct_count_over_every_query(tmp_path):
    data = load_beir(_folder(tmp_path))
    assert data.qrels == [{}, {}, {}, {}] and data.num_relevant_queries == 4
    rows = {d: i for i, d in enumerate(data.corpus_ids)}
    lists = [["p1", "p0", "p2"], ["p3", "p4", "p2"], ["p4", "p5", "p0"], ["p0", "p1", "p5"]]
    ranking = Ranking(
        np.array([[rows[d] for d in ranked] for ranked in lists]),
        np.tile(np.array([3.0, 2.0, 1.0], np.float32), (4, 1)),
    )
    result = score_dataset(ranking, data, ["qa_recall@1", "qa_recall@2", "qa_recall@3"])
    for k in (1, 2, 3):
        hits = [
            any(_naive_hit(CORPUS[d], QUESTIONS[q][1]) for d in ranked[:k])
            for q, ranked in zip(QUESTIONS, lists, strict=True)
        ]
        assert result.values[f"qa_recall@{k}"] == pytest.approx(np.mean(hits))
    assert result.values == {"qa_recall@1": 0.25, "qa_recall@2": 0.25, "qa_recall@3": 0.75}
    assert per_query_values(ranking, data, "qa_recall@3").tolist() == [1.0, 1.0, 0.0, 1.0]


def test_tokens_respect_word_boundaries_and_case():
    assert answer_tokens("PARIS, Texas") == ["paris", ",", "texas"]
    assert answer_tokens("8,849") == ["8", ",", "849"]


def test_qrels_metrics_on_an_answers_dataset_and_back_are_refused(tmp_path, tiny_beir_dir):
    data = load_beir(_folder(tmp_path))
    ranking = Ranking(np.zeros((4, 1), np.int64), np.zeros((4, 1), np.float32))
    with pytest.raises(ValueError, match="metric 'ndcg@10' needs qrels; this dataset has answer strings"):
        score_dataset(ranking, data, ["ndcg@10"])
    qrels_data = load_beir(tiny_beir_dir)
    with pytest.raises(ValueError, match="needs answer strings"):
        score_dataset(
            Ranking(np.zeros((11, 1), np.int64), np.zeros((11, 1), np.float32)), qrels_data, ["qa_recall@5"]
        )


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"_id": "q9", "answers": ["x"]}, "answers/test.jsonl:line 1: field '_id': unknown query id 'q9'"),
        (
            {"_id": "q0", "answers": []},
            "answers/test.jsonl:line 1: field 'answers': must be a non-empty list",
        ),
    ],
)
def test_a_bad_answers_line_names_file_line_and_field(tmp_path, row, message):
    with pytest.raises(DataError) as error:
        load_beir(_folder(tmp_path, [row]))
    assert message in str(error.value)
