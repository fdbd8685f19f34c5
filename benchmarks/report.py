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


def _rows(res: dict[str, dict]) -> list[list[str]]:
    rows: list[list[str]] = []
    train = res.get("train", {}).get("summary", {})
    sd, flag = train.get("m3lit unified_self_distill", {}), train.get("flag unified_self_distill", {})
    if sd and flag and flag.get("step_s", {}).get("n"):
        rows.append(
            [
                "train step, unified + self-distill (s/step)",
                _r(sd["step_s"], 3),
                _r(flag["step_s"], 1),
                _r(sd.get("speedup_vs_flag"), 1, suffix="x faster"),
                ">= 20x",
                _verdict(sd.get("speedup_vs_flag"), 20),
            ]
        )
        rows.append(
            [
                "train peak RSS (MB)",
                _r(sd["peak_rss_mb"], 0),
                _r(flag["peak_rss_mb"], 0),
                _r(sd.get("memory_ratio_vs_flag"), 3),
                "<= 0.1",
                _verdict(sd.get("memory_ratio_vs_flag"), 0.1, higher=False),
            ]
        )
        for stage in ("unified", "dense"):
            s = train.get(f"m3lit {stage}", {})
            if s.get("speedup_vs_flag"):
                rows.append(
                    [
                        f"train step, {stage} (s/step; vs Flag unified+SD)",
                        _r(s["step_s"], 3),
                        _r(flag["step_s"], 1),
                        _r(s["speedup_vs_flag"], 1, suffix="x"),
                        "",
                        "",
                    ]
                )
    elif sd:
        rows.append(
            [
                "train step, unified + self-distill (s/step)",
                _r(sd["step_s"], 3),
                "not run",
                "",
                ">= 20x",
                "not measured",
            ]
        )
    mem = res.get("memory", {})
    if mem:
        summ, batches = mem["summary"], mem["batches"]
        for mode, target in (("gradcache", "< 15%"), ("split", "")):
            g = summ.get(f"growth {mode} B={batches[0]}->{batches[-1]}")
            peaks = " / ".join(_r(summ.get(f"m3lit {mode} B={b}", {}).get("peak_mb"), 0) for b in batches)
            verdict = ("met" if g is not None and g < 0.15 else "MISSED") if target and g is not None else ""
            rows.append(
                [
                    f"peak RSS MB at batch {'/'.join(map(str, batches))}, {mode} (len {mem['passage_max_len']})",
                    peaks,
                    "",
                    f"growth {100 * g:.1f}%" if g is not None else "n/a",
                    target,
                    verdict,
                ]
            )
        flag_peaks = [(b, summ.get(f"flag B={b}", {})) for b in mem.get("flag_batches", [])]
        if flag_peaks:
            text = " / ".join(
                f"B={b}: {_r(s.get('peak_mb'), 0)}" + (f" [{s['failures'][0]}]" if s.get("failures") else "")
                for b, s in flag_peaks
            )
            rows.append([f"FlagEmbedding peak RSS MB (len {mem['passage_max_len']})", "", text, "", "", ""])
    score = res.get("score", {}).get("summary", {})
    for key, target in (
        (k, ">= 10x" if ("rerank sparse+colbert" in k or "compute_score" in k) else "")
        for k in score
        if k.startswith(("rerank", "compute_score", "inbatch"))
        and isinstance(score[k], dict)
        and "speedup" in score[k]
    ):
        s = score[key]
        rows.append(
            [
                key,
                _r(s["m3lit"], 1),
                _r(s["flag"], 1),
                _r(s["speedup"], 1, suffix="x"),
                target,
                _verdict(s["speedup"], 10) if target else "",
            ]
        )
    enc = res.get("encode", {}).get("summary", {})
    if enc:
        s = enc["passages/s"]
        rows.append(
            [
                f"encode {res['encode']['n_texts']} passages, 3 outputs (passages/s)",
                _r(s["m3lit"], 0),
                _r(s["flag"], 0),
                _r(s["speedup"], 2, suffix="x"),
                ">= 1.2x",
                _verdict(s["speedup"], 1.2),
            ]
        )
        t = enc["tokens/s"]
        rows.append(
            [
                "encode (tokens/s)",
                _r(t["m3lit"], 0),
                _r(t["flag"], 0),
                _r(t["speedup"], 2, suffix="x"),
                "",
                "",
            ]
        )
    ev = res.get("eval", {}).get("summary", {})
    if ev:
        rows.append(
            [
                f"evaluate_retrieval, {len(ev['modes'])} modes, {res['eval']['n_passages']} passages (s)",
                _r(ev["total_s"], 1),
                "",
                "",
                "",
                "",
            ]
        )
    mfu = res.get("mfu", {}).get("summary", {})
    for prec in ("32-true", "bf16-mixed"):
        if prec in mfu:
            m = mfu[prec]
            rows.append(
                [
                    f"MFU, {res['mfu']['model']} model, {prec} (vs measured {m['peak_kind']} GEMM peak)",
                    _r(m["mfu_vs_measured_peak"], 1, 100, " %"),
                    "",
                    f"{_r(m['step_s'], 2)} s/step",
                    "report",
                    "",
                ]
            )
    gpu = res.get("gpu", {})
    for name, e in (gpu.get("summary") or {}).items():
        if isinstance(e, dict) and "tokens_per_s" in e:
            mfu_text = (
                _r(e.get("mfu_vs_spec_peak"), 1, 100, " % MFU (data sheet)")
                if e.get("mfu_vs_spec_peak")
                else ""
            )
            rows.append([f"GPU {res['gpu']['env'].get('gpu', '')}, {gpu['model']} model, {name}: tokens/s",
                         _r(e["tokens_per_s"], 0), "", mfu_text, "report", "; ".join(e.get("failures", []))[:80]])  # fmt: skip
    return rows


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
