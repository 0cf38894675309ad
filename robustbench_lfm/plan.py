"""`lfm-bench plan`: how many training seeds and queries a comparison of two models needs.

The report's test between two models is a paired t-test over training seeds (robustbench_lfm/stats.py).
Its unit is the per-seed difference of the two models' means over Q queries,

    d_s = delta + e_s + q_s,   e_s ~ (0, tau^2)  training variation,   q_s ~ (0, sigma_q^2 / Q)  query sampling,

so with n seeds the test has power `stats.t_test_power(delta, sqrt(tau^2 + sigma_q^2 / Q), n)`.
From a pilot run with two or more seeds: sigma_q^2 is the mean over seeds of the sample variance
of the per-query paired differences (queries.csv), and the variance of the pilot's d_s estimates
tau^2 + sigma_q^2 / Q_pilot, so tau^2 = max(0, var(d_s) - sigma_q^2 / Q_pilot). Or both spreads
are given. For each Q asked, the plan is the smallest n whose power reaches the target; more
queries shrink only the query part, so past some Q only more seeds help.

Reads only the CSVs (no torch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from robustbench_lfm import metric_table
from robustbench_lfm.report import ReportError, default_pairs, load_run
from robustbench_lfm.report.tables import headline_metrics
from robustbench_lfm.stats import ALPHA, POWER, t_test_power

MAX_SEEDS = 100


class PlanError(ValueError):
    """The pilot or the spreads given cannot be planned from; the message names the fix."""


@dataclass(frozen=True)
class Spreads:
    """The two spreads of a per-seed difference (fractions: 0.01 = 1 point)."""

    seed: float  # tau: the training variation of the difference between seeds
    query: float  # sigma_q: the spread of one query's paired difference
    pilot_queries: int = 0  # Q of the pilot they were measured on (0: given)

    def sd(self, queries: int) -> float:
        """The standard deviation of a per-seed difference over `queries` queries."""
        return math.sqrt(self.seed**2 + self.query**2 / queries)


def seeds_needed(difference: float, spreads: Spreads, queries: int, power: float = POWER,
                 alpha: float = ALPHA) -> int | None:  # fmt: skip
    """The smallest seed count (2..MAX_SEEDS) whose paired t-test detects `difference` with `power`."""
    sd = spreads.sd(queries)
    if sd == 0:
        return 2
    for n in range(2, MAX_SEEDS + 1):
        if t_test_power(difference, sd, n, alpha) >= power:
            return n
    return None


def pilot_spreads(run_dir: Path, metric: str) -> list[tuple[str, str, str, Spreads]]:
    """(A, B, condition, spreads) for every model against plain (report's pairs) under every
    condition of a pilot run with two or more seeds, for `metric` (one with per-query outcomes)."""
    try:
        df, queries, _ = load_run(run_dir)
    except ReportError as err:
        raise PlanError(str(err)) from None
    column = metric_table.get_metric(metric).query_column if metric in metric_table.METRICS else ""
    if not column:
        names = ", ".join(m for m in headline_metrics(df) if metric_table.get_metric(m).query_column)
        raise PlanError(f"--metric {metric}: no per-query outcome to plan from; choose one of {names}")
    if queries is None or column not in queries.columns:
        raise PlanError(f"{run_dir} has no queries.csv with `{column}`: rerun the sweep to write it")
    seeds = df["train_seed"].nunique()
    if seeds < 2:
        raise PlanError(
            f"{run_dir} has {seeds} training seed: a pilot needs two or more to measure the training variation "
            "(rerun it with --seeds 0,1,2), or give --seed-spread and --query-spread"
        )
    keyed = df.drop_duplicates(["cell_id", "rerank"])[["cell_id", "rerank", "row", "condition", "train_seed"]]
    outcomes = queries.merge(keyed, on=["cell_id", "rerank"])
    out = []
    for a, b in default_pairs(df, []):
        for condition in dict.fromkeys(df["condition"]):
            sa = outcomes[(outcomes["row"] == a) & (outcomes["condition"] == condition)]
            sb = outcomes[(outcomes["row"] == b) & (outcomes["condition"] == condition)]
            both = sa.merge(sb, on=["train_seed", "query"], suffixes=("_a", "_b"))
            if both["train_seed"].nunique() < 2:
                continue
            d = both[f"{column}_a"].astype(float) - both[f"{column}_b"].astype(float)
            per_seed = d.groupby(both["train_seed"])
            q = int(per_seed.size().min())
            query_var = float(per_seed.var(ddof=1).mean())
            seed_var = float(per_seed.mean().var(ddof=1))
            out.append((a, b, str(condition), Spreads(math.sqrt(max(0.0, seed_var - query_var / q)),
                                                      math.sqrt(query_var), q)))  # fmt: skip
    if not out:
        raise PlanError(f"{run_dir} has no two models on common seeds to compare (it needs `plain` and another)")
    return out


def plan_table(
    rows: list[tuple[str, str, str, Spreads]], difference: float, queries: list[int], power: float, alpha: float
) -> pd.DataFrame:
    """One row per comparison: its spreads (points) and, per Q, the seeds needed ('>100' past MAX_SEEDS)."""
    table = []
    for a, b, condition, spreads in rows:
        counts = {q: seeds_needed(difference, spreads, q, power, alpha) for q in queries or [spreads.pilot_queries]}
        table.append({
            "A": a, "B": b, "condition": condition,
            "seed spread (points)": f"{100 * spreads.seed:.2f}",
            "query spread (points)": f"{100 * spreads.query:.1f}",
            **{f"seeds at {q} queries": (str(n) if n is not None else f">{MAX_SEEDS}") for q, n in counts.items()},
        })  # fmt: skip
    return pd.DataFrame(table)


def explain(difference: float, power: float, alpha: float) -> str:
    """The line under the plan: what it assumes."""
    return (
        f"seeds for a paired t-test over training seeds to detect a true difference of {100 * difference:.1f} points "
        f"with {power:.0%} power at alpha {alpha} (two-sided; per-seed differences normal, training and query "
        "spreads as measured on the pilot or given; more queries shrink only the query part)"
    )


def as_fraction(points: float, name: str) -> float:
    """A value given in points (0-100) as a fraction, checked."""
    if not np.isfinite(points) or not 0 < points < 100:
        raise PlanError(f"{name} {points} must be a number of points in (0, 100), e.g. 3 for 3 points")
    return points / 100
