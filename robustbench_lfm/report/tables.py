"""The numbers of a report: per-cell standard errors, seed aggregates, paired tests, and the
Markdown / LaTeX (booktabs) tables that show them.

A *condition* is a column group: `clean`, or an attack with its non-default options at an eps
(`pgd:steps=1 8/255`), with ` +rerank` for re-ranked scores; a *row* is a model. Both are the
labels of robustbench_lfm.identity, one per distinct identity. Every table cell is a model under a
condition for one headline metric (Rank-1 and mAP for re-ID, accuracy for classification), in %.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from robustbench_lfm.identity import labelled
from robustbench_lfm.stats import binomial_se, bootstrap_se, paired_test, seed_t_test
from robustbench_lfm.summary import HEADLINE, LABELS

BASELINE = "plain"


def headline_metrics(df: pd.DataFrame) -> list[str]:
    """The headline metrics of the tasks in `df`, in display order."""
    return [m for task in dict.fromkeys(df["task"]) for m in HEADLINE.get(task, ())]


def with_conditions(df: pd.DataFrame) -> pd.DataFrame:
    """`df` with its `row`, `condition` and `series` labels (robustbench_lfm.identity)."""
    return labelled(df)


def ordered_conditions(df: pd.DataFrame) -> list[str]:
    """Clean first, then by eps and name."""
    eps = df.groupby("condition")["eps"].first()
    return sorted(eps.index, key=lambda c: (c != "clean", float(eps[c]), c))


def cell_errors(df: pd.DataFrame, queries: pd.DataFrame | None) -> pd.DataFrame:
    """One row per (cell, rerank, headline metric): its value and standard error.

    Rank-1 and mAP: bootstrap over the cell's queries (needs queries.csv; NaN without it).
    Accuracy: binomial over the test images.
    """
    rows = df[df["metric"].isin(headline_metrics(df))].copy()
    grouped = {} if queries is None else dict(list(queries.groupby(["cell_id", "rerank"])))
    errors = []
    for _, r in rows.iterrows():
        if r["metric"] == "accuracy":
            errors.append(binomial_se(float(r["value"]), int(r["n_eval"])))
            continue
        outcomes = grouped.get((r["cell_id"], r["rerank"]))
        column = "hit" if r["metric"] == "rank1" else "ap"
        errors.append(np.nan if outcomes is None else bootstrap_se(outcomes[column].to_numpy(dtype=float)))
    return rows.assign(se=errors)


@dataclass(frozen=True)
class TableCell:
    """A model under a condition for one metric, aggregated over seeds (fractions)."""

    mean: float
    spread: float  # std over seeds, or the cell's SE when there is one seed (`n_seeds` says which)
    delta: float  # mean minus plain's mean (NaN when there is no plain)
    n_seeds: int


def aggregate(cells: pd.DataFrame) -> dict[tuple[str, str, str], TableCell]:
    """(row, condition, metric) -> mean +- std over seeds (or +- SE for one seed), change vs plain."""
    out = {}
    groups = cells.groupby(["row", "condition", "metric"], sort=False)
    means = groups["value"].mean()
    for key, g in groups:
        values = g["value"].astype(float)
        spread = values.std(ddof=1) if len(values) > 1 else float(g["se"].iloc[0])
        base = means.get((BASELINE, key[1], key[2]), np.nan)
        out[key] = TableCell(float(values.mean()), float(spread), float(values.mean() - base), len(values))
    return out


TEST_COLUMNS = ["condition", "metric", "a", "b", "diff", "p_value", "n", "seeds", "test"]


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
                rows.append([condition, metric, a, b, *_pair_test(both, metric)])
    return pd.DataFrame(rows, columns=TEST_COLUMNS)


def _pair_test(both: pd.DataFrame, metric: str) -> list:
    """[diff, p_value, n, seeds, test] of the paired outcomes `both` (columns *_a, *_b)."""
    column, binary = ("ap", False) if metric == "mAP" else ("hit", True)
    seeds = both["train_seed"].nunique()
    if seeds >= 2:
        means = both.groupby("train_seed")[[f"{column}_a", f"{column}_b"]].mean()
        t = seed_t_test(means[f"{column}_a"].to_numpy(), means[f"{column}_b"].to_numpy())
    else:
        t = paired_test(both[f"{column}_a"].to_numpy(float), both[f"{column}_b"].to_numpy(float), binary)
        t = type(t)(t.diff, t.p_value, t.n, f"{t.test} over queries (one seed: two checkpoints)")
    return [t.diff, t.p_value, t.n, seeds, t.test]


def _columns(cells: pd.DataFrame) -> list[tuple[str, str]]:
    return [(c, m) for c in ordered_conditions(cells) for m in headline_metrics(cells)]


def _best(agg: dict, models: list[str], col: tuple[str, str]) -> set[str]:
    """The models with the column's highest mean (ties all bold)."""
    scores = {m: round(agg[(m, *col)].mean, 6) for m in models if (m, *col) in agg}
    top = max(scores.values(), default=None)
    return {m for m, v in scores.items() if v == top}


def _models(cells: pd.DataFrame) -> list[str]:
    """Row order: plain first, then as they appear."""
    models = list(dict.fromkeys(cells["row"]))
    return sorted(models, key=lambda m: m != BASELINE)


def _mixed(agg: dict) -> bool:
    """Whether the table holds cells from one seed and cells from several (marked apart)."""
    return len({c.n_seeds > 1 for c in agg.values()}) > 1


def _fmt(cell: TableCell | None, bold: bool, latex: bool, mark: bool = False) -> str:
    if cell is None:
        return "-"
    pm = r"\,$\pm$\," if latex else " ± "
    text = f"{100 * cell.mean:.1f}{pm}{100 * cell.spread:.1f}" if np.isfinite(cell.spread) else f"{100 * cell.mean:.1f}"
    if mark and cell.n_seeds == 1 and np.isfinite(cell.spread):
        text += r"$^\dagger$" if latex else "†"
    if bold:
        text = rf"\textbf{{{text}}}" if latex else f"**{text}**"
    if np.isfinite(cell.delta) and abs(cell.delta) >= 0.0005:  # shown to 0.1 points
        delta = f"{100 * cell.delta:+.1f}"
        text += rf" {{\scriptsize({delta})}}" if latex else f" ({delta})"
    return text


SE_TEXT = "standard error of one trained model over queries (bootstrap) or test images (binomial)"


def _legend(agg: dict) -> str:
    """Says which quantity every ± is: std over seeds, or one checkpoint's standard error."""
    seeds = sorted({c.n_seeds for c in agg.values()})
    several = [n for n in seeds if n > 1]
    std = f"sample std over {'/'.join(map(str, several))} training seeds" if several else ""
    if not several:
        spread = f"mean ± {SE_TEXT}"
    elif 1 in seeds:
        spread = f"mean ± {std}; † one seed: ± is the {SE_TEXT}"
    else:
        spread = f"mean ± {std}"
    return f"{spread}; in parentheses the change against `{BASELINE}` in points; best of each column in bold"


def markdown_table(cells: pd.DataFrame) -> str:
    """Models as rows, condition x metric as columns, in %."""
    agg, cols = aggregate(cells), _columns(cells)
    models = _models(cells)
    head = "| model | " + " | ".join(f"{c} {LABELS[m]}" for c, m in cols) + " |"
    lines = [head, "|" + " --- |" * (len(cols) + 1)]
    best = {col: _best(agg, models, col) for col in cols}
    for model in models:
        row = [_fmt(agg.get((model, *col)), model in best[col], latex=False, mark=_mixed(agg)) for col in cols]
        lines.append(f"| {model} | " + " | ".join(row) + " |")
    return "\n".join(lines) + f"\n\n{_legend(agg)}.\n"


def latex_table(cells: pd.DataFrame, caption: str) -> str:
    """The same table as booktabs LaTeX (needs \\usepackage{booktabs})."""
    agg, cols = aggregate(cells), _columns(cells)
    models = _models(cells)
    best = {col: _best(agg, models, col) for col in cols}
    conds = list(dict.fromkeys(c for c, _ in cols))
    n_metrics = len(headline_metrics(cells))
    lines = [
        r"\begin{table}[t]",
        r"\centering\small",
        rf"\caption{{{_tex(caption)} ({_tex(_legend(agg)).replace('`', '')}).}}",
        r"\begin{tabular}{l" + "r" * len(cols) + "}",
        r"\toprule",
        " & ".join(["", *(rf"\multicolumn{{{n_metrics}}}{{c}}{{{_tex(c)}}}" for c in conds)]) + r" \\",
        "".join(rf"\cmidrule(lr){{{2 + i * n_metrics}-{1 + (i + 1) * n_metrics}}}" for i in range(len(conds))),
        " & ".join(["model", *(LABELS[m] for _, m in cols)]) + r" \\",
        r"\midrule",
    ]
    for model in models:
        row = [_fmt(agg.get((model, *col)), model in best[col], latex=True, mark=_mixed(agg)) for col in cols]
        lines.append(" & ".join([_tex(model), *row]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


TEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
               "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "±": r"$\pm$",
               "†": r"$^\dagger$"}  # fmt: skip


def _tex(text: str) -> str:
    """`text` with every LaTeX special character escaped (a model named `a_b&c%` renders)."""
    return "".join(TEX_ESCAPES.get(ch, ch) for ch in text)


def markdown_tests(tests: pd.DataFrame) -> str:
    """The paired tests as a Markdown table."""
    if tests.empty:
        return "(no paired tests: the run has no second model to compare, or no queries.csv)\n"
    lines = ["| condition | metric | A | B | A - B (points) | p | n | seeds | test |", "|" + " --- |" * 9]
    for _, t in tests.iterrows():
        lines.append(
            f"| {t['condition']} | {LABELS[t['metric']]} | {t['a']} | {t['b']} | {100 * t['diff']:+.1f} | "
            f"{t['p_value']:.3g} | {t['n']} | {t['seeds']} | {t['test']} |"
        )
    note = (
        "Two-sided p. With two or more seeds the test is a paired t-test over training seeds (n = seeds): "
        "it asks whether the methods differ beyond seed-to-seed spread. With one seed it compares two trained "
        "checkpoints over the same queries (n = queries: McNemar for Rank-1 and accuracy, sign-flip for AP) "
        "and says nothing about training variation."
    )
    return "\n".join(lines) + f"\n\n{note}\n"
