"""The model card (``README.md``) of an export folder: Hub metadata, the training recipe, loading snippets.

:func:`build_card` is a pure function from the run's config, the export's provenance (``m3lit.json``) and the
run's evaluation (``results.json``, :mod:`m3lit.retrieval.report.write`) to the card's text. Its YAML front
matter follows the Hub's conventions (``base_model``, ``language``, ``license``, ``library_name``,
``pipeline_tag``, ``tags`` and ``model-index``), written by ``huggingface_hub``'s own :class:`ModelCardData`
so that the Hub and :func:`huggingface_hub.metadata_load` read it back. ``model-index`` holds one result per
(task, language, mode, metric) of the evaluated model's own rows (reference models and BM25 are left out),
values as in ``results.json`` (fractions in [0, 1]).

:func:`write_card` gathers the inputs of an export: the run folder is the one of the source checkpoint
(``<run>/checkpoints/last.ckpt`` -> ``<run>/config.yaml``, ``<run>/results.json``); the base model's license
and languages come from its own card or from an ``m3lit:NAME`` source's ``m3lit_source.json``.

:func:`check_push` runs before an export with ``push_to_hub=<repo_id>`` (offline: one ``error:`` line, nothing
written or uploaded); :func:`push_folder` uploads the finished folder (``HfApi.create_repo`` +
``upload_folder``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import EvalResult, ModelCardData, metadata_load

from m3lit.files.errors import UsageError, UserError
from m3lit.model.reference import SCHEME, ModelReferenceError, hub_offline, resolve_named_model
from m3lit.retrieval.report.provenance import read_results
from m3lit.retrieval.report.tables import as_table, metric_label, split_row_label
from m3lit.training.stages import parse_schedule, stage_name, stage_spec

__all__ = [
    "CARD_FILE",
    "base_model_facts",
    "build_card",
    "check_push",
    "eval_results",
    "find_run_folder",
    "library_name",
    "push_folder",
    "write_card",
]

CARD_FILE = "README.md"
_WALL = re.compile(r"run folder: .* \(([0-9.]+) s\)")


def find_run_folder(provenance: Mapping[str, Any]) -> Path | None:
    """The training run folder of ``<run>/checkpoints/<name>.ckpt`` (it holds ``config.yaml``), or None."""
    source = provenance.get("source_checkpoint")
    if not source:
        return None
    run = Path(source).resolve().parent.parent
    return run if (run / "config.yaml").is_file() else None


def base_model_facts(name_or_path: str | None) -> dict[str, Any]:
    """``base_model`` (a Hub id), ``license`` and ``language`` of the model a run started from, where known.

    A Hub id is its own ``base_model``; an ``m3lit:NAME`` source names its original model and license in
    ``m3lit_source.json``; a local folder's ``README.md`` front matter gives license, language and its own
    ``base_model``. Nothing is downloaded.
    """
    if not name_or_path:
        return {}
    text, facts = str(name_or_path), {}
    try:
        folder = Path(resolve_named_model(text)) if text.startswith(SCHEME) else Path(text).expanduser()
    except ModelReferenceError:  # m3lit:NAME without sources/ in this copy
        return {}
    if not folder.is_dir():
        return {"base_model": text} if text.count("/") == 1 and not text.startswith((".", "/")) else {}
    source = folder / "m3lit_source.json"
    if source.is_file():
        manifest = json.loads(source.read_text(encoding="utf-8"))
        facts.update(base_model=manifest.get("model"), license=manifest.get("model_license"))
    if (folder / CARD_FILE).is_file():
        meta = metadata_load(folder / CARD_FILE) or {}
        facts.update({k: meta[k] for k in ("base_model", "license", "language") if meta.get(k)})
    return {k: (v.lower() if k == "license" else v) for k, v in facts.items() if v}


def eval_results(results: Mapping | None, settings: Mapping | None) -> list[EvalResult]:
    """One :class:`EvalResult` per task, language, mode of the evaluated model and metric of ``results``."""
    if not results:
        return []
    tables = results["tasks"] if "tasks" in results else as_table(results)
    single = Path(str((settings or {}).get("data") or "dataset")).name
    split = (settings or {}).get("split")
    out = []
    for task, table in tables.items():
        for label, per_lang in table["rows"].items():
            system, mode = split_row_label(label)
            if system or mode == "bm25":
                continue
            for lang, row in per_lang.items():
                name = " ".join(p for p in (task, lang) if p) or single
                for metric, value in row.items():
                    out.append(
                        EvalResult(
                            task_type="retrieval", dataset_type=name, dataset_name=name, dataset_split=split,
                            metric_type=metric.replace("@", "_at_"), metric_value=float(value),
                            metric_name=f"{label} {metric_label(metric)}",
                        )
                    )  # fmt: skip
    return out


def _count_lines(path: Path) -> int:
    with open(path, "rb") as handle:
        return sum(block.count(b"\n") for block in iter(lambda: handle.read(1 << 20), b""))


def _data_files(data: Mapping[str, Any]) -> list[tuple[str, str, int | None]]:
    """(source, file, line count) of ``data.train_data`` and ``data.pairs_data`` (a folder: its *.jsonl)."""
    found = []
    for key in ("pairs_data", "train_data"):
        value = data.get(key)
        for entry in [value] if isinstance(value, str | Mapping) else list(value or []):
            path = Path(str(entry.get("path") if isinstance(entry, Mapping) else entry))
            files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
            found += [(key, str(f), _count_lines(f) if f.is_file() else None) for f in files]
    return found


def _stages(config: Mapping[str, Any]) -> list[tuple[int, Any, str | None]]:
    """(from step, stage, data source) of the run: the stage_switch schedule, else the one ``model.stage``
    (a preset name or a ``{heads, self_distill}`` mapping)."""
    schedule = ((config.get("callbacks") or {}).get("stage_switch") or {}).get("schedule")
    if schedule:
        return [(e.step, e.stage, e.source) for e in parse_schedule(schedule)]
    return [(0, (config.get("model") or {}).get("stage", "unified_self_distill"), None)]


def _recipe(
    config: Mapping[str, Any] | None, provenance: Mapping[str, Any], wall_seconds: float | None
) -> str:
    """The "Training" section: stages with their heads, losses, data with line counts, steps, hardware."""
    if not config:
        return "## Training\n\nNo training run recorded (exported from a model folder).\n"
    model, trainer = config.get("model") or {}, config.get("trainer") or {}
    lines = [
        "## Training",
        "",
        "| from step | stage | heads | self-distillation | data source |",
        "|---:|---|---|---|---|",
    ]
    for step, stage, source in _stages(config):
        spec = stage_spec(stage)
        lines.append(
            f"| {step} | {stage_name(spec)} | {', '.join(spec.heads)} | {spec.self_distill} | {source or '-'} |"
        )
    loss = model.get("loss") or config.get("loss") or {}
    weights = ", ".join(f"{k}={v}" for k, v in sorted((loss.get("weights") or {}).items())) or "defaults"
    wall = "not recorded" if wall_seconds is None else f"{wall_seconds:.1f} s (training, export, evaluation)"
    lines += [
        "",
        f"- Base model: `{(model.get('net') or {}).get('name_or_path')}`",
        f"- Losses: InfoNCE per head (temperature {loss.get('temperature')}), distillation "
        f"`{loss.get('kd_loss')}`; weights: {weights}",
        f"- Optimiser: AdamW {json.dumps(model.get('optimizer') or {})}",
        f"- Learning-rate schedule: {json.dumps(model.get('scheduler') or {})}",
        f"- Steps: {provenance.get('step')} (trainer.max_steps={trainer.get('max_steps')}), "
        f"last stage `{provenance.get('stage')}`",
        f"- Hardware: {provenance.get('hardware') or trainer.get('accelerator')} x {trainer.get('devices')} "
        f"(nodes: {trainer.get('num_nodes', 1)}), precision {trainer.get('precision')}",
        f"- Wall time: {wall}",
        f"- Seed: {config.get('seed')}",
        "",
        "Data files (lines):",
        "",
    ]
    for key, name, count in _data_files(config.get("data") or {}):
        lines.append(f"- `{key}`: `{name}`: {count if count is not None else 'missing'}")
    return "\n".join(lines) + "\n"


_ENCODE = 'out = model.encode(["a passage"], return_dense=True, return_sparse=True, return_colbert_vecs=True)'
_ONNX = f"""## Usage

ONNX Runtime, all three outputs (`model.onnx`):

```python
from m3lit.inference.onnx_runtime import OnnxM3Embedder
model = OnnxM3Embedder("{{name}}")
{_ENCODE}
```
"""
_FLAG = f"""## Usage

m3lit (dense, sparse and ColBERT):

```python
from m3lit import M3Embedder
model = M3Embedder("{{name}}")
{_ENCODE}
```

FlagEmbedding:

```python
from FlagEmbedding import BGEM3FlagModel
model = BGEM3FlagModel("{{name}}"{{colbert}})
```

sentence-transformers (dense only):

```python
from sentence_transformers import SentenceTransformer
model = SentenceTransformer("{{name}}")
embeddings = model.encode(["a passage"])
```
"""


_ADAPTER = """## Usage

A LoRA adapter (peft) on `{base}`, with the sparse and ColBERT heads beside it (`sparse_linear.pt`,
`colbert_linear.pt`). The dense output is the adapted encoder's CLS vector, L2-normalised:

```python
import torch
from peft import PeftModel
from transformers import AutoModel, AutoTokenizer
encoder = PeftModel.from_pretrained(AutoModel.from_pretrained("{base}", add_pooling_layer=False), "{name}")
tokenizer = AutoTokenizer.from_pretrained("{base}")
batch = tokenizer(["a passage"], return_tensors="pt")
dense = torch.nn.functional.normalize(encoder(**batch).last_hidden_state[:, 0], dim=-1)
```

`python -m m3lit.export model=<the run's checkpoint> output_dir=DIR` writes the merged model instead, which
FlagEmbedding, sentence-transformers and m3lit load directly.
"""


def library_name(provenance: Mapping[str, Any]) -> str:
    """The Hub's ``library_name`` of an export: ``peft`` (adapter only), ``onnx`` or ``sentence-transformers``."""
    if provenance.get("adapter_only"):
        return "peft"
    return "onnx" if provenance.get("format") == "onnx" else "sentence-transformers"


def _usage(provenance: Mapping[str, Any], name: str, base_model: str | None) -> str:
    """Loading snippets: peft (adapter only), ONNX Runtime, or m3lit, FlagEmbedding and sentence-transformers."""
    if provenance.get("adapter_only"):
        return _ADAPTER.format(name=name, base=provenance.get("adapter_base") or base_model or "<base model>")
    if provenance.get("format") == "onnx":
        return _ONNX.format(name=name)
    dim = provenance.get("colbert_dim")
    colbert = "" if dim in (None, provenance.get("hidden_size")) else f", colbert_dim={dim}"
    return _FLAG.format(name=name, colbert=colbert)


def build_card(
    config: Mapping[str, Any] | None,
    provenance: Mapping[str, Any],
    results: Mapping | None = None,
    settings: Mapping | None = None,
    *,
    base: Mapping[str, Any] | None = None,
    name: str = "m3lit-model",
    location: str | None = None,
    wall_seconds: float | None = None,
    tables: str | None = None,
) -> str:
    """The card's text: YAML front matter, a summary, the training recipe, evaluation and usage.

    Args:
        config: the run's resolved config (``config.yaml`` as a dict), or None for a re-export.
        provenance: the export's ``m3lit.json`` record.
        results, settings: ``results.json``'s two parts
            (:func:`~m3lit.retrieval.report.provenance.read_results`).
        base: :func:`base_model_facts` of the run's base model.
        name: the model's name in ``model-index`` and the title.
        location: what the loading snippets load (a Hub repo id or the folder); default ``name``.
        wall_seconds: the run's wall time.
        tables: the run's ``results.md`` (the evaluation tables), shown under "Evaluation".
    """
    base = dict(base or {})
    evals = eval_results(results, settings)
    data = ModelCardData(
        base_model=base.get("base_model"),
        language=base.get("language"),
        license=base.get("license"),
        library_name=library_name(provenance),
        pipeline_tag="sentence-similarity",
        tags=["m3lit", "bge-m3", "dense", "sparse", "colbert", "retrieval"],
        model_name=name,
        eval_results=evals or None,
    )
    evaluated = ""
    if evals:
        evaluated = (
            f"\n## Evaluation\n\nThe run's `results.json` ({len(evals)} values in `model-index`, in [0, 1]); "
            "its tables:\n\n" + (tables or "")
        )
    body = (
        f"# {name}\n\nA BGE-M3-style embedder (dense, sparse and ColBERT outputs; arXiv:2402.03216) trained "
        f"and exported with m3lit {provenance.get('m3lit_version', '')}.\n\n"
        + _recipe(config, provenance, wall_seconds)
        + evaluated
        + "\n"
        + _usage(provenance, location or name, base.get("base_model"))
    )
    return f"---\n{data.to_yaml()}\n---\n\n{body}"


def write_card(
    folder: str | Path,
    provenance: Mapping[str, Any],
    *,
    repo_id: str | None = None,
    run: str | Path | None = None,
    wall_seconds: float | None = None,
) -> Path:
    """Write ``folder/README.md`` from the export's provenance and its run folder (config, results, log).

    Args:
        folder: the export folder.
        provenance: its ``m3lit.json`` record.
        repo_id: the Hub repo it is pushed to (the snippets load it; else they load ``folder``).
        run: the training run folder (default: :func:`find_run_folder` of the provenance).
        wall_seconds: the run's wall time (default: the last ``run folder: ... (N s)`` line of its train.log).
    """
    folder = Path(folder)
    run = Path(run) if run is not None else find_run_folder(provenance)
    config = results = settings = tables = None
    if run is not None:
        if (run / "config.yaml").is_file():
            config = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
        if (run / "results.json").is_file():
            results, settings = read_results(run / "results.json")
        if (run / "results.md").is_file():
            tables = (run / "results.md").read_text(encoding="utf-8")
        log = run / "train.log"
        found = _WALL.findall(log.read_text(encoding="utf-8", errors="replace")) if log.is_file() else []
        wall_seconds = wall_seconds if wall_seconds is not None or not found else float(found[-1])
    net = ((config or {}).get("model") or {}).get("net") or {}
    text = build_card(
        config,
        provenance,
        results,
        settings,
        base=base_model_facts(net.get("name_or_path")),
        name=repo_id or str((config or {}).get("task_name") or folder.resolve().name),
        location=repo_id or str(folder),
        wall_seconds=wall_seconds,
        tables=tables,
    )
    path = folder / CARD_FILE
    path.write_text(text, encoding="utf-8")
    return path


def check_push(repo_id: str) -> None:
    """Stop before anything is exported or uploaded when ``repo_id`` is malformed or the Hub is unreachable.

    Raises:
        UserError: one line naming ``push_to_hub`` and the reason (``HF_HUB_OFFLINE``, no network).
    """
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise UsageError(f"push_to_hub={repo_id}: not a Hub repo id ({error})") from None
    reason = hub_offline()
    if reason is not None:
        raise UserError(
            f"push_to_hub={repo_id}: the Hugging Face Hub is offline ({reason}); nothing was uploaded"
        )


def push_folder(folder: str | Path, repo_id: str) -> str:
    """Create ``repo_id`` (a model repo; kept if it exists), upload ``folder`` to it; return the commit URL."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi()
    try:
        api.create_repo(repo_id, repo_type="model", exist_ok=True)
        commit = api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message="m3lit export")
    except (HfHubHTTPError, OSError) as error:
        raise UserError(f"push_to_hub={repo_id}: upload failed: {error}") from None
    return str(getattr(commit, "commit_url", commit))
