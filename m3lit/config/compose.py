"""The configuration seam: compose the Hydra config of ``configs/`` and validate it at start-up.

``python -m m3lit.train`` goes through ``@hydra.main`` (:mod:`m3lit.train`); tests and notebooks call
:func:`compose` with the same override strings::

    cfg = compose(["experiment=bge_m3_finetune", "data.train_data=my.jsonl", "hydra.run.dir=/tmp/run"])

Hydra itself rejects command-line overrides of keys that do not exist; :func:`unknown_key_error` turns
that into the closest valid keys, suggesting ``+key=value`` only for an option that the node's
``_target_`` takes but the YAML leaves out. The strict schema and signature checks of :mod:`m3lit.config.checks` catch the rest (typos in YAML files,
wrong types, invalid stage schedules) before anything is built.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from m3lit.config.checks import (
    ConfigError,
    check_batch_size_overrides,
    target_options,
    validate,
)
from m3lit.config.corpus import check_retired_keys, check_retired_overrides, corpus_hook
from m3lit.files.errors import did_you_mean

__all__ = [
    "CONFIG_DIR",
    "ConfigError",
    "compose",
    "dotted_keys",
    "finalize",
    "validate",
    "save_config",
    "rewrite_overrides",
    "write_text_atomic",
]

#: The repository's ``configs/`` folder (m3lit is installed editable; see pyproject.toml).
CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"

#: Command-line keys of ``m3lit.train`` that are not config keys (:mod:`m3lit.config.resume` reads them).
RESUME_KEYS = ("resume", "resume.allow_schedule_change")
#: Mapping-valued keys that a command-line value REPLACES (Hydra would merge it into the existing mapping).
REPLACED_MAPPINGS = ("callbacks.stage_switch.schedule",)


def rewrite_overrides(overrides: Sequence[str]) -> list[str]:
    """``key={...}`` for a key of :data:`REPLACED_MAPPINGS` -> ``~key`` + ``+key={...}`` (replace, not merge).

    >>> rewrite_overrides(["callbacks.stage_switch.schedule={0:dense,10:unified}", "seed=1"])
    ['~callbacks.stage_switch.schedule', '+callbacks.stage_switch.schedule={0:dense,10:unified}', 'seed=1']
    """
    check_batch_size_overrides(overrides)
    check_retired_overrides(overrides)
    out: list[str] = []
    for item in overrides:
        key, sep, value = item.partition("=")
        if sep and key in REPLACED_MAPPINGS:
            out += [f"~{key}", f"+{key}={value}"]
        else:
            out.append(item)
    return out


# ---------------------------------------------------------------------------------------------- unknown keys
def unknown_key_error(
    key: str, overrides: Sequence[str], config_name: str, config_dir: str | Path
) -> ConfigError:
    """The error for ``key=...`` where the composed config has no ``key``: the closest valid keys (difflib),
    or, for an option its ``_target_`` takes that the YAML leaves out, how to add it with ``+``."""
    rest = [o for o in overrides if o.lstrip("~+").partition("=")[0] != key]
    GlobalHydra.instance().clear()
    with initialize_config_dir(
        version_base="1.3", config_dir=str(Path(config_dir).resolve()), job_name="train"
    ):
        cfg = hydra_compose(config_name, overrides=rewrite_overrides(rest))
    GlobalHydra.instance().clear()
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent, default=None) if parent else cfg
    if isinstance(node, DictConfig) and "_target_" in node and leaf in target_options(node):
        return ConfigError(
            f"{key}: {node._target_} takes this option but the config does not set it: add it with +{key}=VALUE"
        )
    keys = [
        *dotted_keys(OmegaConf.to_container(cfg, resolve=False)),
        *(RESUME_KEYS if config_name == "train" else ()),
    ]
    hint = did_you_mean(key, keys)
    return ConfigError(
        f"unknown config key {key!r}{hint or ' (no similar key)'}; `--help` lists every key with its default"
    )


def dotted_keys(node: Any, prefix: str = "") -> list[str]:
    """Every key of a plain nested mapping as a dotted path, the mappings' own keys included."""
    out = []
    for name, value in node.items() if isinstance(node, dict) else ():
        out.append(f"{prefix}{name}")
        out += dotted_keys(value, f"{prefix}{name}.")
    return out


# ---------------------------------------------------------------------------------------------- compose
def compose(
    overrides: Sequence[str] = (), config_name: str = "train", config_dir: str | Path = CONFIG_DIR
) -> DictConfig:
    """Compose ``configs/<config_name>.yaml`` with command-line style ``overrides``, resolved and validated.

    ``hydra.run.dir=DIR`` sets the run folder (``paths.output_dir``) as it does on the command line.
    """
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(
            version_base="1.3", config_dir=str(Path(config_dir).resolve()), job_name="train"
        ):
            cfg = hydra_compose(config_name, overrides=rewrite_overrides(overrides), return_hydra_config=True)
    except Exception as error:  # hydra's own errors (unknown key or group option) carry the key
        unknown = re.search(r"Could not override '([^']+)'", str(error))
        if unknown:
            raise unknown_key_error(unknown.group(1), overrides, config_name, config_dir) from None
        raise ConfigError(f"config error: {error}") from error
    finally:
        GlobalHydra.instance().clear()
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(Path(str(cfg.hydra.run.dir)).resolve())
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return finalize(cfg)


def finalize(cfg: DictConfig) -> DictConfig:
    """Resolve every interpolation (needs HydraConfig for ``${hydra:...}``), :func:`validate`, and check that
    a ``corpus`` names an importable preparation hook (:func:`m3lit.config.corpus.corpus_hook`)."""
    try:
        OmegaConf.resolve(cfg)
    except Exception as error:
        raise ConfigError(f"config error while resolving interpolations: {error}") from error
    check_retired_keys(cfg)
    validate(cfg)
    if cfg.get("corpus"):
        corpus_hook(cfg.corpus.get("prepare"))
    return cfg


def save_config(cfg: DictConfig, folder: str | Path) -> Path:
    """Write the resolved config to ``folder/config.yaml`` (atomically: a crash leaves the old file whole)."""
    path = Path(folder) / "config.yaml"
    write_text_atomic(path, OmegaConf.to_yaml(cfg, resolve=True))
    return path


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to a temporary file next to ``path``, then rename it over ``path`` (one step)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
