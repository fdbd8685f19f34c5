"""Keep the benchmark scripts from rotting: FLOP counting, the harness, the workload and one benchmark at toy size.

Values are checked against direct references: torch's own FLOP counter for the analytic model FLOPs,
brute-force vocabulary vectors and loops for the in-batch scores the score benchmark produces.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks import harness as H
from benchmarks.flops import EncoderShape, encode_flops, step_flops
from m3lit.model import M3Model
from m3lit.model.tiny import tiny_xlmr_config
from m3lit.scores import colbert_scores, dense_scores, sparse_scores


def test_step_flops_match_torch_flop_counter(tokenizer):
    """The analytic count equals what torch counts for a real forward + backward (eager attention)."""
    config = tiny_xlmr_config(len(tokenizer), hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                              max_length=64, dropout=0.0, attn_implementation="eager")  # fmt: skip
    torch.manual_seed(0)
    model = M3Model.from_config(config, tokenizer, colbert_dim=16)
    q_ids = torch.randint(4, len(tokenizer) - 1, (2, 12))
    p_ids = torch.randint(4, len(tokenizer) - 1, (6, 20))
    with FlopCounterMode(display=False) as counter:
        q, p = model(q_ids, torch.ones_like(q_ids)), model(p_ids, torch.ones_like(p_ids))
        scores = dense_scores(q.dense, p.dense) + colbert_scores(
            q.colbert, q.colbert_mask, p.colbert, p.colbert_mask, recompute=False
        )
        scores = scores + sparse_scores(q.sparse_weights, q_ids, p.sparse_weights, p_ids)
        scores.sum().backward()
    counted = counter.get_total_flops()
    analytic = step_flops(EncoderShape.from_config(config, 16), [12, 12], [20] * 6)
    # the analytic count leaves out only the sparse score's tiny (Bq, U) @ (U, Bp) product
    assert analytic["total"] <= counted
    assert (counted - analytic["total"]) / counted < 1e-3
    assert analytic["encoder"] > 0.9 * analytic["total"]


def test_encode_flops_match_torch_flop_counter(tokenizer):
    """The encode count (texts at their own lengths, dense + sparse + ColBERT) equals torch's for one forward
    pass per text (eager attention: every matmul visible)."""
    config = tiny_xlmr_config(len(tokenizer), hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                              max_length=64, dropout=0.0, attn_implementation="eager")  # fmt: skip
    torch.manual_seed(0)
    model = M3Model.from_config(config, tokenizer, colbert_dim=16).eval()
    lengths = [9, 17, 30]
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        for length in lengths:
            ids = torch.randint(4, len(tokenizer) - 1, (1, length))
            model(ids, torch.ones_like(ids))
    assert encode_flops(EncoderShape.from_config(config, 16), lengths) == counter.get_total_flops()


def test_summaries_and_ratios():
    stats = H.summarize([3.0, 1.0, 2.0, 10.0])
    assert stats == {"min": 1.0, "median": 2.5, "max": 10.0, "n": 4}
    assert H.summarize([])["n"] == 0
    ratios = H.pair_ratios([10.0, 20.0, 30.0], [5.0, 4.0, 3.0])  # run i over run i
    assert ratios["min"] == 2.0 and ratios["median"] == 5.0 and ratios["max"] == 10.0
    assert H.fmt_range(H.summarize([1.0, 2.0, 4.0]), 1) == "2.0 (1.0-4.0)"
    assert H.fmt_range(H.summarize([]), 1) == "n/a"


def test_subprocess_result_memory_guard_and_timeout():
    broken = H.run_subprocess(
        H.m3_command("benchmarks.flops:encoder_forward_flops", shape=None, lengths=[8]), timeout_s=60
    )
    assert not broken.ok and broken.status.startswith("error: exit 1") and "AttributeError" in broken.status
    hog = H.run_subprocess([sys.executable, "-c", "x = bytearray(400 * 2**20); import time; time.sleep(30)"],
                           timeout_s=60, max_rss_mb=200)  # fmt: skip
    assert hog.status.startswith("killed: memory") and hog.wall_s < 20
    slow = H.run_subprocess([sys.executable, "-c", "import time; time.sleep(30)"], timeout_s=1)
    assert slow.status.startswith("timeout")
    printed = H.run_subprocess(
        [sys.executable, "-c", f"print({H.RESULT_MARK!r} + '{{\"x\": 1.5}}')"], timeout_s=30
    )
    assert printed.ok and printed.result == {"x": 1.5}


def test_multi_task_worker_returns_each_task_result_in_order():
    """Several measurements in one worker process: results split back per task, in order, with the RSS."""
    tasks = [("benchmarks.harness:summarize", {"values": [3.0, 1.0, 2.0]}),
             ("benchmarks.harness:summarize", {"values": [5.0]})]  # fmt: skip
    run = H.run_subprocess(H.m3_tasks_command(tasks), timeout_s=120)
    assert run.ok, run.status
    first, second = run.task_results(2)
    assert first.ok and {k: first.result[k] for k in ("min", "median", "max", "n")} == H.summarize(
        [3.0, 1.0, 2.0]
    )
    assert second.result["median"] == 5.0 and second.result["n"] == 1
    assert 0 < first.result["peak_rss_mb"] <= second.result["peak_rss_mb"] <= run.result["peak_rss_mb"]
    broken = H.run_subprocess(
        H.m3_tasks_command([*tasks, ("benchmarks.harness:no_such_fn", {})]), timeout_s=120
    )
    assert not broken.ok and all(not r.ok and r.result == {} for r in broken.task_results(3))


def test_text_maker_exact_token_counts(tokenizer):
    from benchmarks.workload import TextMaker

    maker = TextMaker(tokenizer, seed=3)
    for n in (1, 7, 64, 300):
        text = maker.text(n)
        assert len(tokenizer(text, add_special_tokens=False)["input_ids"]) == n


def test_inbatch_score_benchmark_matches_naive_reference(tmp_path, tiny_config, tokenizer):
    """``score.m3_inbatch`` at toy size: its score matrices equal the formulas computed by brute force."""
    from benchmarks.score import TEMPERATURE, m3_inbatch

    torch.manual_seed(0)
    M3Model.from_config(tiny_config, tokenizer, colbert_dim=8).save_pretrained(tmp_path / "model")
    model = M3Model.from_pretrained(tmp_path / "model")
    rng = np.random.default_rng(0)
    q_ids = rng.integers(0, len(tokenizer), (2, 6))
    p_ids = rng.integers(0, len(tokenizer), (8, 9))
    q_ids[:, 1] = p_ids[0, 2]  # a shared and repeated token
    q_mask, p_mask = np.ones((2, 6), np.int64), np.ones((8, 9), np.int64)
    p_mask[3, 5:] = 0
    hidden = tiny_config.hidden_size
    q_h = rng.standard_normal((2, 6, hidden), dtype=np.float32)
    p_h = rng.standard_normal((8, 9, hidden), dtype=np.float32)
    np.savez(
        tmp_path / "in.npz",
        q_ids=q_ids,
        p_ids=p_ids,
        q_mask=q_mask,
        p_mask=p_mask,
        q_hidden=q_h,
        p_hidden=p_h,
    )
    out = m3_inbatch(
        str(tmp_path / "model"), str(tmp_path / "in.npz"), repeats=1, scores_out=str(tmp_path / "s.npy")
    )
    assert len(out["seconds"]["sparse"]) == 1 and out["seconds"]["colbert"][0] > 0
    sparse, colbert = np.load(tmp_path / "s.npy")

    with torch.no_grad():
        specials = {
            tokenizer.cls_token_id,
            tokenizer.eos_token_id,
            tokenizer.pad_token_id,
            tokenizer.unk_token_id,
        }

        def vocab_vector(h, ids):  # max-pooled ReLU weights over the whole vocabulary, specials dropped
            w = torch.relu(model.sparse_head.linear(torch.from_numpy(h))).squeeze(-1)
            v = torch.zeros(len(tokenizer))
            for weight, tok in zip(w.tolist(), ids.tolist(), strict=True):
                if tok not in specials:
                    v[tok] = max(v[tok].item(), weight)
            return v

        ref_sparse = torch.stack(
            [
                torch.stack(
                    [vocab_vector(q_h[i], q_ids[i]) @ vocab_vector(p_h[j], p_ids[j]) for j in range(8)]
                )
                for i in range(2)
            ]
        )
        np.testing.assert_allclose(sparse, ref_sparse.numpy() / TEMPERATURE, rtol=1e-5, atol=1e-4)

        def vectors(h, mask):  # ColBERT vectors of the real tokens after CLS
            v = torch.nn.functional.normalize(model.colbert_head.linear(torch.from_numpy(h[1:])), dim=-1)
            return v[torch.from_numpy(mask[1:]).bool()]

        for i in range(2):
            for j in range(8):
                qv, pv = vectors(q_h[i], q_mask[i]), vectors(p_h[j], p_mask[j])
                ref = sum(max(float(a @ b) for b in pv) for a in qv) / len(qv)
                assert colbert[i, j] == pytest.approx(ref / TEMPERATURE, rel=1e-5, abs=1e-4)


def test_report_verdicts_follow_the_measured_medians():
    from benchmarks.report import render

    def stats(values):
        return H.summarize(values)

    train = {"summary": {
        "m3lit unified_self_distill": {"step_s": stats([0.5, 0.6, 0.7]), "peak_rss_mb": stats([900.0]),
                                       "speedup_vs_flag": stats([30.0, 32.0, 35.0]), "memory_ratio_vs_flag": stats([0.2])},
        "flag unified_self_distill": {"step_s": stats([18.0, 19.0]), "peak_rss_mb": stats([17000.0])},
    }, "env": {"cpu": "test cpu", "date": "today"}}  # fmt: skip
    text = render({"train": train})
    speed_row = next(line for line in text.splitlines() if "unified + self-distill" in line)
    memory_row = next(line for line in text.splitlines() if "train peak RSS" in line)
    assert "32.0 (30.0-35.0)x faster" in speed_row and speed_row.rstrip(" |").endswith("met")
    assert memory_row.rstrip(" |").endswith("MISSED")
    assert "test cpu" in text
