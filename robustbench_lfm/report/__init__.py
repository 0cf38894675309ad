"""`lfm-bench report RUN_DIR`: tables, statistics and figures a paper can use.

Reads only the run's CSVs (results.csv, queries.csv, cmc.csv, members.csv), so it works on a machine with no
checkpoints and no GPU. Writes under RUN_DIR/report/ (or --out):

* `report.md` and `report.tex` — models as rows, clean and attacked metrics as columns (%),
  mean ± std over seeds (± the cell's standard error for a single seed), a column's best in bold
  when it leads the runner-up over the seeds (report/tables.py `marked`), the change against
  `plain` in parentheses; for a model random in eval mode, each cell's mean and spread over its
  scoring passes (report/repeats.py); for an ensemble (auto-reid), which member
  decided how many queries (report/ensemble.py); then the paired tests;
* `cells.csv` — every cell's value and standard error (bootstrap over queries for mAP, binomial for
  Rank-k and accuracy); `tests.csv` — the paired tests (robustbench_lfm/stats.py);
* figures as PNG and PDF (report/figures.py) and `report.html`, one self-contained page (figures
  embedded) with everything.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from robustbench_lfm import evidence, metric_table
from robustbench_lfm.files import atomic_write, check_writable, remove_stale_temps
from robustbench_lfm.identity import corrupted
from robustbench_lfm.report import corruption, ensemble, repeats
from robustbench_lfm.report.figures import all_figures
from robustbench_lfm.report.tables import (
    BASELINE,
    cell_errors,
    html_table,
    html_tests,
    latex_table,
    markdown_table,
    markdown_tests,
    pair_tests,
    with_conditions,
)
from robustbench_lfm.store import ResultStore, StoreError
from robustbench_lfm.summary import cmc_labelled


class ReportError(ValueError):
    """The run directory cannot be reported; the message names the fix."""


@dataclass(frozen=True)
class Report:
    """What `build_report` wrote."""

    markdown: Path
    latex: Path
    html: Path
    figures: dict[str, list[Path]]


def load_run(run_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame | None, pd.DataFrame]:
    """(results with conditions, per-query outcomes or None, CMC curves) of a run directory."""
    results = run_dir / "results.csv"
    if not results.is_file():
        raise ReportError(f"{run_dir} has no results.csv; give the directory `lfm-bench run` wrote (e.g. results/NAME)")
    try:
        df = ResultStore(results).read_valid()
        queries_path = run_dir / "queries.csv"
        evidence.verify(df, queries_path, results)  # each value against its cell's per-query rows
        evidence.warn_if_changed(run_dir)
        queries = ResultStore.queries(queries_path).read() if queries_path.is_file() else None
        curves = ResultStore.cmc(run_dir / "cmc.csv").read()
    except StoreError as err:
        raise ReportError(str(err)) from None
    if df.empty:
        raise ReportError(f"{results} holds no rows yet; run the sweep first")
    incomplete = incomplete_cells(df)
    if incomplete:
        raise ReportError(
            f"{results} has {len(incomplete)} incomplete cell(s) ({', '.join(sorted(incomplete)[:3])}): some of their "
            "metric rows are missing; rerun the sweep command to recompute them"
        )
    return with_conditions(df), queries, cmc_labelled(curves, df)


def load_members(run_dir: Path) -> pd.DataFrame | None:
    """The run's members.csv (auto-reid's per-member outcomes), checked against queries.csv; None without one."""
    path = run_dir / "members.csv"
    if not path.is_file():
        return None
    try:
        evidence.verify_members_of(run_dir)
        members = ResultStore.members(path).read()
    except StoreError as err:
        raise ReportError(str(err)) from None
    return members


def incomplete_cells(df: pd.DataFrame) -> set[str]:
    """Cells lacking some of the rows their task records: every metric for every re-ranking mode."""
    out: set[str] = set()
    for task, rows in df.groupby("task"):
        expected = {(rr, m) for rr in rows["rerank"].unique() for m in metric_table.names(str(task))}
        for cell, g in rows.groupby("cell_id"):
            if set(zip(g["rerank"], g["metric"], strict=True)) != expected:
                out.add(str(cell))
    return out


def default_pairs(df: pd.DataFrame, extra: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Every model against plain, then the requested pairs."""
    models = list(dict.fromkeys(df["row"]))
    for a, b in extra:
        missing = [m for m in (a, b) if m not in models]
        if missing:
            raise ReportError(f"--pair {a},{b}: no model {', '.join(missing)} in this run (it has {', '.join(models)})")
    base = [(m, BASELINE) for m in models if m != BASELINE] if BASELINE in models else []
    return list(dict.fromkeys(base + extra))


def build_report(run_dir: Path, out: Path | None = None, pairs: Sequence[tuple[str, str]] = ()) -> Report:
    """Write the report of `run_dir` (module docstring); returns the paths."""
    df, queries, curves = load_run(run_dir)
    out = out or run_dir / "report"
    try:
        check_writable(out)
    except OSError as err:
        raise ReportError(
            f"report folder {str(out)!r} is not writable ({err.strerror}); choose another with --out"
        ) from None
    for folder in (out, run_dir):
        remove_stale_temps(folder)  # a killed report's (or sweep's) half-written files
    cells = cell_errors(df, queries)
    tests = pair_tests(df, queries, default_pairs(df, list(pairs)))
    atomic_write(out / "cells.csv", cells.drop(columns=["condition"]).to_csv(index=False))
    atomic_write(out / "tests.csv", tests.to_csv(index=False))
    title = f"{scored_on(df)}: {', '.join(dict.fromkeys(df['row']))}"
    main = cells[~corrupted(cells)]  # the corruptions get their own tables, one column per type
    extra = corruption.sections(df)
    members = ensemble.sections(df, load_members(run_dir))
    passes = repeats.sections(df)
    md = (f"# {title}\n\n{markdown_table(main)}\n{passes['md']}{members['md']}{extra['md']}"
          f"## Paired tests\n\n{markdown_tests(tests)}")  # fmt: skip
    atomic_write(out / "report.md", md)
    tex = latex_table(main, f"Clean and attacked {title} (%)") + passes["tex"] + members["tex"] + extra["tex"]
    atomic_write(out / "report.tex", tex)
    figures = all_figures(df, curves, out)
    html_extra = passes["html"] + members["html"] + extra["html"]
    atomic_write(out / "report.html", _html(title, main, tests, figures, html_extra))
    return Report(out / "report.md", out / "report.tex", out / "report.html", figures)


def scored_on(df: pd.DataFrame) -> str:
    """The data a run scored: `synthreid`, or `market1501 -> dukemtmc` when trained on another."""
    train, test = str(df["dataset"].iloc[0]), str(df["test_dataset"].iloc[0])
    same = test == train and str(df["test_data_params"].iloc[0]) == str(df["data_params"].iloc[0])
    if same:
        return train
    options = json.loads(str(df["test_data_params"].iloc[0]))
    changed = {k: v for k, v in options.items() if json.loads(str(df["data_params"].iloc[0])).get(k) != v}
    extra = ":" + ",".join(f"{k}={v}" for k, v in sorted(changed.items())) if test == train else ""
    return f"{train} -> {test}{extra}"


def _html(
    title: str, cells: pd.DataFrame, tests: pd.DataFrame, figures: dict[str, list[Path]], corruptions: str
) -> str:
    """One page: the tables as HTML and every PNG embedded, no external files."""
    table = html_table(cells) + corruptions
    test_table = html_tests(tests)
    imgs = "".join(
        f'<figure><img alt="{name}" src="data:image/png;base64,'
        f'{base64.b64encode(p.read_bytes()).decode()}"><figcaption>{name}</figcaption></figure>'
        for name, paths in figures.items()
        for p in paths
        if p.suffix == ".png"
    )
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
        "td,th{border-bottom:1px solid #ccc;padding:2px 8px;text-align:right;white-space:nowrap}"
        "td:first-child{text-align:left}"
        "table{display:block;overflow-x:auto;max-width:100%}"  # a wide table scrolls instead of running off the page
        "img{max-width:100%}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>{table}"
        f"<h2>Paired tests</h2>{test_table}<h2>Figures</h2>{imgs}</body></html>"
    )
