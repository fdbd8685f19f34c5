"""Group sampling, file rules, token-length cache and M3DataModule (ranks, stage switch, exact resume)."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from m3lit.data.datamodule import M3DataModule
from m3lit.data.dataset import SamplingOptions, load_dataset, sample_group
from m3lit.data.entries import expand_train_data
from m3lit.data.lengths import example_lengths
from m3lit.data.schema import Example


def _example(**kw) -> Example:
    base = {
        "query": "q",
        "pos": ("p0", "p1"),
        "neg": ("n0", "n1", "n2"),
        "pos_scores": None,
        "neg_scores": None,
        "prompt": None,
        "type": None,
        "line": 1,
    }
    base.update(kw)
    return Example(**base)


def _write(path: Path, rows) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def _rows(n: int, tag: str, negs: int = 3, scores: bool = False) -> list[dict]:
    rows = []
    for i in range(n):
        words = " ".join(["word"] * (1 + (i * 7) % 23))  # varied lengths -> several buckets
        row = {
            "query": f"{tag} query {i}",
            "pos": [f"{tag} positive {i} {words}"],
            "neg": [f"{tag} negative {i}.{j}" for j in range(negs)],
        }
        if scores:
            row["pos_scores"], row["neg_scores"] = [10.0 + i], [float(j) for j in range(negs)]
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------- sampling
def test_sample_group_without_replacement_and_scores_follow_passages():
    ex = _example(
        neg=tuple(f"n{j}" for j in range(6)),
        pos_scores=(9.0, 8.0),
        neg_scores=tuple(float(j) for j in range(6)),
    )
    score_of = dict(zip(ex.pos + ex.neg, ex.pos_scores + ex.neg_scores, strict=True))
    for seed in range(20):
        query, passages, scores = sample_group(
            ex, 4, random.Random(seed), SamplingOptions(sort_negatives_by_teacher=False), True
        )
        assert query == "q" and passages[0] in ex.pos and len(passages) == 4
        assert len(set(passages[1:])) == 3 and set(passages[1:]) <= set(ex.neg)  # distinct negatives
        assert scores == [score_of[p] for p in passages]  # teacher scores follow the sampled passages
        _, sorted_passages, sorted_scores = sample_group(ex, 4, random.Random(seed), SamplingOptions(), True)
        assert sorted_scores[1:] == sorted(sorted_scores[1:], reverse=True)
        assert sorted(sorted_passages[1:]) == sorted(passages[1:])  # same sample, sorted by teacher score


def test_sample_group_repeats_when_negatives_are_too_few():
    ex = _example(neg=("n0", "n1"))
    counts = Counter()
    for seed in range(30):
        _, passages, scores = sample_group(ex, 6, random.Random(seed), SamplingOptions(), False)
        negs = Counter(passages[1:])
        assert (
            sum(negs.values()) == 5 and set(negs) == {"n0", "n1"} and max(negs.values()) <= 3
        )  # ceil(5/2) copies
        assert scores is None
        counts.update(negs)
    _, passages, _ = sample_group(ex, 1, random.Random(0), SamplingOptions(), False)
    assert len(passages) == 1


def test_shuffle_ratio_and_instructions():
    long_pos = "".join(chr(97 + i % 26) for i in range(150))
    ex = _example(pos=(long_pos,), neg=("n",))
    _, passages, _ = sample_group(ex, 1, random.Random(1), SamplingOptions(shuffle_ratio=1.0), False)
    chunks = passages[0].split(" ")
    size = len(long_pos) // 3 + 1
    assert (
        sorted(chunks) == sorted(long_pos[i : i + size] for i in range(0, len(long_pos), size))
        and len(chunks) == 3
    )
    short = _example(pos=("short positive",), neg=("n",))
    assert sample_group(short, 1, random.Random(1), SamplingOptions(shuffle_ratio=1.0), False)[1] == [
        "short positive"
    ]
    # instructions are off by default; a null prompt never becomes "None"
    plain = sample_group(_example(prompt=None), 2, random.Random(0), SamplingOptions(use_prompt=True), False)
    assert plain[0] == "q" and "None" not in plain[0]
    prompted = _example(prompt="Find: ", type="normal")
    assert sample_group(prompted, 2, random.Random(0), SamplingOptions(), False)[0] == "q"
    query, passages, _ = sample_group(
        prompted, 2, random.Random(0), SamplingOptions(use_prompt=True, query_instruction="G: "), False
    )
    assert query == "Find: q" and not passages[0].startswith("Find")
    sts = _example(prompt="Same? ", type="symmetric_sts")
    query, passages, _ = sample_group(sts, 2, random.Random(0), SamplingOptions(use_prompt=True), False)
    assert query == "Same? q" and all(p.startswith("Same? ") for p in passages)
    options = SamplingOptions(query_instruction="Q", passage_instruction="P", instruction_format="{}: {}")
    query, passages, _ = sample_group(_example(), 2, random.Random(0), options, False)
    assert query == "Q: q" and all(p.startswith("P: ") for p in passages)


def test_type_and_column_rules(tmp_path):
    one = _write(tmp_path / "a" / "nli.jsonl", [{**r, "type": "only_1neg"} for r in _rows(3, "n")])
    sym = _write(
        tmp_path / "b_no_in_batch_neg" / "cls.jsonl",
        [{**r, "type": "symmetric_class", "neg": r["neg"][: 2 + i % 2]} for i, r in enumerate(_rows(4, "c"))],
    )
    col = _write(
        tmp_path / "c" / "cols.jsonl",
        [{**r, "train_group_size": 3, "batch_size": 5} if i == 0 else r for i, r in enumerate(_rows(3, "x"))],
    )
    assert load_dataset(Path(one), name="a", no_in_batch_neg=False, train_group_size=8).group_size == 2
    assert (
        load_dataset(Path(sym), name="b", no_in_batch_neg=True, train_group_size=8).group_size == 3
    )  # 1 + fewest negs
    ds = load_dataset(Path(col), name="c", no_in_batch_neg=False, train_group_size=8)
    assert (ds.group_size, ds.batch_size) == (3, 5)
    entries = expand_train_data(
        [str(tmp_path / "a"), str(tmp_path / "b_no_in_batch_neg"), {"path": col, "no_in_batch_neg": True}]
    )
    assert [(e.path.name, e.no_in_batch_neg, e.name) for e in entries] == [
        ("nli.jsonl", False, "a/nli.jsonl"),
        ("cls.jsonl", True, "b_no_in_batch_neg/cls.jsonl"),
        ("cols.jsonl", True, "c/cols.jsonl"),
    ]


def test_token_length_cache(tmp_path, tokenizer):
    rows = _rows(5, "t")
    path = Path(_write(tmp_path / "t.jsonl", rows))
    ds = load_dataset(path, name="t", no_in_batch_neg=False, train_group_size=2)
    naive = [
        max(
            min(len(tokenizer(r["query"])["input_ids"]), 6),
            *(min(len(tokenizer(p)["input_ids"]), 9) for p in r["pos"] + r["neg"]),
        )
        for r in rows
    ]
    cache = tmp_path / "cache"
    assert example_lengths(path, ds.examples, tokenizer, 6, 9, cache).tolist() == naive
    (cache_file,) = cache.glob("*.npz")
    np.savez(cache_file, lines=np.arange(1, 6), lengths=np.full(5, 77))  # tamper: a hit must return this
    assert example_lengths(path, ds.examples, tokenizer, 6, 9, cache).tolist() == [77] * 5
    assert (
        example_lengths(path, ds.examples, tokenizer, 6, 10, cache).tolist() != [77] * 5
    )  # other max len, other key
    _write(path, rows[::-1])  # new content, new key
    ds = load_dataset(path, name="t", no_in_batch_neg=False, train_group_size=2)
    assert example_lengths(path, ds.examples, tokenizer, 6, 9, cache).tolist() == naive[::-1]


# ---------------------------------------------------------------------------------------------- module
def _module(tmp_path, tokenizer, **kw) -> M3DataModule:
    defaults = {
        "train_data": _write(tmp_path / "labelled" / "l.jsonl", _rows(14, "lab", scores=True)),
        "pairs_data": _write(tmp_path / "pairs" / "p.jsonl", _rows(16, "pair", negs=0)),
        "tokenizer": tokenizer,
        "train_group_size": 3,
        "query_max_len": 16,
        "passage_max_len": 64,
        "bucket_edges": [40],
        "bucket_batch_sizes": [3, 2],
        "pairs_bucket_batch_sizes": [4, 3],
        "cache_dir": str(tmp_path / "cache"),
        "seed": 5,
    }
    defaults.update(kw)
    return M3DataModule.from_config(**defaults)


def test_batches_follow_the_layout_and_the_examples(tmp_path, tokenizer):
    dm = _module(tmp_path, tokenizer, source="labelled")
    dm.setup("fit")
    rows = _rows(14, "lab", scores=True)
    seen = []
    for batch in dm.iter_batches():
        b, g = batch.num_queries, batch.group_size
        assert g == 3 and batch.num_passages == b * g and batch.teacher_scores.shape == (b, g)
        texts = [
            tokenizer.decode(s, skip_special_tokens=True) for sub in batch.passages for s in sub.input_ids
        ]
        for row, index in enumerate(batch.meta["indices"]):
            expected = rows[index]
            positive = tokenizer.decode(
                tokenizer(expected["pos"][0], truncation=True, max_length=64)["input_ids"],
                skip_special_tokens=True,
            )
            assert texts[row * g] == positive  # passages laid out [pos, negs...] per query
            assert batch.teacher_scores[row, 0].item() == expected["pos_scores"][0]
            assert batch.teacher_scores[row, 1:].tolist() == sorted(
                batch.teacher_scores[row, 1:].tolist(), reverse=True
            )
        seen += batch.meta["indices"]
    groups = dm.sources["labelled"].sampler.groups
    assert len(groups) == 2  # both length buckets are populated
    assert len(seen) == len(set(seen)) == sum(len(g.indices) // g.batch_size * g.batch_size for g in groups)


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_share_steps_and_split_examples(tmp_path, tokenizer, world):
    modules = [
        _module(
            tmp_path,
            tokenizer,
            rank=r,
            world_size=world,
            bucket_batch_sizes=[1, 1],
            pairs_bucket_batch_sizes=[2, 1],
        )
        for r in range(world)
    ]
    for dm in modules:
        dm.setup("fit")
    streams = [list(dm.iter_batches()) for dm in modules]
    assert len({len(s) for s in streams}) == 1 and len(streams[0]) > 0
    for step in zip(*streams, strict=True):
        assert len({(b.dataset, b.meta["step"], b.num_queries) for b in step}) == 1
        indices = [i for b in step for i in b.meta["indices"]]
        assert len(indices) == len(set(indices))


class _Recorder(L.LightningModule):
    """A one-parameter system that records which data every step saw."""

    def __init__(self, switch_at: int | None = None) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.switch_at = switch_at
        self.seen: list[tuple] = []

    def training_step(self, batch, batch_idx):
        m = batch.meta
        self.seen.append(
            (self.global_step, m["source"], m["epoch"], m["step"], tuple(m["indices"]), batch.num_passages)
        )
        return (self.weight - 1.0).pow(2).sum()

    def on_train_batch_end(self, outputs, batch, batch_idx):
        if self.switch_at is not None and self.global_step == self.switch_at:
            self.trainer.datamodule.set_source("labelled")  # the stage switch, with a live iterator

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _trainer(tmp_path, max_steps, callbacks=()):
    return L.Trainer(
        max_steps=max_steps, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
        enable_model_summary=False, use_distributed_sampler=False, callbacks=list(callbacks),
        enable_checkpointing=bool(callbacks), default_root_dir=str(tmp_path), num_sanity_val_steps=0,
    )  # fmt: skip


def test_stage_switch_and_exact_resume_under_a_trainer(tmp_path, tokenizer):
    kw = {
        "bucket_edges": [],
        "bucket_batch_sizes": [3],
        "pairs_bucket_batch_sizes": [8],
    }  # one bucket: 4 and 2 steps/epoch
    full = _Recorder(switch_at=2)
    _trainer(tmp_path / "full", 9).fit(full, datamodule=_module(tmp_path, tokenizer, **kw))
    sources = [s[1] for s in full.seen]
    assert sources == ["pairs"] * 2 + ["labelled"] * 7  # the switch in step 1's end hook changes step 2 on
    assert [s[0] for s in full.seen] == list(range(9))
    pairs_steps = [(s[2], s[3]) for s in full.seen[:2]]
    assert pairs_steps == [(0, 0), (0, 1)]
    labelled = [(s[2], s[3]) for s in full.seen[2:]]
    assert labelled == [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1), (1, 2)]  # 14 // 3 = 4 steps per epoch

    from lightning.pytorch.callbacks import ModelCheckpoint

    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=5, save_top_k=-1, filename="{step}")
    first = _Recorder(switch_at=2)
    _trainer(tmp_path / "first", 5, [ckpt]).fit(first, datamodule=_module(tmp_path, tokenizer, **kw))
    assert first.seen == full.seen[:5]
    resumed = _Recorder(switch_at=2)
    path = tmp_path / "ckpt" / "step=5.ckpt"
    state = torch.load(path, weights_only=True)["M3DataModule"]
    assert (
        state["source"] == "labelled" and state["samplers"]["labelled"]["step"] == 3
    )  # consumed, not prefetched
    _trainer(tmp_path / "resumed", 9).fit(
        resumed, datamodule=_module(tmp_path, tokenizer, **kw), ckpt_path=str(path)
    )
    assert resumed.seen == full.seen[5:]  # nothing skipped, nothing repeated, same source


def test_a_ticket_used_without_the_datamodule_hook_explains(tmp_path, tokenizer):
    dm = _module(tmp_path, tokenizer)
    ticket = next(iter(dm.train_dataloader()))  # sets up on demand
    with pytest.raises(AttributeError, match=r"trainer.fit\(model, datamodule=dm\)"):
        _ = ticket.queries
    assert dm.state_dict()["samplers"]["pairs"]["step"] == 0  # a ticket alone consumes nothing


def test_pairs_lengths_ignore_negatives(tmp_path, tokenizer):
    rows = [{"query": "q", "pos": ["short"], "neg": ["a much longer negative passage " * 5]}]
    path = Path(_write(tmp_path / "p.jsonl", rows))
    ds = load_dataset(path, name="p", no_in_batch_neg=False, train_group_size=1)
    with_negs = example_lengths(path, ds.examples, tokenizer, 32, 32, None)
    without = example_lengths(path, ds.examples, tokenizer, 32, 32, None, negatives=False)
    assert with_negs.tolist() == [32]
    assert without.tolist() == [max(len(tokenizer("q")["input_ids"]), len(tokenizer("short")["input_ids"]))]
