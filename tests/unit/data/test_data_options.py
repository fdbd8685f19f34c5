"""``data.*`` config keys are exactly the fields of DataOptions (plus ``tokenizer``), and
``M3DataModule.from_config`` (the Hydra target) builds the datamodule from them."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from m3lit.data.datamodule import M3DataModule
from m3lit.data.options import DataOptions

ROOT = Path(__file__).resolve().parents[3]


def test_the_data_config_keys_are_the_options_fields():
    cfg = OmegaConf.load(ROOT / "configs" / "data" / "default.yaml")
    assert cfg._target_ == "m3lit.data.datamodule.M3DataModule.from_config"
    keys = set(cfg) - {"_target_"}
    assert keys == set(DataOptions.keys()) | {"tokenizer"}
    assert M3DataModule.from_config.options_type is DataOptions


def test_from_config_builds_the_options_and_keeps_flat_hyperparameters():
    dm = M3DataModule.from_config(bucket_edges=[10, 20], batch_size=2, seed=3, source="pairs")
    assert dm.options == DataOptions(bucket_edges=[10, 20], batch_size=2, seed=3, source="pairs")
    assert dict(dm.hparams) == asdict(dm.options)  # checkpoints keep one flat key per data.* option
    assert dm.bucket_batch_sizes == {"labelled": [2, 2, 2], "pairs": [2, 2, 2]}
    assert M3DataModule().options == DataOptions()


def test_from_config_rejects_a_key_that_is_no_option():
    with pytest.raises(TypeError, match="unexpected keyword argument 'demo'"):
        M3DataModule.from_config(demo=True)
    with pytest.raises(ValueError, match=r"data.source must be one of \('pairs', 'labelled'\) or null"):
        M3DataModule.from_config(source="stage2")
