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

from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from robustbench_lfm import metric_table
from robustbench_lfm.identity import corrupted, format_eps, subset_title
from robustbench_lfm.plotting import fitted_title, model_colours, save_figure
from robustbench_lfm.report.corruption import plot_severity
from robustbench_lfm.summary import error_bar_note, error_bars, plot_cmc, plot_eps_curves

FORMATS = (".png", ".pdf")


def _save(fig: plt.Figure, stem: Path) -> list[Path]:
    """`fig` saved in every format of FORMATS, at 150 dpi."""
    paths = [stem.with_suffix(suffix) for suffix in FORMATS]
    save_figure(fig, paths[0], dpi=150, also=paths[1:])
    plt.close(fig)
    return paths


def _in_every_format(plot: Callable[[Path, list[Path]], Path | None], stem: Path) -> list[Path]:
    """`plot(path, also)` drawn once and saved in every format of FORMATS; [] when it draws nothing."""
    paths = [stem.with_suffix(suffix) for suffix in FORMATS]
    return paths if plot(paths[0], paths[1:]) is not None else []


def _top1(df: pd.DataFrame) -> str:
    return metric_table.names(str(df["task"].iloc[0]), headline=True)[0]


def _strongest(df: pd.DataFrame) -> pd.DataFrame:
    """Attacked rows at each attack configuration's (series') largest eps, plain ranking only."""
    attacked = df[(df["attack"] != "none") & (df["rerank"] == "")]
    largest = attacked.groupby("series")["eps"].transform("max")
    return attacked[attacked["eps"] == largest]


COINCIDENT = 1.0  # points (%) within which two markers would hide one another


def _coincident_rank(points: list[tuple[float, float]]) -> list[int]:
    """For each point, how many earlier points lie within COINCIDENT of it on both axes."""
    return [
        sum(abs(x - px) < COINCIDENT and abs(y - py) < COINCIDENT for px, py in points[:i])
        for i, (x, y) in enumerate(points)
    ]


def scatter(df: pd.DataFrame, stem: Path) -> list[Path]:
    """Clean against attacked top-1 metric per model, one marker per attack, on fixed 0-100 axes of
    equal scale (an auto-scaled axis made a 2-point gap look large), with the line robust = clean.
    A marker that would hide an earlier one is drawn as a larger ring around it, and the models
    that share a spot are named beside it."""
    metric = _top1(df)
    rows = df[(df["metric"] == metric) & (df["rerank"] == "")]
    clean = error_bars(rows[rows["attack"] == "none"], ["row"]).set_index("row")
    attacked = error_bars(_strongest(rows), ["series", "eps", "row"])
    attacked = attacked[attacked["row"].isin(clean.index)]
    fig, ax = plt.subplots(figsize=(5.6, 4.6))
    markers = dict(zip(sorted(attacked["series"].unique()), "osD^vP*X", strict=False))
    colours = model_colours(list(dict.fromkeys(df["row"])))
    ax.plot([0, 100], [0, 100], color="0.75", linewidth=0.8, zorder=0, label="robust = clean")
    points = [(100 * clean.loc[r["row"], "mean"], 100 * r["mean"]) for _, r in attacked.iterrows()]
    for (_, r), (x, y), rank in zip(attacked.iterrows(), points, _coincident_rank(points), strict=True):
        c = clean.loc[r["row"]]
        has_bars = max(c["low"], c["high"], r["low"], r["high"]) > 0
        ax.errorbar(x, y, xerr=[[100 * c["low"]], [100 * c["high"]]], yerr=[[100 * r["low"]], [100 * r["high"]]],
                    fmt=markers.get(r["series"], "o"), color=colours[r["row"]], capsize=2 if has_bars else 0,
                    markersize=6 + 4 * rank, fillstyle="full" if rank == 0 else "none", label=r["row"])  # fmt: skip
    for (x, y), group in _shared_spots(points, list(attacked["row"])).items():
        ax.annotate(", ".join(group), (x, y), xytext=(6, -10), textcoords="offset points", fontsize=7)
    handles = {h.get_label(): h for h in ax.get_legend_handles_labels()[0]}
    ax.legend(handles=list(handles.values()), labels=[str(k) for k in handles], fontsize=7, loc="upper left",
              bbox_to_anchor=(1.02, 1.0))  # fmt: skip
    attacks = ", ".join(
        f"{a} {format_eps(e)} ({markers[a]})" for a, e in attacked[["series", "eps"]].drop_duplicates().values
    )
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 100)
    ax.set_aspect("equal")
    ax.set_xlabel(f"clean {metric_table.label(metric)} (%)")
    ax.set_ylabel(f"attacked {metric_table.label(metric)} (%)")
    title = f"{df['dataset'].iloc[0]}: clean vs robust{subset_title(df)}\n{attacks}; {error_bar_note(df, [metric])}"
    ax.set_title(fitted_title(title, fig, 9), fontsize=9)
    ax.grid(alpha=0.3)
    return _save(fig, stem)


def _shared_spots(points: list[tuple[float, float]], models: list[str]) -> dict[tuple[float, float], list[str]]:
    """The spots where two or more different models' markers coincide: spot -> the models there."""
    spots: dict[tuple[float, float], list[str]] = {}
    for (x, y), model in zip(points, models, strict=True):
        spot = next((s for s in spots if abs(s[0] - x) < COINCIDENT and abs(s[1] - y) < COINCIDENT), (x, y))
        if model not in spots.setdefault(spot, []):
            spots[spot].append(model)
    return {s: m for s, m in spots.items() if len(m) > 1}


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
        errs = np.array([[100 * s[side].iloc[0] if len(s) else 0.0 for s in sel] for side in ("low", "high")])
        x = np.arange(len(groups)) + i * width
        ax.bar(x, means, width, label=model, color=colours[model])
        has = errs.max(axis=0) > 0  # a bar with no interval (mAP of one seed) gets no whisker and no cap
        if has.any():
            ax.errorbar(x[has], np.array(means)[has], yerr=errs[:, has], fmt="none", ecolor="black", capsize=2,
                        elinewidth=1)  # fmt: skip
    ticks = [f"{a} {format_eps(e)}" for a, e in groups]
    slanted = max(map(len, ticks), default=0) * len(ticks) > 60  # long labels side by side would overlap
    ax.set_xticks(
        np.arange(len(groups)) + width * (len(models) - 1) / 2, ticks,
        rotation=25 if slanted else 0, ha="right" if slanted else "center", fontsize=8 if slanted else None,
    )  # fmt: skip
    ax.set_ylabel(f"attacked {metric_table.label(metric)} (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    title = f"{df['dataset'].iloc[0]}: {metric_table.label(metric)} under attack{subset_title(df)}"
    title += f"\n{error_bar_note(df, [metric])}"
    ax.set_title(fitted_title(title, fig, 9), fontsize=9)
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, stem)


def all_figures(df: pd.DataFrame, curves: pd.DataFrame, out: Path) -> dict[str, list[Path]]:
    """Every figure of the report under `out`, keyed by name; the corruptions plotted against
    severity (`corruptions`), apart from the attacks."""
    figures: dict[str, list[Path]] = {}
    if corrupted(df).any():
        figures["corruptions"] = _in_every_format(lambda p, also: plot_severity(df, p, also), out / "corruptions")
    df = df[~corrupted(df)]
    if (df["attack"] != "none").any():
        figures["eps"] = _in_every_format(lambda p, also: plot_eps_curves(df, p, also), out / "eps")
        figures["scatter"] = scatter(df, out / "scatter")
        figures["bars"] = bars(df, out / "bars")
    if not curves.empty:
        dataset = str(df["dataset"].iloc[0])
        figures["cmc"] = _in_every_format(lambda p, also: plot_cmc(curves, p, dataset, also), out / "cmc")
    return figures
