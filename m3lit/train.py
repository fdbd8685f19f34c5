"""Train an M3 embedder from a Hydra config: ``train(cfg)`` does the work, ``main()`` is the CLI.

Run commands::

    make train                                               # = python -m m3lit.train (the default experiment)
    python -m m3lit.train experiment=<name> trainer.max_steps=50 hydra.run.dir=/tmp/run
    python -m m3lit.train experiment=bge_m3_stage1 data.pairs_data=pairs/ trainer=ddp
    python -m m3lit.train experiment=bge_m3_stage2 data.train_data=labelled/ \\
        model.net.name_or_path=logs/bge_m3_stage1/runs/<time>/export trainer=ddp
    python -m m3lit.train resume=<run dir>                   # resume: the run's own config (m3lit/config/resume.py)
    python -m m3lit.train resume=<run dir> trainer.devices=2 # + overrides that do not change the training

A ``corpus`` (``configs/corpus/<name>.yaml``) builds its data and fills the unset data, tokenizer and
evaluation paths before anything is instantiated (:mod:`m3lit.config.corpus`).

A run writes to its folder (``hydra.run.dir``, default ``logs/<task_name>/runs/<time>``): ``config.yaml``
(resolved), ``checkpoints/`` (``last.ckpt`` + step files), the logger's files, ``export/`` (FlagEmbedding
layout + sentence-transformers files, loadable by ``M3Model.from_pretrained``), ``results.json`` /
``results.md`` / ``results.png`` and ``runs/<mode>.trec`` (retrieval evaluation; results.json records its
settings, :mod:`m3lit.retrieval.report.provenance`) and ``baseline/`` (the same for the untrained model).

Errors: every configured path is checked before Hydra creates the run folder (:mod:`m3lit.config.paths`);
a user error (bad key, type or value, missing or malformed data, a model that cannot be loaded, a corrupt
checkpoint) ends the command with one ``error: ...`` line and exit status 2 (configuration) or 1 (the
rest); ``--debug`` or ``HYDRA_FULL_ERROR=1`` shows the traceback (:mod:`m3lit.files.errors`). ``--help``
lists the config groups and every key with its default (Hydra's help); ``configs/*.yaml`` document them.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

# Idle OpenMP threads sleep instead of spinning (set before torch loads): on a shared or loaded CPU a
# spinning thread pool makes each small op wait for descheduled siblings, slowing tiny models 10-100x.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import hydra  # noqa: E402
import lightning as L  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from lightning.pytorch.utilities import rank_zero_only  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from m3lit.config.compose import CONFIG_DIR, compose, finalize, rewrite_overrides, save_config  # noqa: E402
from m3lit.config.corpus import prepare_corpus  # noqa: E402
from m3lit.config.paths import check_paths  # noqa: E402
from m3lit.config.resume import keep_csv_rows, parse_resume_args, resume_config, wandb_kwargs  # noqa: E402
from m3lit.evaluate import run_evaluation, training_evaluation_options  # noqa: E402
from m3lit.files.errors import debug_requested, run_command  # noqa: E402
from m3lit.model.device import hardware_name  # noqa: E402
from m3lit.model.training_checkpoint import checkpoint_step  # noqa: E402
from m3lit.retrieval.options import EvaluationOptions  # noqa: E402

__all__ = ["train", "main"]

log = logging.getLogger("m3lit.train")

#: The untrained model's name in the printed tables and in results.png.
BASELINE = "untrained model (step 0)"


def train(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fit, export and evaluate as ``cfg`` says (a composed, validated config: :func:`m3lit.config.compose`).

    Returns:
        ``(metrics, objects)``: the trainer's last logged metrics plus ``results`` / ``baseline`` retrieval
        tables when evaluated; the instantiated ``cfg``, ``datamodule``, ``model``, ``trainer``,
        ``callbacks`` and ``export_dir``.
    """
    start = time.perf_counter()
    check_paths(cfg)  # before any model load, logger run or data building
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    prepare_corpus(cfg)  # a `corpus` block: its hook builds the corpus and fills the unset data/eval paths
    # Seeded after the preparation, whose first run does work (mining) that a later run skips.
    L.seed_everything(cfg.seed, workers=True)
    objects = _instantiate(cfg, out_dir)
    module, trainer, loggers = objects["model"], objects["trainer"], objects["loggers"]
    metrics: dict[str, Any] = {}

    options = _evaluation_options(cfg)  # None: not evaluated
    if options is not None and cfg.evaluate.baseline and cfg.ckpt_path is None and trainer.is_global_zero:
        initial = (cfg.model.get("net") or {}).get("name_or_path") or "random init (model.net)"
        metrics["baseline"] = run_evaluation(
            module.model, replace(options, reference=None), out_dir / "baseline", model_ref=str(initial),
            label=BASELINE, loggers=loggers, log_prefix="baseline",
        )  # fmt: skip

    if cfg.train:
        trainer.fit(module, datamodule=objects["datamodule"], ckpt_path=cfg.ckpt_path)
    metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
    if not trainer.is_global_zero:
        return metrics, objects

    target, reference = module.model, f"{out_dir} (in-memory model, export=false)"
    if cfg.export:
        objects["export_dir"] = _export(module, trainer, objects["callbacks"], out_dir / "export")
        target, reference = _load_export(objects["export_dir"]), str(objects["export_dir"])
    if options is not None:
        metrics["results"] = run_evaluation(
            target, options, out_dir, model_ref=reference, label=f"trained model (step {trainer.global_step})",
            baselines=_baselines(metrics, out_dir, suite=bool(options.suite)),
            done=_reused_results(objects["callbacks"], trainer.global_step, options), loggers=loggers,
        )  # fmt: skip
    if cfg.export:  # the card again, now with the evaluation's model-index and the wall time
        _write_card(
            objects["export_dir"], out_dir, time.perf_counter() - start, trainer.strategy.root_device.type
        )
    log.info("run folder: %s (%.1f s)", out_dir, time.perf_counter() - start)
    return metrics, objects


# ---------------------------------------------------------------------------------------------- pieces
def _instantiate(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    """The datamodule, LightningModule, callbacks, loggers and Trainer of ``cfg``, and ``cfg`` itself."""
    # _convert_="all": plain containers, so checkpoints load with torch.load(weights_only=True)
    datamodule = instantiate(cfg.data, _convert_="all")
    _rank_zero_save_config(cfg, out_dir)
    module = instantiate(cfg.model)
    if getattr(datamodule, "tokenizer", None) is None:  # a pretrained model brings its tokenizer
        datamodule.tokenizer = module.model.tokenizer
    callbacks = [
        instantiate(node, _convert_="all")
        for node in (cfg.get("callbacks") or {}).values()
        if node is not None
    ]
    loggers = [
        instantiate(node, _convert_="all", **wandb_kwargs(node, out_dir))
        for node in (cfg.get("logger") or {}).values()
        if node is not None
    ]
    if cfg.ckpt_path is not None:
        keep_csv_rows(loggers, checkpoint_step(cfg.ckpt_path))
    trainer: L.Trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, _convert_="all"
    )
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    return {
        "cfg": cfg, "datamodule": datamodule, "model": module, "trainer": trainer, "callbacks": callbacks,
        "loggers": loggers,
    }  # fmt: skip


def _load_export(export_dir: Path):
    """The exported model, read back from disk: the final evaluation scores what was released."""
    from m3lit.model import M3Model

    return M3Model.from_pretrained(export_dir)


@rank_zero_only
def _rank_zero_save_config(cfg: DictConfig, out_dir: Path) -> None:
    path = save_config(cfg, out_dir)
    if cfg.get("print_config", True):
        print(OmegaConf.to_yaml(cfg, resolve=True))
    log.info("resolved config saved to %s", path)


def _evaluation_options(cfg: DictConfig) -> EvaluationOptions | None:
    """The ``evaluate`` block as :class:`~m3lit.retrieval.options.EvaluationOptions`; None when evaluation is
    off, or on without a dataset or suite (a corpus's preparation fills ``evaluate.dataset_dir``)."""
    if not cfg.evaluate.enabled:
        return None
    options = training_evaluation_options(cfg.evaluate)
    if not options.suite and not options.data:
        log.warning(
            "evaluate.enabled but neither evaluate.dataset_dir nor evaluate.suite: skipping retrieval evaluation"
        )
        return None
    return options


def _baselines(metrics: dict, out_dir: Path, suite: bool) -> dict[str, dict]:
    """The untrained model's results, drawn beside the trained model's in results.png: this launch's, or on
    a resume the first launch's ``<run dir>/baseline/results.json``; ``{}`` when it was not evaluated."""
    from m3lit.retrieval.report.provenance import read_results

    results, saved = metrics.get("baseline"), out_dir / "baseline" / "results.json"
    if results is None and saved.is_file():
        results = read_results(saved)[0]
        results = results["tasks"] if suite else results
    return {} if results is None else {BASELINE: results}


def _reused_results(callbacks: list, step: int, options: EvaluationOptions) -> dict | None:
    """The RetrievalMetrics callback's results of the final ``step`` when they are what the final evaluation
    of the one dataset would compute (:func:`m3lit.callbacks.retrieval_metrics.reusable_results`)."""
    if options.suite:
        return None
    from m3lit.callbacks.retrieval_metrics import reusable_results

    same = {
        "metrics": list(options.metrics),
        "config": options.retrieval,
        "unknown_qrels": options.unknown_qrels,
    }
    done = reusable_results(callbacks, step, options.data[0], options.split, same)
    if done:
        log.info(
            "final evaluation: modes %s of this step reused from RetrievalMetrics (no run files)",
            sorted(done),
        )
    return done


def _export(module, trainer: L.Trainer, callbacks: list, export_dir: Path) -> Path:
    """Write the final model to ``export_dir``: FlagEmbedding layout + sentence-transformers files + m3lit.json.

    The final ``last.ckpt`` goes through :func:`m3lit.export.export` (the checkpoint -> release path, with
    provenance); without one (checkpointing off, fast_dev_run) the in-memory model is saved the same way.
    """
    from m3lit.callbacks.checkpoint import StepCheckpoint
    from m3lit.export import PROVENANCE_FILE, export

    saver = next((c for c in callbacks if isinstance(c, StepCheckpoint)), None)
    last = Path(saver.last_model_path) if saver is not None and saver.last_model_path else None
    if last is not None and last.is_file() and saver._last_global_step_saved == trainer.global_step:
        export(last, export_dir, overwrite=True)
    else:
        module.model.save_pretrained(export_dir)
        provenance = {"source_checkpoint": None, "step": int(trainer.global_step), "stage": module.stage}
        (export_dir / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")
    log.info("exported the model to %s", export_dir)
    return export_dir


def _write_card(export_dir: Path, out_dir: Path, seconds: float, device_type: str) -> None:
    """Rewrite ``export_dir/README.md`` from this run's folder (config.yaml, results.json), wall time and
    hardware (also recorded in ``m3lit.json``)."""
    from m3lit.export import PROVENANCE_FILE
    from m3lit.export_card import write_card

    path = export_dir / PROVENANCE_FILE
    provenance = json.loads(path.read_text(encoding="utf-8"))
    provenance["hardware"] = hardware_name(device_type)
    path.write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")
    write_card(export_dir, provenance, run=out_dir, wall_seconds=seconds)


# an absolute path: the `m3lit-train` script imports this module by name, and Hydra would look for a
# relative path as a Python package ("configs" is a folder, not a package)
@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def _hydra_main(cfg: DictConfig) -> None:
    train(finalize(cfg))


def _run(argv: list[str], debug: bool = False) -> None:
    resume = parse_resume_args(argv)
    if resume is not None:  # the run's own saved config (no @hydra.main: .hydra/ stays as it is)
        logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
        train(resume_config(resume))
        return
    if not any(arg.startswith("-") for arg in argv):  # no Hydra flag (--help, --multirun, --cfg job, ...)
        check_paths(compose(argv))  # a plain run: fail before Hydra creates the run folder
    # Hydra re-raises instead of printing its own report; run_command reports (M3LIT_DEBUG decides, so a
    # DDP worker started with this environment reports like its parent)
    os.environ["M3LIT_DEBUG"] = "1" if debug else "0"
    os.environ["HYDRA_FULL_ERROR"] = "1"
    sys.argv[1:] = rewrite_overrides(argv)
    _hydra_main()


def main(argv: list[str] | None = None) -> None:
    """``python -m m3lit.train [group=option ...] [key=value ...]`` (see the module docstring)."""
    from hydra.errors import HydraException, InstantiationException

    args = list(sys.argv[1:] if argv is None else argv)
    run = functools.partial(_run, debug=debug_requested(args))
    run_command(run, args, user_errors=(HydraException,), unwrap=(InstantiationException,))


if __name__ == "__main__":
    main()
