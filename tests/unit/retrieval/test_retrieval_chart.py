"""results.png (m3lit.retrieval.report.chart): panels, bar heights, the BM25 line and labels, read off the figure."""

from __future__ import annotations

import pytest

from m3lit.retrieval.report.chart import results_figure, write_chart
from m3lit.retrieval.report.tables import as_table, row_label, split_row_label
from m3lit.retrieval.report.write import write_reports

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

#: A suite table: MIRACL-like in two languages, MLDR-like in one; a released model evaluated dense-only.
MODEL = {
    "MIRACL-like": {
        "metrics": ["ndcg@10", "recall@100"],
        "languages": ["en", "fr"],
        "rows": {
            "BM25": {"en": {"ndcg@10": 0.20, "recall@100": 0.5}, "fr": {"ndcg@10": 0.10, "recall@100": 0.4}},
            "e5 (Dense)": {
                "en": {"ndcg@10": 0.15, "recall@100": 0.6},
                "fr": {"ndcg@10": 0.12, "recall@100": 0.5},
            },
            "Dense": {"en": {"ndcg@10": 0.30, "recall@100": 0.7}, "fr": {"ndcg@10": 0.25, "recall@100": 0.6}},
            "Sparse": {
                "en": {"ndcg@10": 0.05, "recall@100": 0.2},
                "fr": {"ndcg@10": 0.04, "recall@100": 0.1},
            },
            "All": {"en": {"ndcg@10": 0.33, "recall@100": 0.8}, "fr": {"ndcg@10": 0.28, "recall@100": 0.7}},
        },
    },
    "MLDR-like": {
        "metrics": ["ndcg@10"],
        "languages": ["de"],
        "rows": {
            "BM25": {"de": {"ndcg@10": 0.35}},
            "e5 (Dense)": {"de": {"ndcg@10": 0.18}},
            "Dense": {"de": {"ndcg@10": 0.20}},
            "Dense+MCLS": {"de": {"ndcg@10": 0.22}},
        },
    },
}
#: The untrained model on the same suite (its own rows only); All lacks fr, so All has no mean.
UNTRAINED = {
    "MIRACL-like": {
        "metrics": ["ndcg@10", "recall@100"],
        "languages": ["en", "fr"],
        "rows": {
            "Dense": {"en": {"ndcg@10": 0.10}, "fr": {"ndcg@10": 0.08}},
            "All": {"en": {"ndcg@10": 0.11}},
        },
    },
    "MLDR-like": {"metrics": ["ndcg@10"], "languages": ["de"], "rows": {"Dense": {"de": {"ndcg@10": 0.07}}}},
}


def panels(fig) -> list:
    """The figure's panels (its visible axes with a title), in reading order."""
    return [ax for ax in fig.axes if ax.get_visible() and ax.get_title()]


def bars(ax) -> dict[str, dict[str, float]]:
    """``{legend label: {tick label: bar height}}``: each bar assigned to the mode tick under its centre."""
    ticks = {round(x): t.get_text() for x, t in zip(ax.get_xticks(), ax.get_xticklabels(), strict=True)}
    out: dict[str, dict[str, float]] = {}
    for container in ax.containers:
        for patch in container.patches:
            mode = ticks[round(patch.get_x() + patch.get_width() / 2)]
            out.setdefault(container.get_label(), {})[mode] = patch.get_height()
    return out


def assert_bars(ax, expected: dict[str, dict[str, float]]) -> None:
    """The panel's bars are exactly ``expected`` (same systems and modes), heights within float rounding."""
    drawn = bars(ax)
    assert {k: set(v) for k, v in drawn.items()} == {k: set(v) for k, v in expected.items()}
    for name, heights in expected.items():
        assert drawn[name] == pytest.approx(heights), name


def bm25_line(ax) -> float | None:
    lines = [line for line in ax.lines if line.get_label() == "BM25"]
    if not lines:
        return None
    (line,) = lines
    y0, y1 = line.get_ydata()
    assert y0 == y1
    return y0


def test_suite_chart_panels_bars_and_bm25_equal_the_table():
    fig = results_figure(MODEL, {"untrained": UNTRAINED}, label="trained", title="bible")
    axes = panels(fig)
    assert [ax.get_title() for ax in axes] == [
        "MIRACL-like: nDCG@10, en",
        "MIRACL-like: nDCG@10, fr",
        "MIRACL-like: nDCG@10, mean of 2 languages",
        "MLDR-like: nDCG@10, de",
    ]  # few languages: a panel each plus the mean; the primary metric only
    rows = MODEL["MIRACL-like"]["rows"]
    for ax, lang in zip(axes[:2], ("en", "fr"), strict=True):
        expected = {
            "untrained": {"Dense": 100 * UNTRAINED["MIRACL-like"]["rows"]["Dense"][lang]["ndcg@10"]},
            "e5 (reference)": {"Dense": 100 * rows["e5 (Dense)"][lang]["ndcg@10"]},
            "trained": {m: 100 * rows[m][lang]["ndcg@10"] for m in ("Dense", "Sparse", "All")},
        }
        if lang == "en":
            expected["untrained"]["All"] = 100 * UNTRAINED["MIRACL-like"]["rows"]["All"]["en"]["ndcg@10"]
        assert_bars(ax, expected)
        assert bm25_line(ax) == pytest.approx(100 * rows["BM25"][lang]["ndcg@10"])
        assert [t.get_text() for t in ax.get_xticklabels()] == ["Dense", "Sparse", "All"]
    assert_bars(
        axes[2],
        {
            "untrained": {"Dense": 9.0},  # All lacks fr: no mean, no bar
            "e5 (reference)": {"Dense": 13.5},
            "trained": {"Dense": 27.5, "Sparse": 4.5, "All": 30.5},
        },
    )
    assert bm25_line(axes[2]) == pytest.approx(15.0)
    assert_bars(
        axes[3],
        {
            "untrained": {"Dense": 7.0},
            "e5 (reference)": {"Dense": 18.0},
            "trained": {"Dense": 20.0, "Dense+MCLS": 22.0},
        },
    )
    assert [t.get_text() for t in axes[3].get_xticklabels()] == ["Dense", "Dense+MCLS"]
    assert bm25_line(axes[3]) == pytest.approx(35.0)
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == [
        "untrained", "e5 (reference)", "trained", "BM25 (lexical reference)",
    ]  # fmt: skip
    assert fig.get_suptitle() == "bible"
    values = [t.get_text() for t in axes[3].texts]
    assert values == ["7.0", "18.0", "20.0", "22.0"]  # each bar's value, x100, one decimal


def test_many_languages_give_one_mean_panel_per_task():
    langs = ["a", "b", "c", "d", "e"]
    rows = {
        "Dense": {lang: {"ndcg@10": 0.1 * i} for i, lang in enumerate(langs, 1)},
        "BM25": {lang: {"ndcg@10": 0.2} for lang in langs},
    }
    model = {f"T{k}": {"metrics": ["ndcg@10"], "languages": langs, "rows": rows} for k in (1, 2)}
    axes = panels(results_figure(model))
    assert [ax.get_title() for ax in axes] == [
        "T1: nDCG@10, mean of 5 languages",
        "T2: nDCG@10, mean of 5 languages",
    ]
    assert_bars(axes[0], {"model": {"Dense": 30.0}})
    assert bm25_line(axes[1]) == pytest.approx(20.0)


def test_single_dataset_report_shows_each_metric_beside_the_baseline(tmp_path):
    trained = {
        "dense": {"ndcg@10": 0.4, "mrr@10": 0.3},
        "colbert": {"ndcg@10": 0.5, "mrr@10": 0.45},
        "bm25": {"ndcg@10": 0.25, "mrr@10": 0.2},
    }
    untrained = {"dense": {"ndcg@10": 0.1, "mrr@10": 0.05}, "colbert": {"ndcg@10": 0.2, "mrr@10": 0.1}}
    fig = results_figure(as_table(trained), {"step 0": as_table(untrained)}, label="step 100")
    axes = panels(fig)
    assert [ax.get_title() for ax in axes] == ["nDCG@10", "MRR@10"]  # a lone panel: one per metric
    for ax, metric in zip(axes, ("ndcg@10", "mrr@10"), strict=True):
        assert_bars(
            ax,
            {
                "step 0": {
                    "Dense": 100 * untrained["dense"][metric],
                    "Multi-vec": 100 * untrained["colbert"][metric],
                },
                "step 100": {
                    "Dense": 100 * trained["dense"][metric],
                    "Multi-vec": 100 * trained["colbert"][metric],
                },
            },
        )
        assert bm25_line(ax) == pytest.approx(100 * trained["bm25"][metric])

    table = write_reports(trained, tmp_path / "a", label="step 100", baselines={"step 0": untrained})
    assert "| Dense | 40.0 | 30.0 |" in table
    png = (tmp_path / "a" / "results.png").read_bytes()
    assert png[:8] == PNG_SIGNATURE
    write_chart(tmp_path / "b.png", as_table(trained), {"step 0": as_table(untrained)}, label="step 100")
    assert (tmp_path / "b.png").read_bytes() == png  # same numbers, same bytes


def test_several_datasets_panel_each_and_their_mean():
    results = {"a": {"dense": {"ndcg@10": 0.2}, "bm25": {"ndcg@10": 0.1}}, "b": {"dense": {"ndcg@10": 0.6}}}
    axes = panels(results_figure(as_table(results)))
    assert [ax.get_title() for ax in axes] == ["nDCG@10, a", "nDCG@10, b", "nDCG@10, mean of 2 datasets"]
    assert_bars(axes[2], {"model": {"Dense": 40.0}})
    assert bm25_line(axes[0]) == pytest.approx(10.0)
    assert bm25_line(axes[1]) is None and bm25_line(axes[2]) is None  # no BM25 for b: no line, no mean


def test_row_labels_round_trip_and_label_clash_is_an_error():
    for system, mode in (("", "dense"), ("multilingual-e5-small", "dense"), ("x (y)", "all"), ("", "bm25")):
        assert split_row_label(row_label(system, mode)) == (system, mode)
    with pytest.raises(ValueError, match="'model' is also a baseline's"):
        results_figure(MODEL, {"model": UNTRAINED})
