"""Evaluate a model on BEIR-layout datasets in the paper's five modes plus BM25; write a table and a plot.

Run::

    python -m m3lit.evaluate model=PATH data=DIR output_dir=OUT
    python -m m3lit.evaluate model=run/last.ckpt data=[data/a,data/b] output_dir=OUT metrics=[ndcg@10,recall@20]
    python -m m3lit.evaluate model=BAAI/bge-m3 data=DIR retrieval.hybrid_weights=[0.2,0.8] retrieval.passage_max_len=8192

``model`` is an m3lit export or FlagEmbedding folder, a hub id, or a Lightning training checkpoint
(``.ckpt``, read with ``torch.load(weights_only=True)`` by :func:`m3lit.ckpt.load_model`). A folder
without ``sparse_linear.pt``/``colbert_linear.pt`` is evaluated in dense mode (and BM25) only, with a
loud warning. Every option, with its default, is in ``configs/evaluate.yaml``; overrides are OmegaConf
``key=value`` pairs, as for training.

Outputs in ``output_dir``: ``results.json`` (mode -> metric -> value in [0, 1]; one level deeper, under
the dataset names, for several datasets), ``results.md`` (the table(s), x100) and ``results.png``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from m3lit.cli import LENGTH_ALIASES, canonical_key
from m3lit.retrieval import RetrievalConfig, evaluate_retrieval, load_beir
from m3lit.retrieval.report import write_reports

__all__ = ["CONFIG_PATH", "load_config", "evaluate", "main", "write_reports"]

log = logging.getLogger("m3lit.evaluate")

#: Defaults of every option (documented there).
CONFIG_PATH = Path(__file__).resolve().parent.parent / "configs" / "evaluate.yaml"


def load_config(overrides: Sequence[str] = ()) -> DictConfig:
    """``configs/evaluate.yaml`` with ``key=value`` overrides applied; unknown keys are an error."""
    if not CONFIG_PATH.is_file():
        raise FileNotFoundError(f"{CONFIG_PATH}: evaluation defaults not found (run from an m3lit checkout)")
    base = OmegaConf.load(CONFIG_PATH)
    OmegaConf.set_struct(base, True)  # a misspelt key raises instead of being ignored
    dotlist = []
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} is not key=value")
        dotlist.append(f"{canonical_key(key, LENGTH_ALIASES, 'evaluate')}={value}")
    return OmegaConf.merge(base, OmegaConf.from_dotlist(dotlist))


def _dataset_dirs(data) -> list[str]:
    if isinstance(data, ListConfig | list | tuple):
        dirs = [str(d) for d in data]
    else:
        dirs = [d for d in str(data).split(",") if d]
    if not dirs:
        raise ValueError("data: no dataset folder given")
    return dirs


def _names(dirs: list[str]) -> list[str]:
    """Folder names, disambiguated with their parents when two datasets share one."""
    names = [Path(d).resolve().name for d in dirs]
    for i, name in enumerate(names):
        if names.count(name) > 1:
            names[i] = str(Path(*Path(dirs[i]).resolve().parts[-2:]))
    if len(set(names)) < len(names):
        raise ValueError(f"data: datasets {dirs} cannot be told apart by name")
    return names


def _device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(spec)


def evaluate(cfg: DictConfig) -> dict:
    """Load the model and datasets of ``cfg``, evaluate, write the reports; return the results dict."""
    from m3lit.ckpt import load_model

    dirs = _dataset_dirs(cfg.data)
    names = _names(dirs)
    retrieval = RetrievalConfig.from_mapping(OmegaConf.to_container(cfg.retrieval, resolve=True))
    device = _device(str(cfg.device))
    model = load_model(str(cfg.model), key="model")
    dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[str(cfg.dtype)]
    model = model.to(device=device, dtype=dtype).eval()
    modes, metrics = list(cfg.modes), list(cfg.metrics)
    per_dataset = {}
    for name, folder in zip(names, dirs, strict=True):
        dataset = load_beir(folder, str(cfg.split), unknown_qrels=str(cfg.unknown_qrels), name=name)
        log.info(
            "%s: %d documents, %d queries (%d with a relevant document)",
            name,
            len(dataset.corpus_ids),
            len(dataset.query_ids),
            dataset.num_relevant_queries,
        )
        per_dataset[name] = evaluate_retrieval(
            model,
            dataset,
            modes=modes,
            metrics=metrics,
            config=retrieval,
            device=device,
            progress=bool(cfg.progress),
        )
    results = per_dataset[names[0]] if len(names) == 1 else per_dataset
    table = write_reports(results, cfg.output_dir)
    print(table)
    print(f"wrote {Path(cfg.output_dir) / 'results.json'}, results.md, results.png")
    return results


def main(argv: Sequence[str] | None = None) -> dict:
    """Command-line entry point (``python -m m3lit.evaluate``, ``m3lit-eval``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in args):
        print(__doc__)
        print(OmegaConf.to_yaml(OmegaConf.load(CONFIG_PATH)))
        return {}
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = load_config(args)
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise SystemExit(f"missing required option(s): {', '.join(f'{k}=...' for k in missing)} (see --help)")
    return evaluate(cfg)


if __name__ == "__main__":
    main()
