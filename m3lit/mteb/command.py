"""Evaluate an m3lit model with mteb, every retrieval mode its own mteb result; print m3lit's table.

Run::

    python -m m3lit.mteb model=PATH tasks=[SciFact,STS12] modes=[dense,all] output_dir=OUT
    python -m m3lit.mteb model=RUN/export data=BENCH/eval/miracl/en output_dir=OUT \
        retrieval.query_max_len=128 retrieval.passage_max_len=256 \
        retrieval.hybrid_weights=[1,0.5] retrieval.all_weights=[1,1.5,1.5]

``model`` is anything ``python -m m3lit.evaluate`` loads (an m3lit export or FlagEmbedding folder, a hub id, a
Lightning ``.ckpt``, an ``m3lit:NAME`` reference). ``tasks`` are mteb task names (their data comes from the
Hugging Face Hub or its local cache); ``data`` are local BEIR folders, run as mteb retrieval tasks
(:mod:`m3lit.mteb.tasks`). Retrieval tasks run in every mode of ``modes`` (:mod:`m3lit.mteb.search`: the
corpus is indexed once, fusion and re-ranking as in ``m3lit.evaluate``, with the ``retrieval.*`` settings);
every other task type, and reranking tasks, run once on the dense vectors (the ``__dense`` model).

mteb writes its own result files, one model per mode: ``OUT/results/<name>__<mode>/<revision>/<task>.json``
(the revision is the sha256 of the weights, :func:`m3lit.mteb.model.weights_revision`). The command then
prints the same tables as ``m3lit.evaluate`` (a row per task, a column per mode; x100) and writes them to
``OUT/results.md``.

Every task's data is loaded, and every folder checked, before the model loads: an unknown task, mode or
option, a missing folder, or a task whose data is on an unreachable Hub ends the command with one
``error: ...`` line (exit status 2 for a bad option, 1 for missing data or model). ``--help`` prints this
text and every key of ``configs/mteb.yaml`` with its default and comment.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from m3lit.config.checks import ConfigError
from m3lit.evaluate import CONFIG_PATH as EVALUATE_CONFIG
from m3lit.evaluate import load_config as evaluate_config
from m3lit.files.errors import UserError, run_command
from m3lit.model.reference import check_model_reference, hub_offline
from m3lit.retrieval.beir import check_beir_folder
from m3lit.retrieval.config import RetrievalConfig
from m3lit.retrieval.modes import MODEL_MODES

__all__ = ["CONFIG_PATH", "load_config", "main", "run"]

log = logging.getLogger("m3lit.mteb")

#: Defaults of every option (documented there); ``retrieval`` defaults come from ``configs/evaluate.yaml``.
CONFIG_PATH = Path(__file__).resolve().parents[2] / "configs" / "mteb.yaml"
OVERWRITE = ("always", "never", "only-missing", "only-cache")


class TaskDataError(UserError):
    """An mteb task whose data cannot be loaded (the Hub unreachable and the data not cached)."""


def load_config(overrides: Sequence[str] = ()) -> DictConfig:
    """``configs/mteb.yaml`` (its ``retrieval`` block filled from ``configs/evaluate.yaml``), then the
    ``key=value`` overrides, parsed as ``python -m m3lit.evaluate`` parses them.

    Raises:
        ConfigError: a misspelt key, a malformed override or a value of the wrong type (naming the key).
    """
    base = OmegaConf.load(CONFIG_PATH)
    base.retrieval = OmegaConf.load(EVALUATE_CONFIG).retrieval
    return evaluate_config(overrides, base=base)


def _as_list(value) -> list[str]:
    """``x``, ``a,b`` or ``[a,b]`` as a list of strings (None: empty)."""
    if value is None:
        return []
    if isinstance(value, ListConfig | list | tuple):
        return [str(v) for v in value]
    return [v for v in str(value).split(",") if v]


def check_options(cfg: DictConfig) -> RetrievalConfig:
    """Check every option and path of ``cfg`` (nothing is loaded); return the retrieval settings.

    Raises:
        ConfigError: a missing model, no task and no data, an unknown mode or overwrite strategy, or a bad
            retrieval setting.
        PathError / ModelReferenceError: a data folder or model that is not there.
    """
    if OmegaConf.missing_keys(cfg):
        raise ConfigError("missing required option(s): model=... (see --help)")
    if not _as_list(cfg.tasks) and not _as_list(cfg.data):
        raise ConfigError("nothing to evaluate: give tasks=[mteb task names] and/or data=[BEIR folders]")
    unknown = [m for m in _as_list(cfg.modes) if m not in MODEL_MODES]
    if unknown or not _as_list(cfg.modes):
        raise ConfigError(f"modes={_as_list(cfg.modes)}: choose one or more of {list(MODEL_MODES)}")
    if str(cfg.overwrite) not in OVERWRITE:
        raise ConfigError(f"overwrite={cfg.overwrite}: choose one of {list(OVERWRITE)}")
    try:
        retrieval = RetrievalConfig.from_mapping(OmegaConf.to_container(cfg.retrieval, resolve=True))
    except (TypeError, ValueError) as error:
        raise ConfigError(f"retrieval: {error}") from error
    _check_languages(cfg)
    for folder in _as_list(cfg.data):
        check_beir_folder(folder, str(cfg.split), "data")
    check_model_reference(str(cfg.model), "model")
    return retrieval


def _check_languages(cfg: DictConfig) -> None:
    """``data_language``, ``languages`` and ``task_languages`` are mteb language codes (``eng-Latn``, ``eng``).

    Raises:
        ConfigError: naming the key and the code mteb does not know.
    """
    from mteb.languages.check_language_code import check_language_code

    keys = {"data_language": [str(cfg.data_language)], "languages": _as_list(cfg.languages)}
    for key, codes in {**keys, "task_languages": _as_list(cfg.task_languages)}.items():
        for code in codes:
            try:
                check_language_code(code)
            except ValueError as error:
                raise ConfigError(f"{key}: {str(error).splitlines()[0]} (e.g. eng-Latn or eng)") from error


def load_tasks(cfg: DictConfig) -> list:
    """The mteb tasks of ``cfg.tasks`` and the local tasks of ``cfg.data``, their data loaded.

    Raises:
        ConfigError: an unknown mteb task name.
        TaskDataError: an mteb task whose data cannot be reached (the Hub offline and nothing cached).
    """
    import mteb

    from m3lit.mteb.tasks import beir_task

    tasks = []
    names, languages = _as_list(cfg.tasks), _as_list(cfg.task_languages) or None
    if names:
        try:
            tasks = list(mteb.get_tasks(tasks=names, languages=languages))
        except KeyError as error:
            raise ConfigError(f"tasks: {error.args[0] if error.args else error}") from error
        if not tasks:
            raise ConfigError(f"tasks={names}: none has a subset in task_languages={languages}")
    for task in tasks:
        try:
            task.load_data()
        except (OSError, ConnectionError) as error:
            reason = hub_offline() or "the download failed"
            dataset = task.metadata.dataset.get("path", "?")
            raise TaskDataError(
                f"tasks: {task.metadata.name} needs its data from the Hugging Face Hub ({dataset}), which cannot "
                f"be reached ({reason}; {str(error).splitlines()[0]}). Run it once where the Hub is reachable "
                "(the data is cached), or evaluate a local BEIR folder with data=DIR"
            ) from error
    for folder in _as_list(cfg.data):
        task = beir_task(
            folder,
            str(cfg.split),
            language=str(cfg.data_language),
            ignore_identical_ids=bool(cfg.ignore_identical_ids),
        )
        task.load_data()
        tasks.append(task)
    return tasks


def run(cfg: DictConfig) -> dict[str, dict[str, dict[str, float]]]:
    """Check ``cfg``, load the tasks' data, then the model; evaluate every task (retrieval tasks in every
    mode, the others dense); write mteb's result files and ``results.md``; return task -> mode -> metric."""
    from m3lit.mteb.model import mteb_models
    from m3lit.mteb.results import evaluate_tasks, results_table

    retrieval = check_options(cfg)
    tasks = load_tasks(cfg)
    modes = _as_list(cfg.modes)
    models = mteb_models(
        str(cfg.model),
        list(dict.fromkeys(["dense", *modes])),  # the dense model also serves the other task types
        retrieval,
        name=str(cfg.name) if cfg.name else None,
        languages=_as_list(cfg.languages) or None,
        device=None if str(cfg.device) == "auto" else str(cfg.device),
        dtype=str(cfg.dtype),
        progress=bool(cfg.progress),
    )
    modes = [m for m in modes if m in models]
    output_dir = Path(str(cfg.output_dir))
    results = evaluate_tasks(
        models,
        modes,
        tasks,
        output_dir,
        overwrite=str(cfg.overwrite),
        batch_size=int(cfg.batch_size),
        progress=bool(cfg.progress),
    )
    table = results_table(results)
    (output_dir / "results.md").write_text(table, encoding="utf-8")
    name = next(iter(models.values())).mteb_model_meta.name.rsplit("__", 1)[0]
    print(
        f"\nmteb, {name}:\n{table}\nwrote {output_dir / 'results'}/<name>__<mode>/, {output_dir / 'results.md'}"
    )
    return results


def _run(args: list[str]) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run(load_config(args))


def main(argv: Sequence[str] | None = None) -> dict:
    """Command-line entry point (``python -m m3lit.mteb``): task -> mode -> metric -> value (``{}`` after
    ``--help``: this docstring and ``configs/mteb.yaml`` as written); a user error prints one ``error:`` line
    and raises ``SystemExit``."""
    config = CONFIG_PATH.read_text(encoding="utf-8")
    results = run_command(
        _run, argv, help=lambda: f"{__doc__.strip()}\n\nOptions (key=value; configs/mteb.yaml):\n\n{config}"
    )
    return results if isinstance(results, dict) else {}
