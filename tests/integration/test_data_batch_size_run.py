"""A scalar ``data.batch_size`` fills the bucket table, refuses to be mixed with it, and trains (the rest of
the one vocabulary across commands: tests/unit/model/test_vocab.py).
"""

from __future__ import annotations

import pytest
from train_utils import tiny_corpus, tiny_run_overrides

from m3lit.config.compose import ConfigError, compose
from m3lit.data.datamodule import M3DataModule
from m3lit.train import train


def test_scalar_batch_size_and_mixing_it_with_the_table(tmp_path, tokenizer):
    dm = M3DataModule.from_config(bucket_edges=[10, 20], batch_size=4)
    assert dm.bucket_batch_sizes == {"labelled": [4, 4, 4], "pairs": [4, 4, 4]}
    with pytest.raises(
        ValueError, match=r"needs len\(data.bucket_edges\) \+ 1 = 3 entries.*data.batch_size=4"
    ):
        M3DataModule.from_config(bucket_edges=[10, 20], bucket_batch_sizes=[4])
    corpus = tiny_corpus(tmp_path / "corpus", tokenizer)
    base = [o for o in tiny_run_overrides(corpus, tmp_path / "run") if "bucket_batch_sizes" not in o]
    with pytest.raises(ConfigError, match=r"data.batch_size=3 and data.bucket_batch_sizes=\[3,3\] both set"):
        compose([*base, "data.batch_size=3", "data.bucket_batch_sizes=[3,3]"])
    _, objects = train(compose([*base, "data.batch_size=3", "trainer.max_steps=2", "export=false"]))
    assert objects["trainer"].global_step == 2
    batch = next(objects["datamodule"].iter_batches(1))
    assert len(batch.meta["indices"]) == 3
