"""Render the "Performance" table of docs/performance.md from ``bench_results/*.json`` (only measured numbers appear).

    python -m benchmarks.report                  # print the table, write bench_results/README_table.md
    python -m benchmarks.report --update-docs    # also replace the block between the perf markers in docs/performance.md

Every figure is "median (min-max)" over the runs recorded in the JSON; a ratio is taken between runs made
side by side (see :mod:`benchmarks.harness`). A row whose JSON is missing is left out, never filled in.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchmarks import harness as H

__all__ = ["load_results", "render", "write_readme_table", "main"]

BEGIN, END = "<!-- perf:begin -->", "<!-- perf:end -->"


def load_results(folder: Path | None = None) -> dict[str, dict]:
    """benchmark name -> its JSON payload, for every ``*.json`` in ``bench_results/``."""
    folder = folder or H.results_dir()
    out = {}
    for path in sorted(folder.glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        out[path.stem] = data
    return out


def _r(stats: dict | None, digits: int = 1, scale: float = 1.0, suffix: str = "") -> str:
    text = H.fmt_range(stats or {}, digits, scale)
    return text + suffix if text != "n/a" else text


def _verdict(stats: dict | None, target: float, higher: bool = True) -> str:
    if not stats or stats.get("median") is None:
        return "not measured"
    ok = stats["median"] >= target if higher else stats["median"] <= target
    return "met" if ok else "MISSED"


# ---------------------------------------------------------------------------------------- row specs
#: A cell: a constant string, or a function of the row's item (a dict of what the row reads).
Cell = str | Callable[[dict], str]


@dataclass(frozen=True)
class RowSpec:
    """One kind of table row: ``items(results)`` gives one item (a dict) per row it makes, none when its
    JSON is missing; each column is a constant or a function of the item."""

    items: Callable[[dict], list[dict]]
    label: Cell
    m3lit: Cell
    flag: Cell = ""
    ratio: Cell = ""
    target: Cell = ""
    verdict: Cell = ""

    def cells(self, item: dict) -> list[str]:
        columns = (self.label, self.m3lit, self.flag, self.ratio, self.target, self.verdict)
        return [cell if isinstance(cell, str) else cell(item) for cell in columns]


def _train(res: dict) -> tuple[dict, dict, dict]:
    """(m3lit unified + self-distill, FlagEmbedding's, every entry) of ``train.json``'s summary."""
    train = res.get("train", {}).get("summary", {})
    return train.get("m3lit unified_self_distill", {}), train.get("flag unified_self_distill", {}), train


def _train_side_by_side(res: dict) -> list[dict]:
    sd, flag, _ = _train(res)
    return [{"m3": sd, "flag": flag}] if sd and flag and flag.get("step_s", {}).get("n") else []


def _train_stages(res: dict) -> list[dict]:
    """The other m3lit stages against FlagEmbedding's unified + self-distill, when both sides ran."""
    _, flag, train = _train(res)
    stages = [{"stage": st, "m3": train.get(f"m3lit {st}", {}), "flag": flag} for st in ("unified", "dense")]
    return [s for s in stages if s["m3"].get("speedup_vs_flag")] if _train_side_by_side(res) else []


def _train_alone(res: dict) -> list[dict]:
    sd, _, _ = _train(res)
    return [{"m3": sd}] if sd and not _train_side_by_side(res) else []


def _memory_modes(res: dict) -> list[dict]:
    """One item per sub-batch mode: its peaks per batch, its growth and its target."""
    mem = res.get("memory", {})
    if not mem:
        return []
    summ, batches = mem["summary"], mem["batches"]
    return [
        {"mode": mode, "target": target, "batches": batches, "len": mem["passage_max_len"],
         "growth": summ.get(f"growth {mode} B={batches[0]}->{batches[-1]}"),
         "peaks": [summ.get(f"m3lit {mode} B={b}", {}).get("peak_mb") for b in batches]}
        for mode, target in (("gradcache", "< 15%"), ("split", ""))
    ]  # fmt: skip


def _memory_verdict(m: dict) -> str:
    g = m["growth"]
    return ("met" if g is not None and g < 0.15 else "MISSED") if m["target"] and g is not None else ""


def _memory_flag(res: dict) -> list[dict]:
    mem = res.get("memory", {})
    peaks = [(b, mem["summary"].get(f"flag B={b}", {})) for b in mem.get("flag_batches", [])]
    return [{"len": mem["passage_max_len"], "peaks": peaks}] if peaks else []


def _flag_peaks(item: dict) -> str:
    return " / ".join(
        f"B={b}: {_r(s.get('peak_mb'), 0)}" + (f" [{s['failures'][0]}]" if s.get("failures") else "")
        for b, s in item["peaks"]
    )


def _score(res: dict) -> list[dict]:
    """One item per side-by-side score measurement; re-ranking all modes and ``compute_score`` target 10x."""
    score = res.get("score", {}).get("summary", {})
    return [
        {"key": k, **v, "target": ">= 10x" if ("rerank sparse+colbert" in k or "compute_score" in k) else ""}
        for k, v in score.items()
        if k.startswith(("rerank", "compute_score", "inbatch")) and isinstance(v, dict) and "speedup" in v
    ]


def _encode(unit: str) -> Callable[[dict], list[dict]]:
    def items(res: dict) -> list[dict]:
        enc = res.get("encode", {}).get("summary", {})
        return [{**enc[unit], "n": res["encode"]["n_texts"]}] if enc else []

    return items


def _eval(res: dict) -> list[dict]:
    ev = res.get("eval", {}).get("summary", {})
    return [{**ev, "n": res["eval"]["n_passages"]}] if ev else []


def _mfu(res: dict) -> list[dict]:
    mfu = res.get("mfu", {}).get("summary", {})
    return [
        {**mfu[p], "model": res["mfu"]["model"], "precision": p}
        for p in ("32-true", "bf16-mixed")
        if p in mfu
    ]


def _gpu(res: dict) -> list[dict]:
    gpu = res.get("gpu", {})
    return [
        {**e, "label": f"GPU {gpu['env'].get('gpu', '')}, {gpu['model']} model, {name}: tokens/s"}
        for name, e in (gpu.get("summary") or {}).items()
        if isinstance(e, dict) and "tokens_per_s" in e
    ]


def _gpu_mfu(e: dict) -> str:
    return _r(e.get("mfu_vs_spec_peak"), 1, 100, " % MFU (data sheet)") if e.get("mfu_vs_spec_peak") else ""


#: Every kind of row, in table order.
ROWS: tuple[RowSpec, ...] = (
    RowSpec(_train_side_by_side, "train step, unified + self-distill (s/step)",
            m3lit=lambda t: _r(t["m3"]["step_s"], 3), flag=lambda t: _r(t["flag"]["step_s"], 1),
            ratio=lambda t: _r(t["m3"].get("speedup_vs_flag"), 1, suffix="x faster"),
            target=">= 20x", verdict=lambda t: _verdict(t["m3"].get("speedup_vs_flag"), 20)),
    RowSpec(_train_side_by_side, "train peak RSS (MB)",
            m3lit=lambda t: _r(t["m3"]["peak_rss_mb"], 0), flag=lambda t: _r(t["flag"]["peak_rss_mb"], 0),
            ratio=lambda t: _r(t["m3"].get("memory_ratio_vs_flag"), 3),
            target="<= 0.1",
            verdict=lambda t: _verdict(t["m3"].get("memory_ratio_vs_flag"), 0.1, higher=False)),
    RowSpec(_train_stages, lambda t: f"train step, {t['stage']} (s/step; vs Flag unified+SD)",
            m3lit=lambda t: _r(t["m3"]["step_s"], 3), flag=lambda t: _r(t["flag"]["step_s"], 1),
            ratio=lambda t: _r(t["m3"]["speedup_vs_flag"], 1, suffix="x")),
    RowSpec(_train_alone, "train step, unified + self-distill (s/step)",
            m3lit=lambda t: _r(t["m3"]["step_s"], 3), flag="not run", target=">= 20x",
            verdict="not measured"),
    RowSpec(_memory_modes, lambda m: f"peak RSS MB at batch {'/'.join(map(str, m['batches']))}, "
                                     f"{m['mode']} (len {m['len']})",
            m3lit=lambda m: " / ".join(_r(peak, 0) for peak in m["peaks"]),
            ratio=lambda m: f"growth {100 * m['growth']:.1f}%" if m["growth"] is not None else "n/a",
            target=lambda m: m["target"], verdict=_memory_verdict),
    RowSpec(_memory_flag, lambda f: f"FlagEmbedding peak RSS MB (len {f['len']})", m3lit="",
            flag=_flag_peaks),
    RowSpec(_score, lambda s: s["key"], m3lit=lambda s: _r(s["m3lit"], 1), flag=lambda s: _r(s["flag"], 1),
            ratio=lambda s: _r(s["speedup"], 1, suffix="x"), target=lambda s: s["target"],
            verdict=lambda s: _verdict(s["speedup"], 10) if s["target"] else ""),
    RowSpec(_encode("passages/s"), lambda e: f"encode {e['n']} passages, 3 outputs (passages/s)",
            m3lit=lambda e: _r(e["m3lit"], 0), flag=lambda e: _r(e["flag"], 0),
            ratio=lambda e: _r(e["speedup"], 2, suffix="x"), target=">= 1.2x",
            verdict=lambda e: _verdict(e["speedup"], 1.2)),
    RowSpec(_encode("tokens/s"), "encode (tokens/s)", m3lit=lambda e: _r(e["m3lit"], 0),
            flag=lambda e: _r(e["flag"], 0), ratio=lambda e: _r(e["speedup"], 2, suffix="x")),
    RowSpec(_eval, lambda e: f"evaluate_retrieval, {len(e['modes'])} modes, {e['n']} passages (s)",
            m3lit=lambda e: _r(e["total_s"], 1)),
    RowSpec(_mfu, lambda m: f"MFU, {m['model']} model, {m['precision']} "
                            f"(vs measured {m['peak_kind']} GEMM peak)",
            m3lit=lambda m: _r(m["mfu_vs_measured_peak"], 1, 100, " %"),
            ratio=lambda m: f"{_r(m['step_s'], 2)} s/step", target="report"),
    RowSpec(_gpu, lambda g: g["label"], m3lit=lambda g: _r(g["tokens_per_s"], 0), ratio=_gpu_mfu,
            target="report", verdict=lambda g: "; ".join(g.get("failures", []))[:80]),
)  # fmt: skip


def _rows(res: dict[str, dict]) -> list[list[str]]:
    """The table's rows: each spec of ``ROWS`` applied to each of its items, in order."""
    return [spec.cells(item) for spec in ROWS for item in spec.items(res)]


def _commands(res: dict[str, dict]) -> str:
    """Which command wrote which benchmark's JSON (``run_all`` = ``make bench``; ``make bench-flag`` when
    the set has FlagEmbedding figures)."""
    by_command: dict[str, list[str]] = {}
    envs = [(res.get(name) or {}).get("env", {}) for name in res]
    run_all = "make bench-flag" if any(e.get("flagembedding") for e in envs) else "make bench"
    for name in ("train", "memory", "score", "encode", "eval", "mfu", "gpu"):
        command = (res.get(name) or {}).get("env", {}).get("command")
        if command:
            command = (
                run_all
                if "run_all" in command
                else "python -m benchmarks."
                + command.split("benchmarks.")[-1].split("/")[-1].replace(".py", "")
            )
            by_command.setdefault(command, []).append(name)
    return "; ".join(f"`{c}` ({', '.join(names)})" for c, names in by_command.items()) or "n/a"


def _loads(node) -> list:
    """Every ``load`` pair recorded in a (nested) ``runs`` structure of RunResult dicts."""
    if isinstance(node, dict):
        if "load" in node and "status" in node:
            return [node["load"]]
        return [x for value in node.values() for x in _loads(value)]
    if isinstance(node, list):
        return [x for value in node for x in _loads(value)]
    return []


def render(res: dict[str, dict] | None = None) -> str:
    """The markdown block: header (machine, versions, command) + table + notes."""
    res = load_results() if res is None else res
    if not res:
        return "_No benchmark results yet: run `make bench`._"
    envs = [r["env"] for r in res.values() if isinstance(r, dict) and "env" in r]
    env = next((e for e in envs if e.get("flagembedding")), envs[0] if envs else {})
    flag = env.get("flagembedding") or {}
    loads = [x for payload in res.values() for load in _loads(payload.get("runs")) for x in load]
    load_text = f"; 1-min load average during the runs {min(loads):.1f}-{max(loads):.1f}" if loads else ""
    dates = [e["date"] for e in envs if e.get("date")]
    quick = any(r.get("quick") for r in res.values() if isinstance(r, dict))
    lines = [
        f"Measured {min(dates, default='?')} to {max(dates, default='?')} on {env.get('cpu', '?')} ({env.get('logical_cpus', '?')} cores, "
        f"{env.get('memory_gb', '?')} GB){', GPU ' + env['gpu'] if env.get('gpu') else ''}{load_text}.",
        f"m3lit {env.get('m3lit_git', '?')}: Python {env.get('python', '?')}, torch {env.get('torch', '?')}, "
        f"transformers {env.get('transformers', '?')}"
        + (f"; FlagEmbedding {flag.get('FlagEmbedding')} (transformers {flag.get('transformers')}, torch {flag.get('torch')})" if flag else "")
        + ". Commands: " + _commands(res) + (" (--quick: reduced sizes, NOT the workload)" if quick else "") + ".",
        "",
        H.format_table(["measurement (median (min-max))", "m3lit", "FlagEmbedding", "m3lit vs Flag", "target", "verdict"], _rows(res)),
    ]  # fmt: skip
    return "\n".join(lines)


def write_readme_table(update_docs: bool = False) -> Path:
    """Write ``bench_results/README_table.md``; with ``update_docs`` also patch docs/performance.md's perf block."""
    text = render()
    path = H.results_dir() / "README_table.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n", encoding="utf-8")
    if update_docs:
        page = H.REPO / "docs" / "performance.md"
        content = page.read_text(encoding="utf-8")
        if BEGIN not in content or END not in content:
            raise SystemExit(f"{page}: no {BEGIN} ... {END} block to update")
        block = f"{BEGIN}\n{text}\n{END}"
        page.write_text(
            re.sub(re.escape(BEGIN) + r".*?" + re.escape(END), lambda _: block, content, flags=re.S),
            encoding="utf-8",
        )
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--update-docs", action="store_true", help="replace docs/performance.md's perf block")
    args = parser.parse_args(argv)
    path = write_readme_table(args.update_docs)
    print(path.read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
