"""Evaluate a model on BEIR-layout datasets in the paper's five modes plus BM25; write a table and a plot.

Run::

    python -m m3lit.evaluate model=PATH data=DIR output_dir=OUT
    python -m m3lit.evaluate model=run/last.ckpt data=[data/a,data/b] output_dir=OUT metrics=[ndcg@10,recall@20]
    python -m m3lit.evaluate model=BAAI/bge-m3 data=DIR retrieval.hybrid_weights=[0.2,0.8] retrieval.passage_max_len=8192
    python -m m3lit.evaluate model=e5 data=DIR modes=[dense,bm25] retrieval.pooling=mean \\
        retrieval.query_prefix="'query: '" retrieval.passage_prefix="'passage: '"
    python -m m3lit.evaluate settings=OLD/results.json output_dir=OUT      # re-run a recorded evaluation
    python -m m3lit.evaluate model=BAAI/bge-m3 suite=mldr languages=[en,de] tune_fusion=true output_dir=OUT
    python -m m3lit.evaluate model=RUN/export suite=BENCH/eval output_dir=OUT \\
        reference="{name_or_path: m3lit:multilingual-e5-small-q4, label: multilingual-e5-small, \\
        retrieval: {pooling: mean, query_prefix: 'query: ', passage_prefix: 'passage: '}}"

``model`` is an m3lit export or FlagEmbedding folder, a hub id, or a Lightning training checkpoint
(``.ckpt``, read with ``torch.load(weights_only=True)`` by :func:`m3lit.model.training_checkpoint.load_model`). A folder
without ``sparse_linear.pt``/``colbert_linear.pt`` is evaluated in dense mode (and BM25) only, with a
loud warning. Every option, with its default, is in ``configs/evaluate.yaml``; overrides are OmegaConf
``key=value`` pairs, as for training.

Outputs in ``output_dir``: ``results.json`` (``{"settings": ..., "results": ...}``; results are mode ->
metric -> value in [0, 1], one level deeper under the dataset names for several datasets; settings are
everything that made the table, :mod:`m3lit.retrieval.report.provenance`), ``results.md`` (the table(s), x100),
``results.png`` (a bar per mode, BM25 as a line: :mod:`m3lit.retrieval.report.chart`) and ``runs/<mode>.trec``
(``runs/<dataset>/<mode>.trec`` for several datasets): the scored lists as TREC run files
(:mod:`m3lit.retrieval.trec`).

``suite=DIR`` evaluates a benchmark suite instead (:mod:`m3lit.retrieval.suite`: a table per task, a row
per method, a column per language and the average), optionally beside a released ``reference`` model (its
bars stand beside the model's in ``results.png``). ``suite=miracl``, ``suite=mkqa``, ``suite=mldr`` or ``suite=beir:<name>``
(with ``languages=[...]``) first builds that paper benchmark from its pinned Hub dataset into the cache
(:mod:`m3lit.corpora.paper`; needs ``m3lit[mteb]``).

The work is :func:`run_evaluation`, the one evaluation function: this command and ``train()`` both turn their
config into :class:`~m3lit.retrieval.options.EvaluationOptions` (:func:`evaluation_options`,
:func:`training_evaluation_options`) and call it.

``settings=<results.json>`` starts from that file's recorded settings (model, data, split, modes, metrics,
dtype, unknown_qrels, ignore_identical_ids, retrieval) instead of the defaults; explicit ``key=value``
overrides still win. Re-running on the same device reproduces the table exactly; a dataset whose hash
differs from the recorded one is reported with a warning.

Every path (model, data folders, suite, reference) is checked before the model loads; a user error ends
the command with one ``error: ...`` line, exit status 2 for a bad option and 1 for a bad file or model
(``--debug`` shows the traceback: :mod:`m3lit.files.errors`). ``--help`` prints this text and every key of
``configs/evaluate.yaml`` with its default and comment.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from m3lit.config.checks import ConfigError
from m3lit.config.compose import dotted_keys
from m3lit.files.errors import did_you_mean, run_command
from m3lit.files.jsonl import DataError
from m3lit.files.options import canonical_key
from m3lit.model.device import resolve_dtype
from m3lit.model.reference import check_model_reference
from m3lit.retrieval import DEFAULT_METRICS, RetrievalConfig, evaluate_retrieval, load_beir
from m3lit.retrieval.beir import check_beir_folder
from m3lit.retrieval.config import LENGTH_ALIASES
from m3lit.retrieval.metrics import parse_metric
from m3lit.retrieval.modes import check_modes
from m3lit.retrieval.options import EvaluationOptions
from m3lit.retrieval.report.provenance import (
    OPTIONAL_RESTORED_KEYS,
    RESTORED_KEYS,
    dataset_hash,
    evaluation_settings,
    read_results,
)
from m3lit.retrieval.report.write import write_reports
from m3lit.retrieval.suite import check_suite_folder

__all__ = [
    "CONFIG_PATH",
    "EvaluationOptions",
    "check_inputs",
    "cli",
    "dataset_names",
    "evaluate",
    "evaluation_options",
    "load_config",
    "main",
    "run_evaluation",
    "training_evaluation_options",
    "write_reports",
]

log = logging.getLogger("m3lit.evaluate")

#: Defaults of every option (documented there).
CONFIG_PATH = Path(__file__).resolve().parent.parent / "configs" / "evaluate.yaml"


def load_config(overrides: Sequence[str] = (), base: DictConfig | None = None) -> DictConfig:
    """``configs/evaluate.yaml`` (or ``base``, another command's defaults: ``python -m m3lit.mteb``), then a
    ``settings=`` file's recorded settings, then the ``key=value`` overrides.

    Raises:
        ConfigError: a misspelt key, a malformed override or a value of the wrong type (naming the key).
    """
    if base is None and not CONFIG_PATH.is_file():
        raise FileNotFoundError(f"{CONFIG_PATH}: evaluation defaults not found (run from an m3lit checkout)")
    base = OmegaConf.load(CONFIG_PATH) if base is None else base
    OmegaConf.set_struct(base, True)  # a misspelt key raises instead of being ignored
    dotlist = []
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r} is not key=value (see --help)")
        dotlist.append(f"{canonical_key(key, LENGTH_ALIASES, 'evaluate')}={value}")
    try:
        explicit = OmegaConf.from_dotlist(dotlist)
        layers = [base]
        if explicit.get("settings"):
            layers.append(recorded_settings(str(explicit.settings)))
        return OmegaConf.merge(*layers, explicit)
    except ConfigKeyError as error:  # a misspelt key: the closest valid ones
        key = str(getattr(error, "full_key", "") or error.key)
        keys = dotted_keys(OmegaConf.to_container(base, resolve=False))
        raise ConfigError(
            f"unknown option {key!r}{did_you_mean(key, keys) or ' (no similar option)'}; `--help` lists every "
            "option with its default"
        ) from None
    except OmegaConfBaseException as error:  # a malformed value, with the full key
        raise ConfigError(f"config error: {error}") from error


def recorded_settings(path: str) -> DictConfig:
    """The options a ``results.json`` recorded (:data:`RESTORED_KEYS`), as a config layer."""
    _, settings = read_results(path)
    if not settings:
        raise DataError("no 'settings' block (written before m3lit recorded evaluation settings)", path=path)
    missing = [k for k in RESTORED_KEYS if k not in settings]
    if missing:
        raise DataError(f"settings lack {missing}", path=path)
    keys = [*RESTORED_KEYS, *(k for k in OPTIONAL_RESTORED_KEYS if k in settings)]
    return OmegaConf.create({k: settings[k] for k in keys})


def _dataset_dirs(data) -> list[str]:
    """``data=DIR``, ``data=a,b`` or ``data=[a,b]`` as a list of folders."""
    if isinstance(data, ListConfig | list | tuple):
        dirs = [str(d) for d in data]
    else:
        dirs = [d for d in str(data).split(",") if d]
    if not dirs:
        raise ConfigError("data: no dataset folder given")
    return dirs


def dataset_names(dirs: Sequence[str]) -> list[str]:
    """Folder names, disambiguated with their parents when two datasets share one."""
    names = [Path(d).resolve().name for d in dirs]
    for i, name in enumerate(names):
        if names.count(name) > 1:
            names[i] = str(Path(*Path(dirs[i]).resolve().parts[-2:]))
    if len(set(names)) < len(names):
        raise ConfigError(f"data: datasets {dirs} cannot be told apart by name")
    return names


def evaluation_options(cfg: DictConfig) -> EvaluationOptions:
    """The evaluate command's config (``configs/evaluate.yaml`` + overrides) as :class:`EvaluationOptions`."""
    container = functools.partial(OmegaConf.to_container, resolve=True)
    return EvaluationOptions(
        data=() if cfg.suite else tuple(_dataset_dirs(cfg.data)),
        suite=str(cfg.suite) if cfg.suite else None,
        split=str(cfg.split),
        modes=tuple(cfg.modes),
        metrics=tuple(cfg.metrics),
        retrieval=RetrievalConfig.from_mapping(container(cfg.retrieval)).to_dict(),
        ignore_identical_ids=bool(cfg.ignore_identical_ids),
        unknown_qrels=str(cfg.unknown_qrels),
        device=None if str(cfg.device) == "auto" else str(cfg.device),
        progress=bool(cfg.progress),
        reference=container(cfg.reference) if cfg.reference else None,
        tune_fusion=bool(cfg.tune_fusion),
    )


#: The keys of ``train.yaml``'s ``evaluate.options`` (the rest of an evaluation's options).
TRAIN_OPTION_KEYS = ("metrics", "config", "device", "progress", "unknown_qrels")


def training_evaluation_options(block: DictConfig) -> EvaluationOptions:
    """``train.yaml``'s ``evaluate`` block as :class:`EvaluationOptions` (``options`` holds metrics, config,
    device, progress and unknown_qrels; progress bars are off unless asked).

    Raises:
        ConfigError: an unknown key in ``evaluate.options``.
    """
    extra = OmegaConf.to_container(block.options, resolve=True) if block.options else {}
    unknown = sorted(set(extra) - set(TRAIN_OPTION_KEYS))
    if unknown:
        raise ConfigError(
            f"evaluate.options.{unknown[0]}: unknown option; valid options: {sorted(TRAIN_OPTION_KEYS)}"
        )
    suite = block.get("suite")
    reference = block.get("reference")
    return EvaluationOptions(
        data=(str(block.dataset_dir),) if block.dataset_dir and not suite else (),
        suite=str(suite) if suite else None,
        split=str(block.split),
        modes=tuple(block.modes),
        metrics=tuple(extra.get("metrics", DEFAULT_METRICS)),
        retrieval=RetrievalConfig.from_mapping(extra.get("config")).to_dict(),
        ignore_identical_ids=bool(block.get("ignore_identical_ids", True)),
        unknown_qrels=str(extra.get("unknown_qrels", "error")),
        device=extra.get("device"),
        progress=bool(extra.get("progress", False)),
        reference=OmegaConf.to_container(reference, resolve=True) if reference else None,
        tune_fusion=bool(block.get("tune_fusion", False)),
    )


def evaluate(cfg: DictConfig) -> dict:
    """Load the model and datasets of ``cfg``, evaluate, write the reports; return the results dict."""
    from m3lit.model.training_checkpoint import load_model

    check_inputs(cfg)
    options = evaluation_options(cfg)
    if cfg.settings and not options.suite:
        _check_hashes(str(cfg.settings), dataset_names(options.data), list(options.data), options.split)
    model = load_model(str(cfg.model), key="model")
    model = model.to(device=options.torch_device, dtype=resolve_dtype(str(cfg.dtype))).eval()
    return run_evaluation(
        model, options, cfg.output_dir, model_ref=str(cfg.model), label=_label(str(cfg.model))
    )


def run_evaluation(
    model,
    options: EvaluationOptions,
    output_dir: str | Path,
    *,
    model_ref: str,
    label: str,
    baselines: Mapping[str, Mapping] | None = None,
    done: Mapping[str, Mapping[str, float]] | None = None,
    loggers: Sequence = (),
    log_prefix: str = "results",
) -> dict:
    """Evaluate ``model`` as ``options`` say and write the reports: the one evaluation of m3lit, called by
    ``python -m m3lit.evaluate`` and by ``train()`` (for the untrained and the trained model).

    One or several BEIR folders (``options.data``) give ``results.json`` (results + the settings that made
    them), ``results.md``, ``results.png`` and ``runs/<mode>.trec`` (``runs/<dataset>/<mode>.trec`` for
    several); a suite (``options.suite``) gives its tables per task, with the reference model's rows
    (:func:`m3lit.retrieval.suite.run_suite`), also sent to every logger that takes tables (W&B).

    Args:
        model: an :class:`~m3lit.model.M3Model`; evaluated in eval mode, its training flag restored after.
        options: what to evaluate and how; an unset ``device`` is the GPU when there is one.
        output_dir: where the reports go (created).
        model_ref: how to load ``model`` again (recorded in the settings).
        label: the model's name in the printout and the chart, beside ``baselines`` ({label: results}).
        done: one dataset only: mode -> metrics already computed for this model (the training callback's
            evaluation of the final step); only the other modes are evaluated, and only they get a run file.
        loggers: suite only: loggers with ``log_text`` get one table per task and metric, named
            ``<log_prefix>/<task>/<metric>``.

    Returns:
        mode -> metric -> value (one dataset), dataset -> mode -> metric -> value (several), or a suite's
        task -> table.
    """
    options = replace(options, device=str(options.torch_device))
    was_training = model.training
    model.eval()
    if options.suite:
        from m3lit.retrieval.suite import run_suite

        results = run_suite(model, options, output_dir, model_ref=model_ref, label=label, baselines=baselines)
        _log_tables(loggers, results, log_prefix)
    else:
        results = _evaluate_datasets(model, options, Path(output_dir), done or {})
        settings = _dataset_settings(model, options, model_ref)
        table = write_reports(results, str(output_dir), settings, label=label, baselines=baselines)
        print(f"\nRetrieval on {', '.join(options.data)} ({options.split}), {label}:\n{table}\n", flush=True)
        print(
            f"wrote {Path(output_dir) / 'results.json'}, results.md, results.png, {Path(output_dir) / 'runs'}/"
        )
    model.train(was_training)
    return results


def _evaluate_datasets(model, options: EvaluationOptions, output_dir: Path, done: Mapping) -> dict:
    """Load each BEIR folder of ``options.data`` and score it: mode -> metric -> value (one folder), or
    dataset name -> that (several). Modes in ``done`` are taken from it instead of being evaluated."""
    names, runs = dataset_names(options.data), output_dir / "runs"
    todo = [mode for mode in options.modes if mode not in done]
    keywords = {
        "metrics": options.metrics, "config": options.config, "device": options.device,
        "progress": options.progress, "ignore_identical_ids": options.ignore_identical_ids,
    }  # fmt: skip
    per_dataset = {}
    for name, folder in zip(names, options.data, strict=True):
        scores = dict(done)
        if todo:
            dataset = load_beir(folder, options.split, unknown_qrels=options.unknown_qrels, name=name)
            log.info(
                "%s: %d documents, %d queries (%d with a relevant document)",
                name, len(dataset.corpus_ids), len(dataset.query_ids), dataset.num_relevant_queries,
            )  # fmt: skip
            runs_dir = runs if len(names) == 1 else runs / name
            scores.update(evaluate_retrieval(model, dataset, modes=todo, runs_dir=runs_dir, **keywords))
        per_dataset[name] = {mode: scores[mode] for mode in options.modes if mode in scores}
    return per_dataset[names[0]] if len(names) == 1 else per_dataset


def _dataset_settings(model, options: EvaluationOptions, model_ref: str) -> dict:
    """The ``settings`` block of a BEIR evaluation (:func:`m3lit.retrieval.report.provenance.evaluation_settings`)."""
    return evaluation_settings(
        model=model_ref,
        data=options.data[0] if len(options.data) == 1 else list(options.data),
        names=dataset_names(options.data),
        split=options.split,
        modes=options.modes,
        metrics=options.metrics,
        retrieval=options.config.to_dict(),
        ignore_identical_ids=options.ignore_identical_ids,
        unknown_qrels=options.unknown_qrels,
        dtype=str(next(model.parameters()).dtype).removeprefix("torch."),
        device=str(options.device),
    )


def _log_tables(loggers: Sequence, results: Mapping[str, Mapping], prefix: str) -> None:
    """A suite's tables to every logger that takes tables (W&B): one per task and metric, a row per method
    and a column per language (x100)."""
    for logger in loggers:
        if not hasattr(logger, "log_text"):
            continue
        for task, block in results.items():
            langs = block["languages"]
            for metric in block["metrics"]:
                rows = [
                    [label]
                    + [round(100 * per_lang.get(lang, {}).get(metric, float("nan")), 1) for lang in langs]
                    for label, per_lang in block["rows"].items()
                ]
                logger.log_text(f"{prefix}/{task}/{metric}", columns=["method", *langs], data=rows)


def resolve_paper_suite(cfg: DictConfig) -> None:
    """``suite=miracl|mkqa|mldr|beir:<name>``: build that benchmark from the Hub into the cache
    (:func:`m3lit.corpora.paper.build_paper_suite`, before any model loads) and point ``cfg.suite`` at the
    built folder. A ``suite`` that is a folder, and no suite at all, pass through unchanged.

    Raises:
        ConfigError: ``languages`` or ``hub_dir`` without a paper benchmark.
    """
    suite = cfg.get("suite")
    if suite and not Path(str(suite)).is_dir():
        from m3lit.corpora.paper import build_paper_suite, is_paper_benchmark

        if is_paper_benchmark(str(suite)):
            languages = list(cfg.languages) if cfg.get("languages") else None
            cfg.suite = str(build_paper_suite(str(suite), languages, hub_dir=cfg.get("hub_dir")))
            return
    for key in ("languages", "hub_dir"):
        if cfg.get(key):
            raise ConfigError(
                f"{key}: only for suite=miracl|mldr|beir:<name> (a paper benchmark built from the Hub)"
            )


def check_inputs(cfg: DictConfig) -> None:
    """Check the options and every path ``cfg`` reads, before any model is loaded; a paper benchmark named by
    ``suite=`` is built (downloaded) once the options and the model reference have passed.

    Raises:
        ConfigError: neither or both of ``data`` and ``suite``, ``tune_fusion`` without a suite, or an unset
            required option.
        PathError / ModelReferenceError: a data or suite folder, or a model, that is not there.
    """
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(
            f"missing required option(s): {', '.join(f'{k}=...' for k in missing)} (see --help)"
        )
    if not cfg.get("suite") and not cfg.get("data"):
        raise ConfigError("missing required option(s): data=... (or suite=...) (see --help)")
    if cfg.get("suite") and cfg.get("data"):
        raise ConfigError(
            "give either data=DIR (BEIR folder or list) or suite=DIR (a benchmark suite), not both"
        )
    if cfg.get("tune_fusion") and not cfg.get("suite"):
        raise ConfigError(
            "tune_fusion=true needs suite=DIR: the weights are chosen on the dev queries of a suite's tasks"
        )
    _check_options(cfg)
    check_model_reference(str(cfg.model), "model")
    if cfg.get("reference") and cfg.reference.get("name_or_path"):
        check_model_reference(str(cfg.reference.name_or_path), "reference.name_or_path")
    resolve_paper_suite(cfg)
    if cfg.suite:
        check_suite_folder(str(cfg.suite))
    else:
        for folder in _dataset_dirs(cfg.data):
            check_beir_folder(folder, str(cfg.split), "data")


def _check_options(cfg: DictConfig) -> None:
    """The option values (modes, metrics, retrieval settings), before any path is read or model loaded.

    Raises:
        ConfigError: naming the option (exit status 2).
    """
    try:
        options = evaluation_options(cfg)
    except ValueError as error:
        raise ConfigError(f"retrieval.{error}" if "retrieval" not in str(error) else str(error)) from None
    try:
        check_modes(options.modes, options.config)
    except ValueError as error:
        raise ConfigError(f"modes: {error}") from None
    for metric in options.metrics:
        try:
            parse_metric(metric)
        except ValueError as error:
            cutoff = str(metric).rpartition("@")[2]
            hint = did_you_mean(metric, [f"{name}@{cutoff}" for name in ("ndcg", "recall", "mrr")])
            raise ConfigError(f"metrics: {error}{hint}") from None


def _label(model: str) -> str:
    """The model's name in results.png: the last two parts of its path or hub id (``full2/export``)."""
    return "/".join(Path(model).parts[-2:])


def _check_hashes(path: str, names: list[str], dirs: list[str], split: str) -> None:
    """Warn for every dataset whose fingerprint differs from the one recorded in ``path``."""
    recorded = (read_results(path)[1] or {}).get("datasets", {})
    for name, folder in zip(names, dirs, strict=True):
        before = recorded.get(name, {}).get("sha256")
        now = dataset_hash(folder, split)["sha256"]
        if before is None:
            log.warning("%s: no recorded hash for dataset %r; cannot check it is the same data", path, name)
        elif before != now:
            log.warning(
                "dataset %s (%s) differs from the one recorded in %s (sha256 %s, now %s): the table will differ",
                name, folder, path, before[:12], now[:12],
            )  # fmt: skip


def _run(args: list[str]) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return evaluate(load_config(args))


def _help() -> str:
    """This module's docstring, then ``configs/evaluate.yaml`` as written: every key, default and comment."""
    return f"{__doc__.strip()}\n\nOptions (key=value; configs/evaluate.yaml):\n\n{CONFIG_PATH.read_text(encoding='utf-8')}"


def main(argv: Sequence[str] | None = None) -> dict:
    """Command-line entry point (``python -m m3lit.evaluate``): the results dict (see :func:`evaluate`), or
    ``{}`` after ``--help``; a user error prints one ``error:`` line and raises ``SystemExit``."""
    results = run_command(_run, argv, help=_help)
    return results if isinstance(results, dict) else {}


def cli() -> int:
    """The ``m3lit-eval`` script: :func:`main`, with exit status 0 on success (not the results dict)."""
    main()
    return 0


if __name__ == "__main__":
    main()
