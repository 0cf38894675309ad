"""The common-corruption view of a result table (`corrupt` cells; robustbench_lfm/attacks/corrupt.py).

Per model and headline metric: each corruption's value averaged over the severities run (and over
seeds), their mean over corruptions, the clean value beside them and, for classification, the
mean corruption error relative to `plain` (Hendrycks & Dietterich, ICLR 2019):

    CE_c = sum_s E(model, c, s) / sum_s E(plain, c, s),   E = 1 - accuracy,   mCE = mean_c CE_c,

in % (plain = 100; lower is better), over the corruptions and severities both models were run on.
Re-ID reports the mean Rank-1 and mAP over corruptions for the corrupted side (Chen et al.,
NeurIPS 2021, Market-1501-C: both query and gallery by default). Cells of other corruption
options (side, parameter table, source) get tables of their own, named by those options.

Reads only the CSV (no torch).
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from robustbench_lfm import metric_table
from robustbench_lfm.identity import corrupted, labelled, subset_title
from robustbench_lfm.report.tables import (
    BASELINE,
    FormattedTable,
    leader,
    marked,
    marks_legend,
    render_html,
    render_latex,
    render_markdown,
)

MCE = "mCE vs plain"  # how every table and summary heads the column: relative to plain, not to AlexNet


def corruption_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The corruption cells of `df` with `corruption` (the type), `variant` (the other options, as
    `side=query` or "" at their defaults) and `severity` as an int; headline metrics only."""
    rows = df[corrupted(df) & df["metric"].isin(metric_table.headline_names(list(dict.fromkeys(df["task"]))))]
    if rows.empty:
        return rows.assign(corruption=[], variant=[])
    params = rows["attack_params"].map(json.loads)
    label = rows["attack_label"].astype(str)  # its non-default options: `corrupt:side=query,type=fog`
    variant = label.str.replace(r"(^[^:]*:?|type=[a-z_]+)", "", regex=True).str.replace(",,", ",").str.strip(",")
    return rows.assign(
        corruption=params.map(lambda p: str(p.get("type", ""))),
        variant=variant,
        severity=pd.to_numeric(rows["severity"]).astype(int),
    )


def _named(df: pd.DataFrame) -> pd.DataFrame:
    """`df` with its identity labels (`row`, ...), labelled once: a frame that has them is kept."""
    return df if "row" in df.columns else labelled(df)


def _clean(df: pd.DataFrame) -> pd.DataFrame:
    """Mean clean value per (row, metric) of the rows."""
    df = _named(df)
    clean = df[(df["attack"] == "none") & (df["rerank"].fillna("") == "")]
    return clean.groupby(["row", "metric"])["value"].mean()


def per_corruption(df: pd.DataFrame) -> pd.DataFrame:
    """(row, variant, metric, corruption) -> value averaged over seeds, then severities."""
    rows = corruption_rows(_named(df))
    rows = rows[rows["rerank"].fillna("") == ""]
    by_severity = rows.groupby(["row", "variant", "metric", "corruption", "severity"], sort=False)["value"].mean()
    return by_severity.groupby(level=[0, 1, 2, 3], sort=False).mean().rename("value").reset_index()


def mce(df: pd.DataFrame) -> pd.Series:
    """(row, variant) -> mCE in % against `plain` (classification); empty without plain."""
    rows = corruption_rows(_named(df))
    rows = rows[(rows["task"] == "classification") & rows["metric"].isin(metric_table.all_names(chance=True))]
    errors = (1 - rows.groupby(["row", "variant", "corruption", "severity"])["value"].mean()).rename("error")
    errors = errors.reset_index()
    base = errors[errors["row"] == BASELINE].drop(columns="row")
    both = errors.merge(base, on=["variant", "corruption", "severity"], suffixes=("", "_plain"))
    sums = both.groupby(["row", "variant", "corruption"])[["error", "error_plain"]].sum()
    ce = sums["error"] / sums["error_plain"].where(sums["error_plain"] > 0)
    return (100 * ce.groupby(level=[0, 1]).mean()).rename("mCE")


def _per_seed(df: pd.DataFrame) -> pd.DataFrame:
    """(row, variant, metric, corruption, train_seed) -> value averaged over the severities, with
    `mean` over corruptions as a corruption of its own: what the marks of best test over seeds."""
    rows = corruption_rows(_named(df))
    rows = rows[rows["rerank"].fillna("") == ""]
    key = ["row", "variant", "metric", "train_seed"]
    by_type = rows.groupby([*key, "corruption"], sort=False)["value"].mean().reset_index()
    mean = by_type.groupby(key, sort=False)["value"].mean().reset_index().assign(corruption="mean")
    return pd.concat([by_type, mean], ignore_index=True)


def _leaders(seeded: pd.DataFrame, table: pd.DataFrame, sign: int) -> dict:
    """The seed-level leader of each corruption column and of `mean` (tables.leader); the clean
    column is the main table's, and mCE, a ratio to plain's errors, is not marked."""
    out = {}
    for column in table.columns:
        if column in ("clean", "mCE"):
            continue
        rows = seeded[seeded["corruption"] == column]
        per_seed = rows.set_index(["row", "train_seed"])["value"].astype(float)
        out[column] = leader(per_seed, {str(r): float(v) for r, v in table[column].items()}, sign)
    return out


def severities_text(df: pd.DataFrame) -> str:
    """'severity 3' or 'severities 1-5' of the corruption cells in `df`."""
    levels = sorted({int(s) for s in pd.to_numeric(df.loc[corrupted(df), "severity"])})
    if len(levels) == 1:
        return f"severity {levels[0]}"
    if levels == list(range(levels[0], levels[-1] + 1)):
        return f"severities {levels[0]}-{levels[-1]}"
    return "severities " + ",".join(map(str, levels))


def corruption_tables(df: pd.DataFrame) -> list[tuple[str, FormattedTable]]:
    """One (title, table) per variant and headline metric: models as rows; clean, the mean over the
    corruptions and (classification) mCE, then each corruption, as columns, in %; a corruption's (or
    the mean's) best bold when it leads the runner-up over the seeds (tables.marked)."""
    df = _named(df)
    values = per_corruption(df)
    if values.empty:
        return []
    clean, ce, per_seed = _clean(df), mce(df), _per_seed(df)
    out = []
    for (variant, metric), group in values.groupby(["variant", "metric"], sort=False):
        table = group.pivot(index="row", columns="corruption", values="value")[list(dict.fromkeys(group["corruption"]))]
        table.insert(0, "clean", [clean.get((r, metric), np.nan) for r in table.index])
        table["mean"] = table.drop(columns="clean").mean(axis=1)
        order = sorted(table.index, key=lambda r: r != BASELINE)
        table = 100 * table.loc[order]
        chance_metric = metric in metric_table.all_names(chance=True)
        if chance_metric and str(df["task"].iloc[0]) == "classification" and len(ce):
            table["mCE"] = [ce.get((r, variant), np.nan) for r in table.index]
        summary = [c for c in ("clean", "mean", "mCE") if c in table.columns]  # first: a wide table scrolls
        table = table[summary + [c for c in table.columns if c not in summary]]
        seeded = per_seed[(per_seed["variant"] == variant) & (per_seed["metric"] == metric)]
        leaders = _leaders(seeded, table, metric_table.get_metric(str(metric)).sign)
        best = marked(leaders)
        bold = pd.DataFrame({c: [r in best.get(c, set()) for r in table.index] for c in table.columns}, table.index)
        table, bold = (t.rename(columns={"mCE": MCE}) for t in (table, bold))
        text = table.map(lambda v: "-" if pd.isna(v) else f"{v:.1f}")
        text.index.name = bold.index.name = "model"
        name = f"{metric_table.label(str(metric))}" + (f", {variant}" if variant else "")
        out.append((name, FormattedTable(text, bold, legend(df) + "; " + marks_legend(leaders))))
    return out


def sections(df: pd.DataFrame) -> dict[str, str]:
    """The report's corruption section per format (`md`, `tex`, `html`); empty strings without
    corruption cells."""
    tables = corruption_tables(df)
    if not tables:
        return {"md": "", "tex": "", "html": ""}
    title = f"Common corruptions ({severities_text(df)})"
    return {
        "md": f"## {title}\n\n" + "".join(f"### {name}\n\n{render_markdown(t)}\n" for name, t in tables),
        "tex": "\n".join(render_latex(t, f"{df['dataset'].iloc[0]} under common corruptions: {name} (%)")
                         for name, t in tables),
        "html": f"<h2>{html.escape(title)}</h2>" + "".join(f"<h3>{html.escape(name)}</h3>{render_html(t)}"
                                                         for name, t in tables),
    }  # fmt: skip


def legend(df: pd.DataFrame) -> str:
    """What the corruption tables hold."""
    seeds = df["train_seed"].nunique()
    mean = f"mean over {seeds} training seeds and the {severities_text(df)}" if seeds > 1 else severities_text(df)
    task = str(df["task"].iloc[0])
    side = "" if task != "reid" else "; re-ID: the corrupted side is the `perturbed` column, both = query and gallery"
    ce = "; mCE: mean corruption error against `plain` in % (lower is better)" if task == "classification" else ""
    return f"% per corruption, averaged over {mean}; mean = over corruptions{ce}{side}"


def summary_text(df: pd.DataFrame) -> str:
    """The table the run prints under its own: per model (and variant) the clean value and the mean
    over corruptions of each headline metric, and mCE; "" when the run has no corruption cell."""
    tables = corruption_tables(df)
    if not tables:
        return ""
    columns = {}
    for name, table in tables:
        for column, heading in (("clean", "clean"), ("mean", "corrupted"), (MCE, MCE)):
            if column in table.text.columns:
                columns[f"{heading} {name}" if column != MCE else f"{MCE} (%)"] = table.text[column]
    frame = pd.DataFrame(columns).fillna("-")
    types = corruption_rows(df)["corruption"].nunique()
    head = f"common corruptions: mean over {types} type(s) at {severities_text(df)} (%; each type in report.md)"
    frame.index.name = None
    return head + "\n" + frame.to_string()


def plot_severity(df: pd.DataFrame, path: Path, also: Sequence[Path] = ()) -> Path | None:
    """Headline metrics against severity (0 = clean), one line per model and variant, the mean over
    the corruptions run at each severity, saved to `path` and the paths in `also`; None when the run
    has no corruption cell."""
    from robustbench_lfm.plotting import fitted_title, model_colours, plt, save_figure  # matplotlib without a display

    named = _named(df)
    rows = corruption_rows(named)
    rows = rows[rows["rerank"].fillna("") == ""]
    if rows.empty:
        return None
    metrics = list(dict.fromkeys(rows["metric"]))
    clean = _clean(named)
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.8 * len(metrics), 3.6), squeeze=False)
    colours = model_colours(list(dict.fromkeys(named["row"])))
    for ax, metric in zip(axes[0], metrics, strict=True):
        sub = rows[rows["metric"] == metric].groupby(["row", "variant", "severity"], sort=False)["value"].mean()
        for (model, variant), curve in sub.reset_index().groupby(["row", "variant"], sort=False):
            xs, ys = [0, *curve["severity"]], [clean.get((model, metric), np.nan), *curve["value"]]
            label = f"{model}" + (f" ({variant})" if variant else "")
            ax.plot(xs, 100 * np.array(ys, dtype=float), marker="o", color=colours[str(model)], label=label)
        ax.set_xlabel("corruption severity (0 = clean)")
        ax.set_ylabel(f"{metric_table.label(str(metric))} (%), mean over corruptions")
        ax.set_xticks(range(6))
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    types = rows["corruption"].nunique()
    fig.suptitle(
        fitted_title(f"{df['dataset'].iloc[0]}: {types} common corruptions by severity{subset_title(df)}", fig)
    )
    fig.tight_layout()
    save_figure(fig, path, dpi=120, also=also)
    plt.close(fig)
    return path
