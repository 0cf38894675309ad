"""The report's figures, each written as PNG (screen, HTML) and PDF (print).

* `eps` — headline metrics against eps per attack (summary.plot_eps_curves);
* `cmc` — CMC curves per condition, re-ID only (summary.plot_cmc);
* `scatter` — clean against attacked metric, one point per model and attack at the sweep's
  largest eps, error bars = std over seeds: up and to the right is both accurate and robust;
* `bars` — attacked metric per model, grouped by attack at the largest eps, error bars = std;
* `corruptions` — headline metrics against corruption severity (0 = clean), the mean over the
  corruption types run (report/corruption.py); the other figures leave the corruptions out.

Axis labels carry units (% and eps x 255); legends sit outside the axes so nothing overlaps.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from robustbench_lfm import metric_table
from robustbench_lfm.identity import corrupted, format_eps, subset_title
from robustbench_lfm.plotting import model_colours, save_figure
from robustbench_lfm.report.corruption import plot_severity
from robustbench_lfm.summary import error_bar_note, error_bars, plot_cmc, plot_eps_curves

FORMATS = (".png", ".pdf")


def _save(fig: plt.Figure, stem: Path) -> list[Path]:
    paths = []
    for suffix in FORMATS:
        save_figure(fig, stem.with_suffix(suffix), dpi=150, bbox_inches="tight")
        paths.append(stem.with_suffix(suffix))
    plt.close(fig)
    return paths


def _top1(df: pd.DataFrame) -> str:
    return metric_table.names(str(df["task"].iloc[0]), headline=True)[0]


def _strongest(df: pd.DataFrame) -> pd.DataFrame:
    """Attacked rows at each attack configuration's (series') largest eps, plain ranking only."""
    attacked = df[(df["attack"] != "none") & (df["rerank"] == "")]
    largest = attacked.groupby("series")["eps"].transform("max")
    return attacked[attacked["eps"] == largest]


def scatter(df: pd.DataFrame, stem: Path) -> list[Path]:
    """Clean against attacked top-1 metric per model, one marker per attack."""
    metric = _top1(df)
    rows = df[(df["metric"] == metric) & (df["rerank"] == "")]
    clean = error_bars(rows[rows["attack"] == "none"], ["row"]).set_index("row")
    attacked = error_bars(_strongest(rows), ["series", "eps", "row"])
    fig, ax = plt.subplots(figsize=(5.2, 4.2))
    markers = dict(zip(sorted(attacked["series"].unique()), "osD^vP*X", strict=False))
    colours = model_colours(list(dict.fromkeys(df["row"])))
    for _, r in attacked.iterrows():
        if r["row"] not in clean.index:
            continue
        c = clean.loc[r["row"]]
        ax.errorbar(100 * c["mean"], 100 * r["mean"], xerr=[[100 * c["low"]], [100 * c["high"]]],
                    yerr=[[100 * r["low"]], [100 * r["high"]]], fmt=markers.get(r["series"], "o"),
                    color=colours[r["row"]], capsize=2, label=r["row"])  # fmt: skip
    handles = {h.get_label(): h for h in ax.get_legend_handles_labels()[0]}
    if handles:  # no model has both a clean and an attacked row: an empty plot, no legend
        ax.legend(
            handles=list(handles.values()),
            labels=[str(k) for k in handles],
            fontsize=7,
            loc="upper left",
            bbox_to_anchor=(1.02, 1.0),
        )
    attacks = ", ".join(
        f"{a} {format_eps(e)} ({markers[a]})" for a, e in attacked[["series", "eps"]].drop_duplicates().values
    )
    ax.set_xlabel(f"clean {metric_table.label(metric)} (%)")
    ax.set_ylabel(f"attacked {metric_table.label(metric)} (%)")
    ax.set_title(
        f"{df['dataset'].iloc[0]}: clean vs robust{subset_title(df)}\n{attacks}; {error_bar_note(df)}", fontsize=9
    )
    ax.grid(alpha=0.3)
    return _save(fig, stem)


def bars(df: pd.DataFrame, stem: Path) -> list[Path]:
    """Attacked top-1 metric per model, one group per attack at its largest eps."""
    metric = _top1(df)
    rows = _strongest(df[df["metric"] == metric])
    stats = error_bars(rows, ["series", "eps", "row"])
    groups = list(dict.fromkeys(zip(stats["series"], stats["eps"], strict=True)))
    models = list(dict.fromkeys(df["row"]))
    colours = model_colours(models)
    width = 0.8 / max(len(models), 1)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 + 0.35 * len(models) * len(groups)), 3.6))
    for i, model in enumerate(models):
        sel = [stats[(stats["series"] == a) & (stats["eps"] == e) & (stats["row"] == model)] for a, e in groups]
        means = [100 * s["mean"].iloc[0] if len(s) else np.nan for s in sel]
        errs = [[100 * s[side].iloc[0] if len(s) else 0.0 for s in sel] for side in ("low", "high")]
        ax.bar(
            np.arange(len(groups)) + i * width, means, width, yerr=errs, capsize=2, label=model, color=colours[model]
        )
    ticks = [f"{a} {format_eps(e)}" for a, e in groups]
    slanted = max(map(len, ticks), default=0) * len(ticks) > 60  # long labels side by side would overlap
    ax.set_xticks(
        np.arange(len(groups)) + width * (len(models) - 1) / 2, ticks,
        rotation=25 if slanted else 0, ha="right" if slanted else "center", fontsize=8 if slanted else None,
    )  # fmt: skip
    ax.set_ylabel(f"attacked {metric_table.label(metric)} (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    title = (
        f"{df['dataset'].iloc[0]}: {metric_table.label(metric)} under attack{subset_title(df)}\n{error_bar_note(df)}"
    )
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, stem)


def all_figures(df: pd.DataFrame, curves: pd.DataFrame, out: Path) -> dict[str, list[Path]]:
    """Every figure of the report under `out`, keyed by name; the corruptions plotted against
    severity (`corruptions`), apart from the attacks."""
    figures: dict[str, list[Path]] = {}
    if corrupted(df).any():
        figures["corruptions"] = [p for s in FORMATS if (p := plot_severity(df, out / f"corruptions{s}")) is not None]
    df = df[~corrupted(df)]
    if (df["attack"] != "none").any():
        figures["eps"] = [p for s in FORMATS if (p := plot_eps_curves(df, out / f"eps{s}")) is not None]
        figures["scatter"] = scatter(df, out / "scatter")
        figures["bars"] = bars(df, out / "bars")
    if not curves.empty:
        figures["cmc"] = [
            p for s in FORMATS if (p := plot_cmc(curves, out / f"cmc{s}", df["dataset"].iloc[0])) is not None
        ]
    return figures
