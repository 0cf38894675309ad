"""Compact views of a result table: the table printed at the end of a run, and the eps plot.

Both read only the tidy CSV (as a DataFrame), so they work with no checkpoint and no GPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from robustbench_lfm import metric_table
from robustbench_lfm.identity import corrupted, labelled, ordered_conditions, subset_note, subset_title
from robustbench_lfm.plotting import fitted_title, model_colours, save_figure


def summary_table(df: pd.DataFrame) -> str:
    """Models as rows, clean and attack@eps as columns, headline metrics in %, mean ± std over seeds;
    the common corruptions, when the run has any, summarised under it (report/corruption.py).

    Rows and columns are the identity's labels (robustbench_lfm.identity), so two attack variants
    or two backbones never share a cell."""
    if df.empty:
        return "(no results)"
    from robustbench_lfm.report.corruption import summary_text

    corruptions = summary_text(df)
    table = _attack_table(df[~corrupted(df)])
    return table + ("\n\n" + corruptions if corruptions else "")


def _attack_table(df: pd.DataFrame) -> str:
    """`summary_table` of the clean and attacked rows."""
    metrics = metric_table.headline_names(list(df["task"].unique()))
    df = labelled(df[df["metric"].isin(metrics)])
    stats = df.groupby(["row", "condition", "metric"], sort=False)["value"].agg(["mean", "std", "count"])
    conditions = ordered_conditions(df)
    header = ["model"] + [f"{c} {metric_table.label(m)}" for c in conditions for m in metrics]
    lines = [header]
    for model in dict.fromkeys(df["row"]):
        row = [model]
        for cond in conditions:
            for m in metrics:
                row.append(_cell(stats, (model, cond, m)))
        lines.append(row)
    widths = [max(len(r[i]) for r in lines) for i in range(len(header))]
    text = [
        "  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(r, widths, strict=True)))
        for r in lines
    ]
    text.insert(1, "-" * len(text[0]))
    seeds = int(stats["count"].max())
    legend = f"(%; a±b = mean ± sample std over {seeds} training seeds)" if seeds > 1 else "(%; one training seed)"
    return "\n".join([*text, legend[:-1] + subset_note(df) + ")"])


def summary_json(
    df: pd.DataFrame, checks: list[Any], out_dir: Path, plots: list[str], seconds: float, failure: Exception | None
) -> dict[str, Any]:
    """What `run --format json` prints: each headline cell (model, condition, metric, mean and
    sample std over seeds as fractions, seeds), the sanity checks, the files written, the failure."""
    cells: list[dict[str, Any]] = []
    if not df.empty:
        named = labelled(df[df["metric"].isin(metric_table.headline_names(list(df["task"].unique())))])
        stats = named.groupby(["row", "condition", "metric"], sort=False)["value"].agg(["mean", "std", "count"])
        for key, s in stats.iterrows():
            row, condition, metric = (str(k) for k in key)  # type: ignore[attr-defined]  # a 3-level index
            std = float(s["std"]) if int(s["count"]) > 1 else None
            cells.append({"model": row, "condition": condition, "metric": metric, "mean": float(s["mean"]),
                          "std": std, "seeds": int(s["count"])})  # fmt: skip
    return {
        "passed": failure is None and bool(df["value"].between(0, 1).all()) if len(df) else failure is None,
        "cells": cells,
        "sanity": [{**asdict(c)} for c in checks],
        "results": str(out_dir / "results.csv"),
        "rows": len(df),
        "plots": plots,
        "seconds": round(seconds, 1),
        "failure": None if failure is None else str(failure),
    }


def _cell(stats: pd.DataFrame, key: tuple[str, str, str]) -> str:
    if key not in stats.index:
        return "-"
    mean, std, count = stats.loc[key]  # type: ignore[index]  # a 3-level index: pandas-stubs cannot say so
    return f"{100 * mean:.1f}" + (f"±{100 * std:.1f}" if count > 1 else "")


def _sides(df: pd.DataFrame) -> str:
    """'queries', 'gallery', or both, from the CSV `perturbed` column."""
    names = {"query": "queries", "gallery": "gallery", "input": "inputs"}
    sides = sorted({str(p) for p in df["perturbed"] if p} & set(names))
    return " and ".join(names[p] for p in sides) or "inputs"


def _norms(df: pd.DataFrame) -> str:
    """'L-inf' and/or 'L2 norm', from the CSV `norm` column."""
    names = {"linf": "L-inf", "l2": "L2 norm"}
    return ", ".join(names[n] for n in sorted({str(n) for n in df["norm"] if n} & set(names))) or "L-inf"


def error_bars(rows: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per group of `keys`: the mean `value` over seeds and its error bar below (`low`) and above
    (`high`), as fractions: the sample std over seeds when a group has two or more; with one seed,
    the 95% Wilson interval of a proportion over its n_eval queries (robustbench_lfm.stats), none
    (0) for another metric. `error_bar_note` says it in words."""
    from robustbench_lfm.stats import wilson_interval  # scipy: only when a figure is drawn

    out = (
        rows.groupby(keys, sort=False)
        .agg(
            mean=("value", "mean"),
            std=("value", "std"),
            seeds=("value", "size"),
            n=("n_eval", "first"),
            metric_name=("metric", "first"),
        )
        .reset_index()
    )
    low, high = [], []
    for _, r in out.iterrows():
        if r["seeds"] > 1:
            low.append(float(r["std"]))
            high.append(float(r["std"]))
        elif metric_table.get_metric(str(r["metric_name"])).proportion:
            lo, hi = wilson_interval(float(r["mean"]), int(r["n"]))
            low.append(float(r["mean"]) - lo)
            high.append(hi - float(r["mean"]))
        else:
            low.append(0.0)
            high.append(0.0)
    return out.assign(low=low, high=high)


def error_bar_note(df: pd.DataFrame, metrics: list[str] | None = None) -> str:
    """What the figures' error bars are, for their titles; with one seed, which of the plotted
    `metrics` (default: those of `df`) have none (a mean of per-query scores: mAP)."""
    seeds = int(df["train_seed"].nunique())
    if seeds > 1:
        return f"bars: ± std over {seeds} seeds"
    plotted = metrics if metrics is not None else list(dict.fromkeys(df["metric"]))
    what = "test images" if "accuracy" in plotted else "queries"
    none = [metric_table.label(m) for m in plotted if not metric_table.get_metric(m).proportion]
    return f"bars: 95% Wilson interval over the {what} (one seed)" + (f"; none for {', '.join(none)}" if none else "")


def plot_eps_curves(df: pd.DataFrame, path: Path, also: Sequence[Path] = ()) -> Path | None:
    """Headline metrics against eps (in /255), one line per model and attack, clean at eps 0, with
    error bars (`error_bars`), saved to `path` and the paths in `also` (other formats of the same
    drawing); None when no cell was attacked within a budget (the corruptions have their own figure)."""
    df = df[~corrupted(df)]
    if df.empty or not (df["attack"] != "none").any():
        return None
    task = df["task"].iloc[0]
    metrics = metric_table.names(task, headline=True)
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.8 * len(metrics), 3.6), squeeze=False)
    df = labelled(df[df["metric"].isin(metrics)])
    clean = df[df["attack"] == "none"]
    colours = model_colours(list(dict.fromkeys(df["row"])))
    series = sorted(set(df.loc[df["attack"] != "none", "series"]))
    markers = dict(zip(series, "osD^vP*X", strict=False))
    for ax, metric in zip(axes[0], metrics, strict=True):
        for attack in series:
            sub = pd.concat([clean, df[df["series"] == attack]])
            sub = error_bars(sub[sub["metric"] == metric], ["row", "rerank", "eps"]).sort_values("eps")
            for (model, rr), curve in sub.groupby(["row", "rerank"], sort=False):
                ax.errorbar(
                    curve["eps"] * 255,
                    100 * curve["mean"],
                    yerr=[100 * curve["low"], 100 * curve["high"]],
                    capsize=2,
                    marker=markers.get(attack, "o"),
                    color=colours[model],
                    linestyle="--" if rr else "-",
                    label=f"{model} ({attack}{', re-ranked' if rr else ''})",
                )
        ax.set_xlabel(f"eps (x 255; {_norms(df)})")
        ax.set_ylabel(f"{metric_table.label(metric)} (%)")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
    # A figure legend, outside the layout (as the CMC figure's): the panels keep their width however
    # many and long the labels are; an axes legend made tight_layout squeeze the panels to slivers
    # for rcm-cifar's twelve models, or give up with a warning.
    handles, labels = axes[0][-1].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 0.88))
    title = f"{df['dataset'].iloc[0]}: clean (eps 0) and attacked {_sides(df)}{subset_title(df)}"
    fig.suptitle(fitted_title(f"{title}\n{error_bar_note(df)}", fig))
    fig.tight_layout()
    save_figure(fig, path, dpi=120, also=also)  # cropped to the title's whole width, with one panel too
    plt.close(fig)
    return path


def cmc_labelled(curves: pd.DataFrame, results: pd.DataFrame) -> pd.DataFrame:
    """cmc.csv rows with the `row` and `condition` labels of their cells in results.csv (the
    condition without ' +rerank': re-ranked curves share the panel, dashed); clean and attacked
    cells only (cmc.csv keeps the corruption cells' curves too)."""
    results = results[~corrupted(results)]  # a corruption's curves would be a panel per type and severity
    if curves.empty or results.empty:
        return curves.assign(row=[], condition=[]).iloc[0:0]
    labels = labelled(results).drop_duplicates(["cell_id", "rerank"])[["cell_id", "rerank", "row", "condition"]]
    merged = curves.drop(columns=["model"]).merge(labels, on=["cell_id", "rerank"])
    return merged.assign(condition=merged["condition"].str.removesuffix(" +rerank"))


def plot_cmc(curves: pd.DataFrame, path: Path, dataset: str = "", also: Sequence[Path] = ()) -> Path | None:
    """CMC curves from `cmc_labelled` rows: one panel per condition (clean, each attack and eps), one
    curve per model (mean over seeds); re-ranked curves dashed. Saved to `path` and the paths in `also`."""
    if curves.empty:
        return None
    conditions = ordered_conditions(curves)
    ncols = min(4, len(conditions))  # wrap: a page holds four panels across
    nrows = -(-len(conditions) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 3.2 * nrows), squeeze=False, sharey=True)
    colours = model_colours(list(dict.fromkeys(curves["row"])))
    flat = axes.flatten()
    for ax in flat[len(conditions) :]:
        ax.set_visible(False)
    for ax, cond in zip(flat, conditions, strict=False):
        sub = curves[curves["condition"] == cond].groupby(["row", "rerank", "rank"], sort=False)["cmc"].mean()
        for (model, rr), curve in sub.reset_index().groupby(["row", "rerank"], sort=False):
            ax.plot(curve["rank"], 100 * curve["cmc"], color=colours[str(model)], linestyle="--" if rr else "-",
                    label=f"{model}{' re-ranked' if rr else ''}")  # fmt: skip
        ax.set_title(cond)
        ax.set_xlabel("rank k")
        ax.set_xscale("log")
        ax.set_xticks([1, 5, 10, 20, 50], ["1", "5", "10", "20", "50"])
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3, which="both")
    for row in axes:
        row[0].set_ylabel("queries matched within rank k (%)")
    handles, labels = flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 0.95))
    fig.suptitle(f"{dataset}: CMC, clean and attacked".strip(": "))
    fig.tight_layout()
    save_figure(fig, path, dpi=120, also=also)
    plt.close(fig)
    return path
