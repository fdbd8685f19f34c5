"""Teacher scores: a cross-encoder's logits and an m3lit model's All score, each against a direct computation;
resumable (a killed run resumes to the same bytes) and idempotent; bad input named by file, line and field."""

from __future__ import annotations

import json

import pytest
import torch
from m3_reference import fused_score, naive_encode
from train_utils import tiny_cross_encoder

from m3lit.corpora.teacher_scores import CHUNK_LINES, cross_encoder_scorer, main, write_teacher_scores


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def training_file(tmp_path, texts):
    passages = [t[:160] for t in texts]
    rows = [
        {"query": f"query {i} about {passages[i % 12][:30]}", "pos": [passages[i % 12]],
         "neg": [passages[(i + 1) % 12], passages[(i + 5) % 12]][: 1 + i % 2], "category": "kept"}
        for i in range(10)
    ]  # fmt: skip
    return _write(tmp_path / "train.jsonl", rows), rows


@pytest.fixture
def cross_encoder_dir(tiny_config, tokenizer, tmp_path):
    """A tiny random XLM-R cross-encoder with one logit per pair, saved with the test tokenizer."""
    folder = tmp_path / "reranker"
    model = tiny_cross_encoder(folder, tiny_config, tokenizer)
    return folder, model


def _direct_logit(model, tokenizer, query, passage, max_length=512):
    enc = tokenizer(query, passage, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.no_grad():
        return model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits[0, 0].item()


def _read(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_cross_encoder_scores_are_its_logits(tmp_path, training_file, cross_encoder_dir, tokenizer, capsys):
    path, rows = training_file
    folder, model = cross_encoder_dir
    out = tmp_path / "scored.jsonl"
    assert main([f"model={folder}", f"input={path}", f"output={out}", "batch_size=3", "device=cpu"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["teacher"] == "cross_encoder"
    got = _read(out)
    assert len(got) == len(rows)
    for row, line in zip(rows, got, strict=True):
        assert {k: line[k] for k in row} == row  # every field kept
        want_pos = [_direct_logit(model, tokenizer, row["query"], p) for p in row["pos"]]
        want_neg = [_direct_logit(model, tokenizer, row["query"], p) for p in row["neg"]]
        assert line["pos_scores"] == pytest.approx(want_pos, abs=1e-5)
        assert line["neg_scores"] == pytest.approx(want_neg, abs=1e-5)
    sig = tmp_path / "sigmoid.jsonl"
    main([f"model={folder}", f"input={path}", f"output={sig}", "sigmoid=true", "device=cpu"])
    for raw, squashed in zip(got, _read(sig), strict=True):
        assert squashed["neg_scores"] == pytest.approx(
            torch.tensor(raw["neg_scores"]).sigmoid().tolist(), abs=1e-6
        )


def test_a_finished_output_is_not_scored_again(
    tmp_path, training_file, cross_encoder_dir, capsys, command_error
):
    path, _ = training_file
    folder, _ = cross_encoder_dir
    out = tmp_path / "scored.jsonl"
    args = [f"model={folder}", f"input={path}", f"output={out}", "device=cpu"]
    main(args)
    before = (out.read_bytes(), out.stat().st_mtime_ns)
    capsys.readouterr()
    assert main(args) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert (out.read_bytes(), out.stat().st_mtime_ns) == before
    code, line = command_error(main, [*args, "sigmoid=true"])  # other settings: refused, file kept
    assert code == 2 and "was not written with these settings" in line and out.read_bytes() == before[0]


def test_m3lit_teacher_writes_the_all_score(tmp_path, training_file, export_dir):
    from m3lit.model import M3Model

    path, rows = training_file
    out = tmp_path / "self.jsonl"
    main([f"model={export_dir}", f"input={path}", f"output={out}", "temperature=0.5", "device=cpu"])
    model = M3Model.from_pretrained(export_dir).eval()
    for row, line in zip(rows, _read(out), strict=True):
        query = naive_encode(model, row["query"])
        want = [fused_score(query, naive_encode(model, p)) / 0.5 for p in (*row["pos"], *row["neg"])]
        assert line["pos_scores"] + line["neg_scores"] == pytest.approx(want, abs=1e-4)


class _Killed(RuntimeError):
    pass


def test_resume_after_a_killed_run_gives_the_uninterrupted_output(tmp_path, cross_encoder_dir, texts):
    folder, _ = cross_encoder_dir
    rows = [{"query": f"q {i} {texts[i % 12][:20]}", "pos": [texts[i % 12][:80]], "neg": [texts[(i + 3) % 12][:80]]}
            for i in range(2 * CHUNK_LINES + 9)]  # fmt: skip
    path = _write(tmp_path / "train.jsonl", rows)
    options = {"device": "cpu", "batch_size": 16, "max_length": 128, "sigmoid": False, "temperature": 1.0}
    scorer = cross_encoder_scorer(str(folder), options)
    settings = {"model": str(folder), "max_length": 128}
    whole = tmp_path / "whole.jsonl"
    assert write_teacher_scores(scorer, path, whole, settings) == len(rows)

    calls = []

    def dies_in_the_third_chunk(pairs):
        calls.append(len(pairs))
        if len(calls) == 3:
            raise _Killed
        return scorer(pairs)

    out = tmp_path / "resumed.jsonl"
    with pytest.raises(_Killed):
        write_teacher_scores(dies_in_the_third_chunk, path, out, settings)
    partial = tmp_path / "resumed.jsonl.partial"
    assert len(partial.read_text().splitlines()) == 2 * CHUNK_LINES and not out.exists()
    with open(partial, "a", encoding="utf-8") as handle:  # a kill in the middle of writing a line
        handle.write('{"query": "half a li')
    assert write_teacher_scores(scorer, path, out, settings) == len(rows) - 2 * CHUNK_LINES
    assert out.read_bytes() == whole.read_bytes() and not partial.exists()
    assert write_teacher_scores(scorer, path, out, settings) == 0  # finished: nothing to do


def test_bad_input_is_named_by_file_line_and_field(tmp_path, cross_encoder_dir, training_file, command_error):
    folder, _ = cross_encoder_dir
    bad = _write(tmp_path / "bad.jsonl", [{"query": "q", "pos": ["p"]}, {"query": "q", "pos": "p"}])
    code, line = command_error(main, [f"model={folder}", f"input={bad}", f"output={tmp_path / 'o.jsonl'}"])
    assert code == 1 and line == f"error: {bad}:line 2: field 'pos': must be a list of strings, got str"
    good, _ = training_file
    code, line = command_error(main, [f"model={folder}", f"input={good}", f"output={tmp_path / 'o.jsonl'}",
                                      "teacher=oracle"])  # fmt: skip
    assert code == 2 and "teacher must be one of" in line
