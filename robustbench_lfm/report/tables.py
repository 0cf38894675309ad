"""The numbers of a report: per-cell standard errors, seed aggregates, paired tests, and the
tables that show them.

Each table is built once as a formatted DataFrame (`formatted_table`, `tests_frame`: plain-text
cells, a bold mask, a legend) and rendered by pandas: Markdown (`DataFrame.to_markdown`), LaTeX
(booktabs, every special character escaped) and HTML (`Styler`), so a model named `a_b&c%` or a
condition `lfm:area=0.1..0.2` prints the same everywhere.

A *condition* is a column group: `clean`, or an attack with its non-default options at an eps
(`pgd:steps=1 8/255`), with ` +rerank` for re-ranked scores; a *row* is a model. Both are the
labels of robustbench_lfm.identity, one per distinct identity. Every table cell is a model under a
condition for one headline metric (Rank-1 and mAP for re-ID, accuracy for classification), in %.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from robustbench_lfm import metric_table
from robustbench_lfm.identity import labelled, ordered_conditions, subset_note
from robustbench_lfm.stats import (
    POWER,
    Z95,
    binomial_se,
    bootstrap_se,
    detectable_difference,
    holm,
    paired_test,
    seed_t_test,
    wilson_interval,
)

BASELINE = "plain"


def headline_metrics(df: pd.DataFrame) -> list[str]:
    """The headline metrics of the tasks in `df`, in display order."""
    return metric_table.headline_names(list(dict.fromkeys(df["task"])))


def with_conditions(df: pd.DataFrame) -> pd.DataFrame:
    """`df` with its `row`, `condition` and `series` labels (robustbench_lfm.identity)."""
    return labelled(df)


def cell_errors(df: pd.DataFrame, queries: pd.DataFrame | None) -> pd.DataFrame:
    """One row per (cell, rerank, headline metric): its value, standard error and 95% interval.

    A proportion (Rank-k, accuracy): binomial SE and Wilson interval (stats.wilson_interval) over
    the n_eval queries or test images. A mean of per-query scores (mAP): bootstrap SE over the
    cell's queries (needs queries.csv; NaN without it) and the normal interval value ± 1.96 SE.
    """
    rows = df[df["metric"].isin(headline_metrics(df))].copy()
    grouped = {} if queries is None else dict(list(queries.groupby(["cell_id", "rerank"])))
    errors = []
    for _, r in rows.iterrows():
        metric = metric_table.get_metric(r["metric"])
        outcomes = grouped.get((r["cell_id"], r["rerank"]))
        if metric.proportion:
            errors.append(binomial_se(float(r["value"]), int(r["n_eval"])))
        elif outcomes is None or not metric.query_column:
            errors.append(np.nan)
        else:
            errors.append(bootstrap_se(outcomes[metric.query_column].to_numpy(dtype=float)))
    intervals = [
        wilson_interval(float(r["value"]), int(r["n_eval"]))
        if metric_table.get_metric(r["metric"]).proportion
        else (max(0.0, float(r["value"]) - Z95 * se), min(1.0, float(r["value"]) + Z95 * se))
        for (_, r), se in zip(rows.iterrows(), errors, strict=True)
    ]
    return rows.assign(se=errors, ci_low=[lo for lo, _ in intervals], ci_high=[hi for _, hi in intervals])


@dataclass(frozen=True)
class TableCell:
    """A model under a condition for one metric, aggregated over seeds (fractions)."""

    mean: float
    spread: float  # std over seeds, or the cell's SE when there is one seed (`n_seeds` says which)
    delta: float  # mean minus plain's mean (NaN when there is no plain)
    n_seeds: int


def aggregate(cells: pd.DataFrame) -> dict[tuple[str, str, str], TableCell]:
    """(row, condition, metric) -> mean +- std over seeds (or +- SE for one seed), change vs plain."""
    out: dict[tuple[str, str, str], TableCell] = {}
    groups = cells.groupby(["row", "condition", "metric"], sort=False)
    means = groups["value"].mean()
    for group_key, g in groups:
        key = (str(group_key[0]), str(group_key[1]), str(group_key[2]))
        values = g["value"].astype(float)
        spread = values.std(ddof=1) if len(values) > 1 else float(g["se"].iloc[0])
        base = means.get((BASELINE, key[1], key[2]), np.nan)
        out[key] = TableCell(float(values.mean()), float(spread), float(values.mean() - base), len(values))
    return out


TEST_COLUMNS = ["condition", "metric", "a", "b", "diff", "p_value", "n", "seeds", "test", "detectable"]


def pair_tests(df: pd.DataFrame, queries: pd.DataFrame | None, pairs: list[tuple[str, str]]) -> pd.DataFrame:
    """Paired tests of model A against B per condition and headline metric (stats.py).

    With two or more common seeds the test is over seeds (a paired t-test of the per-seed mean
    differences; n = seeds); with one seed it compares two checkpoints over queries (McNemar or
    sign-flip; n = queries). Columns: TEST_COLUMNS (diff = A - B, a fraction).
    """
    if queries is None or df.empty:
        return pd.DataFrame(columns=TEST_COLUMNS)
    keyed = df.drop_duplicates(["cell_id", "rerank"])[["cell_id", "rerank", "row", "condition", "train_seed"]]
    outcomes = queries.merge(keyed, on=["cell_id", "rerank"])
    rows = []
    for a, b in pairs:
        for condition in ordered_conditions(df):
            sa = outcomes[(outcomes["row"] == a) & (outcomes["condition"] == condition)]
            sb = outcomes[(outcomes["row"] == b) & (outcomes["condition"] == condition)]
            both = sa.merge(sb, on=["train_seed", "query"], suffixes=("_a", "_b"))
            if both.empty:
                continue
            for metric in headline_metrics(df):
                if metric_table.get_metric(metric).query_column:  # a paired test needs per-query outcomes
                    rows.append([condition, metric, a, b, *_pair_test(both, metric)])
    return pd.DataFrame(rows, columns=TEST_COLUMNS)


def _pair_test(both: pd.DataFrame, metric: str) -> list:
    """[diff, p_value, n, seeds, test, detectable] of the paired outcomes `both` (columns *_a,
    *_b); `detectable`: the smallest mean difference the seed-level test detects with 80% power
    at the observed spread of the per-seed differences (NaN with one seed: no seed spread)."""
    entry = metric_table.get_metric(metric)
    column, binary = entry.query_column, entry.proportion
    seeds = both["train_seed"].nunique()
    if seeds >= 2:
        means = both.groupby("train_seed")[[f"{column}_a", f"{column}_b"]].mean()
        t = seed_t_test(means[f"{column}_a"].to_numpy(), means[f"{column}_b"].to_numpy())
        spread = float((means[f"{column}_a"] - means[f"{column}_b"]).std(ddof=1))
        return [t.diff, t.p_value, t.n, seeds, t.test, detectable_difference(spread, seeds)]
    t = paired_test(both[f"{column}_a"].to_numpy(float), both[f"{column}_b"].to_numpy(float), binary)
    return [t.diff, t.p_value, t.n, seeds, f"{t.test} over queries (one seed: two checkpoints)", math.nan]


def _columns(cells: pd.DataFrame) -> list[tuple[str, str]]:
    return [(c, m) for c in ordered_conditions(cells) for m in headline_metrics(cells)]


ALPHA = 0.05  # the level at which a column's best is marked (after Holm's correction)


@dataclass(frozen=True)
class Leader:
    """A column's best model against its runner-up, tested over their common seeds."""

    model: str
    runner_up: str
    p_value: float  # paired t-test over seeds; NaN when untestable (one seed, no spread)
    seeds: int


def leader(per_seed: pd.Series, means: dict[str, float], sign: int) -> Leader | None:
    """The best and runner-up of `means` (one column; `sign` +1 when higher is better) and the
    paired t-test over their common seeds of `per_seed` ((row, train_seed) -> value); None when
    fewer than two models have the column, or the two tie."""
    scores = {m: sign * v for m, v in means.items() if np.isfinite(v)}
    ranked = sorted(scores, key=lambda m: -scores[m])
    if len(ranked) < 2 or round(scores[ranked[0]], 6) == round(scores[ranked[1]], 6):
        return None
    best, second = ranked[:2]
    rows = set(per_seed.index.get_level_values(0))
    if best not in rows or second not in rows:
        return Leader(best, second, math.nan, 0)
    a, b = per_seed.loc[best], per_seed.loc[second]
    common = sorted(set(a.index) & set(b.index))
    if len(common) < 2:
        return Leader(best, second, math.nan, len(common))
    test = seed_t_test(a.loc[common].to_numpy(float), b.loc[common].to_numpy(float))
    return Leader(best, second, test.p_value, len(common))


def _adjusted(leaders: dict) -> dict:
    """Holm-adjusted p of each column that has a leader (NaN where untestable)."""
    columns = [col for col, lead in leaders.items() if lead is not None]
    return dict(zip(columns, holm([leaders[c].p_value for c in columns]), strict=True))


def marked(leaders: dict) -> dict:
    """Per column, the model marked best: its leader when ahead of the runner-up at p < ALPHA after
    Holm's correction over the columns tested; else none."""
    adjusted = _adjusted(leaders)
    return {col: ({leaders[col].model} if col in adjusted and adjusted[col] < ALPHA else set()) for col in leaders}


def tested_count(leaders: dict) -> int:
    """How many columns have a leader testable over two or more seeds (Holm's m)."""
    return sum(lead is not None and not math.isnan(lead.p_value) for lead in leaders.values())


def column_leaders(cells: pd.DataFrame, agg: dict, models: list[str], cols: list[tuple[str, str]]) -> dict:
    """`leader` of each (condition, metric) column of the main table."""
    out = {}
    for col in cols:
        rows = cells[(cells["condition"] == col[0]) & (cells["metric"] == col[1])]
        per_seed = rows.groupby(["row", "train_seed"])["value"].mean().astype(float)
        means = {m: agg[(m, col[0], col[1])].mean for m in models if (m, col[0], col[1]) in agg}
        out[col] = leader(per_seed, means, metric_table.get_metric(col[1]).sign)
    return out


def marks_legend(leaders: dict) -> str:
    """What bold means in a table whose marks `marked` set, with each marked lead's p (raw, then
    Holm-adjusted)."""
    tested = tested_count(leaders)
    if not tested:
        return "no best is marked: with one training seed the rows compare trained checkpoints, not methods"
    adjusted = _adjusted(leaders)
    leads = [
        f"{_column_name(col)}: {leaders[col].model} over {leaders[col].runner_up} p={leaders[col].p_value:.2g} "
        f"(Holm {adjusted[col]:.2g})"
        for col in adjusted
        if adjusted[col] < ALPHA
    ]
    rule = (f"bold: a column's best, ahead of its runner-up at p < {ALPHA} by a paired t-test over the training "
            f"seeds, Holm-corrected over the table's {tested} such test(s)")  # fmt: skip
    return rule + ("; " + "; ".join(leads) if leads else "; no column has such a lead: no bold")


def _column_name(col: object) -> str:
    """A column key as a legend names it: `clean Rank-1`, or a corruption's name."""
    return f"{col[0]} {metric_table.label(col[1])}" if isinstance(col, tuple) else str(col)


def _models(cells: pd.DataFrame) -> list[str]:
    """Row order: plain first, then as they appear."""
    models = list(dict.fromkeys(cells["row"]))
    return sorted(models, key=lambda m: m != BASELINE)


def _mixed(agg: dict) -> bool:
    """Whether the table holds cells from one seed and cells from several (marked apart)."""
    return len({c.n_seeds > 1 for c in agg.values()}) > 1


def _fmt(cell: TableCell | None, mark: bool) -> str:
    """One cell as plain text: `85.3 ± 1.2 (+2.1)`, `†` for a one-seed cell in a mixed table."""
    if cell is None:
        return "-"
    text = f"{100 * cell.mean:.1f} ± {100 * cell.spread:.1f}" if np.isfinite(cell.spread) else f"{100 * cell.mean:.1f}"
    if mark and cell.n_seeds == 1 and np.isfinite(cell.spread):
        text += "†"
    if np.isfinite(cell.delta) and abs(cell.delta) >= 0.0005:  # shown to 0.1 points
        text += f" ({100 * cell.delta:+.1f})"
    return text


SE_TEXT = (
    "standard error of one trained model: binomial over the scored queries or test images for Rank-k and "
    "accuracy, bootstrap over the queries for mAP"
)


def legend(agg: dict, leaders: dict) -> str:
    """Says which quantity every ± is (std over seeds, or one checkpoint's standard error) and
    what bold means (`marked`)."""
    seeds = sorted({c.n_seeds for c in agg.values()})
    several = [n for n in seeds if n > 1]
    std = f"sample std over {'/'.join(map(str, several))} training seeds" if several else ""
    if not several:
        spread = f"mean ± {SE_TEXT}"
    elif 1 in seeds:
        spread = f"mean ± {std}; † one seed: ± is the {SE_TEXT}"
    else:
        spread = f"mean ± {std}"
    marks = marks_legend(leaders)
    return f"{spread}; in parentheses the change against `{BASELINE}` in points; {marks}"


@dataclass(frozen=True)
class FormattedTable:
    """A table ready to render: plain-text cells, which of them are bold, and the legend.

    Attributes:
        text: rows = models, columns = (condition, metric label) pairs; cells as `_fmt` writes them.
        bold: the same shape; True where a cell is its column's best.
        legend: what every ± and parenthesis means.
    """

    text: pd.DataFrame
    bold: pd.DataFrame
    legend: str


def formatted_table(cells: pd.DataFrame) -> FormattedTable:
    """Models as rows, condition x headline metric as columns, in % (the one table every format renders)."""
    agg, cols = aggregate(cells), _columns(cells)
    models, mark = _models(cells), _mixed(agg)
    leaders = column_leaders(cells, agg, models, cols)
    best = marked(leaders)
    columns = pd.MultiIndex.from_tuples([(c, metric_table.label(m)) for c, m in cols], names=["condition", "metric"])
    index = pd.Index(models, name="model")
    text = pd.DataFrame([[_fmt(agg.get((m, *col)), mark) for col in cols] for m in models], index, columns)
    bold = pd.DataFrame([[m in best[col] for col in cols] for m in models], index, columns)
    return FormattedTable(text, bold, legend(agg, leaders) + subset_note(cells))


def _md_escape(text: object) -> str:
    """`text` safe in a Markdown table cell: pipes and backslashes escaped, emphasis characters too."""
    out = str(text).replace("\\", "\\\\")
    for ch in "|*_`":
        out = out.replace(ch, "\\" + ch)
    return out


def _markdown(text: pd.DataFrame, bold: pd.DataFrame | None = None) -> str:
    """A text DataFrame as a GitHub Markdown table (pandas `to_markdown`), every name escaped."""
    cells = text.map(_md_escape)
    if bold is not None:
        cells = cells.where(~bold, "**" + cells + "**")
    headers = [" ".join(map(str, c)) if isinstance(c, tuple) else str(c) for c in text.columns]
    frame = cells.set_axis([_md_escape(h) for h in headers], axis=1)
    if text.index.name:
        name = str(text.index.name)
        frame = frame.reset_index(names=name).assign(**{name: text.index.map(_md_escape)})
    return str(frame.to_markdown(index=False, disable_numparse=True, stralign="left"))


def markdown_table(cells: pd.DataFrame) -> str:
    """Models as rows, condition x metric as columns, in %."""
    return render_markdown(formatted_table(cells))


TEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
               "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "±": r"$\pm$",
               "†": r"$^\dagger$", "`": ""}  # fmt: skip


def _tex(text: str) -> str:
    """`text` with every LaTeX special character escaped (captions; cells go through pandas' escaping)."""
    return "".join(TEX_ESCAPES.get(ch, ch) for ch in text)


def _tex_symbols(text: object) -> str:
    """A cell pandas has escaped, with the two non-ASCII symbols of `_fmt` in math mode."""
    return str(text).replace(" ± ", r"\,$\pm$\,").replace("†", r"$^\dagger$")


def latex_table(cells: pd.DataFrame, caption: str) -> str:
    """The same table as booktabs LaTeX (needs \\usepackage{booktabs}), rendered by pandas' Styler."""
    return render_latex(formatted_table(cells), caption)


def render_latex(table: FormattedTable, caption: str) -> str:
    """A formatted table as booktabs LaTeX, its legend in the caption."""
    styler = (
        table.text.style.format(_tex_symbols, escape="latex")
        .format_index(escape="latex", axis=0)
        .format_index(escape="latex", axis=1)
        .apply(lambda _: table.bold.replace({True: "textbf:--rwrap;", False: ""}), axis=None)
        .hide(axis="index", names=True)
        .hide(axis="columns", names=True)
    )
    return styler.to_latex(
        hrules=True,
        multicol_align="c",
        position="t",
        column_format="l" + "r" * table.text.shape[1],
        caption=f"{_tex(caption)} ({_tex(table.legend)}).",
        position_float="centering",
    )


def html_table(cells: pd.DataFrame) -> str:
    """The same table as HTML (pandas' Styler), names escaped, best cells bold, legend below."""
    return render_html(formatted_table(cells))


def render_html(table: FormattedTable) -> str:
    """A formatted table as HTML, its legend below."""
    styler = (
        table.text.style.format(escape="html")
        .format_index(escape="html", axis=0)
        .format_index(escape="html", axis=1)
        .apply(lambda _: table.bold.replace({True: "font-weight: bold", False: ""}), axis=None)
        .hide(axis="columns", names=True)
    )
    return styler.to_html() + f"<p>{html.escape(table.legend)}.</p>"


def render_markdown(table: FormattedTable) -> str:
    """A formatted table as Markdown, its legend below."""
    return _markdown(table.text, table.bold) + f"\n\n{table.legend}.\n"


TESTS_NOTE = (
    "Two-sided p. With two or more seeds the test is a paired t-test over training seeds (n = seeds): "
    "it asks whether the methods differ beyond seed-to-seed spread. With one seed it compares two trained "
    "checkpoints over the same queries (n = queries: McNemar for Rank-1 and accuracy, sign-flip for AP) "
    "and says nothing about training variation. `detectable`: the smallest true difference the seed-level "
    "test would detect with 80% power at alpha 0.05, given its seed count and the observed spread of the "
    "per-seed differences (noncentral t); a smaller difference is not evidence of no effect. With one seed "
    "there is no seed spread and no method difference is detectable: run more seeds (`lfm-bench plan`)."
)
NO_TESTS = "(no paired tests: the run has no second model to compare, or no queries.csv)"


def tests_frame(tests: pd.DataFrame) -> pd.DataFrame:
    """The paired tests as a text DataFrame (one per test; what every format renders)."""
    return pd.DataFrame(
        {
            "condition": tests["condition"],
            "metric": tests["metric"].map(metric_table.label),
            "A": tests["a"],
            "B": tests["b"],
            "A - B (points)": (100 * tests["diff"].astype(float)).map("{:+.1f}".format),
            "p": tests["p_value"].astype(float).map(lambda p: "not tested" if math.isnan(p) else f"{p:.3g}"),
            "n": tests["n"].astype(str),
            "seeds": tests["seeds"].astype(str),
            "test": tests["test"],
            f"detectable at {POWER:.0%} power (points)": (100 * tests["detectable"].astype(float)).map(
                lambda d: "-" if math.isnan(d) else f"{d:.1f}"
            ),
        }
    ).astype(str)


def markdown_tests(tests: pd.DataFrame) -> str:
    """The paired tests as a Markdown table."""
    if tests.empty:
        return NO_TESTS + "\n"
    return _markdown(tests_frame(tests)) + f"\n\n{TESTS_NOTE}\n"


def html_tests(tests: pd.DataFrame) -> str:
    """The paired tests as HTML (pandas' Styler)."""
    if tests.empty:
        return f"<p>{html.escape(NO_TESTS)}</p>"
    styler = tests_frame(tests).style.format(escape="html").hide(axis="index")
    return styler.to_html() + f"<p>{html.escape(TESTS_NOTE)}</p>"
