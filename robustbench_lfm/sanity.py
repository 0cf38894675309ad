"""Sanity checks against gradient masking and broken attacks, run in every sweep (issue 4).

From the result rows and the probe rows (extra cells in probes.csv, see `RunSpec.probe_cells`):

* `above-chance` — the clean Rank-1 (accuracy) lies above chance by more than 3 binomial standard
                  deviations over n_eval: a model at chance is broken or untrained, and no attack
                  can show anything against it.
* `eps0-clean`  — the attack at eps 0, run through its own code path, reproduces the clean metrics
                  exactly (all metrics, tolerance 0).
* `monotone`    — the attacked metric does not increase with eps (clean counts as eps 0).
* `pgd<=fgsm`   — PGD leaves at most FGSM's metric at the same eps (same objective and side).
* `in-budget`   — per attack series, the final projection onto the budget and [0, 1] moved no pixel
                  of the attack's output by more than rounding (CSV `projected`): a search that
                  leaves the ball (a plugin's bug) is made visible, not silently repaired. Minimum-
                  norm attacks (CW, DeepFool: `stays_in_budget = False`) are projected by design.
* `large-eps`   — at a very large eps (64/255 L-inf, 16 L2; the attack's schedule at the sweep's
                  largest eps with its steps scaled up, as its steps/step_size columns in
                  probes.csv record; with that very large eps the sweep's largest, the probe is
                  the sweep's own cell there, computed once) Rank-1 (accuracy) falls to near
                  chance: at most chance + max(NEAR_CHANCE, 3 binomial standard deviations over
                  n_eval queries or images), chance being a random ranking's expected Rank-1
                  (1 / classes for classification).

Comparisons between attacked numbers allow SLACK_QUERIES / n_eval (a couple of queries) for the
random starts. A failed check is a warning printed under the table and a row with passed=False in
sanity.csv; it does not stop the run (the numbers are kept, flagged).

The common corruptions (`corrupt`) have no budget, so none of these checks applies to them: they
are neither probed nor part of a series across eps.

A series is one attack configuration of one trained model across eps: every identity column but
the schedule (robustbench_lfm.identity.SERIES), so two variants of an attack (`pgd` and
`pgd:steps=1`) or two datasets' options are checked apart, never mixed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import pandas as pd

from robustbench_lfm import metric_table
from robustbench_lfm.files import atomic_write
from robustbench_lfm.identity import ATTACK, LARGE_EPS, MODEL, RUN, SERIES, canonical, corrupted, format_eps
from robustbench_lfm.store import StoreError

SLACK_QUERIES = 2
NEAR_CHANCE = 0.05
ATTACK_KEY = list(SERIES)
CLEAN_KEY = [*RUN, *MODEL, "train_seed", "rerank"]  # what an attacked series shares with its clean cell


@dataclass(frozen=True)
class Check:
    """One sanity verdict: `value` against `reference` within `tolerance`."""

    check: str
    model: str
    train_seed: int
    attack: str
    eps: float
    metric: str
    value: float
    reference: float
    tolerance: float
    passed: bool
    detail: str

    def warning(self) -> str:
        """One line for the printed summary."""
        return (
            f"WARNING sanity {self.check}: {self.model} seed {self.train_seed} {self.attack} "
            f"{format_eps(self.eps)} {self.metric}: {self.detail}"
        )


def run_checks(
    results: pd.DataFrame, probes: pd.DataFrame, chance: float, projecting: frozenset[str] = frozenset()
) -> list[Check]:
    """Every check the rows allow; see the module docstring. `projecting`: the attacks whose design
    is to be projected onto the budget at the end (minimum-norm searches), exempt from `in-budget`."""
    if results.empty:
        return []
    results = canonical(results)
    probes = canonical(probes) if not probes.empty else probes
    clean = results[results["attack"] == "none"]
    threatened = results[results["attack"] != "none"]
    attacked = threatened[~corrupted(threatened)]  # a corruption has no eps series
    values = clean_values(clean)
    return [
        *_above_chance(clean, chance),
        *_eps0(values, probes[probes["eps"] == 0]),
        *_monotone(values, attacked),
        *_pgd_vs_fgsm(attacked, probes),
        *_large_eps(probes, chance),
        *_in_budget(pd.concat([threatened, probes], ignore_index=True) if not probes.empty else threatened, projecting),
    ]


def write(checks: list[Check], path: Path) -> pd.DataFrame:
    """sanity.csv (rewritten on every run) and the table as a DataFrame."""
    df = pd.DataFrame([asdict(c) for c in checks], columns=[f.name for f in fields(Check)])
    atomic_write(path, df.to_csv(index=False))
    return df


def read(path: Path) -> list[Check]:
    """The checks of sanity.csv (none when the file is absent)."""
    if not path.exists():
        return []
    try:
        df = pd.read_csv(path, keep_default_na=False)
        records = [{str(k): v for k, v in r.items()} for r in df.to_dict("records")]
        return [Check(**{**r, "passed": str(r["passed"]) == "True"}) for r in records]
    except (ValueError, TypeError, pd.errors.ParserError) as err:  # a damaged file: the sweep rewrites it
        raise StoreError(f"{path} is damaged ({err}); rerun the sweep command to rewrite it") from None


def summary(checks: list[Check]) -> str:
    """'sanity checks: N passed' plus one warning line per failure."""
    failed = [c for c in checks if not c.passed]
    head = f"sanity checks: {len(checks) - len(failed)} passed, {len(failed)} failed (sanity.csv)"
    return "\n".join([head, *(c.warning() for c in failed)])


def _slack(n_eval: float) -> float:
    return SLACK_QUERIES / max(float(n_eval), 1.0)


CleanValues = dict[tuple, float]
"""The clean rows' values by (metric, *CLEAN_KEY) (`clean_values`)."""


def clean_values(clean: pd.DataFrame) -> CleanValues:
    """The value of each clean row by (metric, *CLEAN_KEY), the first row of a key where two share it;
    a key holding NaN matches nothing, as an equality filter would. Built once per run_checks: a
    filter per lookup took 0.42 of 0.48 s for a sweep of three models, two attacks and three eps."""
    out: CleanValues = {}
    keys = clean[["metric", *CLEAN_KEY]].itertuples(index=False, name=None)
    for key, value in zip(keys, clean["value"], strict=True):
        if not any(isinstance(k, float) and math.isnan(k) for k in key):
            out.setdefault(key, float(value))
    return out


def _clean_value(clean: CleanValues, series: dict, metric: str) -> float | None:
    """The clean value of `metric` of the trained model (and evaluation) that `series` attacks."""
    return clean.get((metric, *(series[column] for column in CLEAN_KEY)))


def _eps0(clean: CleanValues, zero: pd.DataFrame) -> list[Check]:
    out = []
    for key, group in zero.groupby(ATTACK_KEY, sort=False):
        row: dict[str, Any] = dict(zip(ATTACK_KEY, key, strict=True))
        diffs = []
        for _, r in group.iterrows():
            ref = _clean_value(clean, row, r["metric"])
            if ref is not None:
                diffs.append(abs(float(r["value"]) - ref))
        if diffs:
            worst = max(diffs)
            detail = "equal to clean" if worst == 0 else f"differs from clean by {worst:.3g}"
            out.append(Check("eps0-clean", row["model"], row["train_seed"], _label(group), 0.0, "all",
                             worst, 0.0, 0.0, worst == 0, detail))  # fmt: skip
    return out


def _monotone(clean: CleanValues, attacked: pd.DataFrame) -> list[Check]:
    out = []
    headline = attacked[attacked["metric"].isin(metric_table.all_names(headline=True))]
    for key, group in headline.groupby([*ATTACK_KEY, "metric"], sort=False):
        row: dict[str, Any] = dict(zip([*ATTACK_KEY, "metric"], key, strict=True))
        ref = _clean_value(clean, row, row["metric"])
        series = group.sort_values("eps")
        sign = metric_table.get_metric(row["metric"]).sign  # a rise of a lower-is-better metric is a fall
        values = [sign * v for v in ([ref] if ref is not None else []) + series["value"].astype(float).tolist()]
        eps = ([0.0] if ref is not None else []) + series["eps"].astype(float).tolist()
        if len(values) < 2:
            continue
        rises = [(values[i + 1] - values[i], eps[i + 1]) for i in range(len(values) - 1)]
        rise, at = max(rises)
        tol = _slack(series["n_eval"].iloc[0])
        detail = f"rises by {100 * rise:.1f} points at {format_eps(at)}" if rise > tol else "non-increasing"
        out.append(Check("monotone", row["model"], row["train_seed"], _label(group), at, row["metric"],
                         rise, 0.0, tol, rise <= tol, detail))  # fmt: skip
    return out


def _pgd_vs_fgsm(attacked: pd.DataFrame, probes: pd.DataFrame) -> list[Check]:
    rows = pd.concat([attacked, probes[probes["eps"] > 0]]) if not probes.empty else attacked
    rows = rows[rows["metric"].isin(metric_table.all_names(headline=True))]
    shared = [c for c in ATTACK if c not in ("attack", "attack_params", "norm")]
    key = [*CLEAN_KEY, *shared, "eps", "metric"]
    pgd = rows[rows["attack"] == "pgd"].drop_duplicates([*key, "attack_params"])
    fgsm = rows[rows["attack"] == "fgsm"].drop_duplicates(key)
    out = []
    for _, r in pgd.merge(fgsm, on=key, suffixes=("", "_fgsm")).iterrows():
        tol = _slack(r["n_eval"])
        value, ref = float(r["value"]), float(r["value_fgsm"])
        weaker = metric_table.get_metric(r["metric"]).sign * (value - ref) > tol
        detail = f"PGD {100 * value:.1f} vs FGSM {100 * ref:.1f}" if weaker else "PGD at least as strong"
        out.append(Check("pgd<=fgsm", r["model"], int(r["train_seed"]), _label(r), float(r["eps"]), r["metric"],
                         value, ref, tol, not weaker, detail))  # fmt: skip
    return out


def _above_chance(clean: pd.DataFrame, chance: float) -> list[Check]:
    """A clean model must score its Rank-1 (accuracy) above chance by more than 3 binomial
    standard deviations over n_eval: one within noise of chance is broken or untrained, and its
    attacked numbers say nothing (every attack 'fails' against it)."""
    out = []
    for _, r in clean[clean["metric"].isin(metric_table.all_names(chance=True))].iterrows():
        value, n = float(r["value"]), max(float(r["n_eval"]), 1.0)
        tol = 3 * math.sqrt(chance * (1 - chance) / n)
        ok = value > chance + tol
        name = metric_table.label(r["metric"])
        detail = f"clean {name} {100 * value:.1f} vs chance {100 * chance:.1f}"
        if not ok:
            detail += ": within noise of chance, a broken or untrained model (its attacked numbers mean nothing)"
        out.append(Check("above-chance", r["model"], int(r["train_seed"]), "none", 0.0, r["metric"], value, chance,
                         tol, ok, detail))  # fmt: skip
    return out


def _in_budget(attacked: pd.DataFrame, projecting: frozenset[str]) -> list[Check]:
    """Per attack series, the largest change the final projection made to the attack's output
    (CSV `projected`): more than rounding means the search left the budget or [0, 1] itself."""
    if "projected" not in attacked.columns or attacked.empty:
        return []
    rows = attacked[~attacked["attack"].isin(projecting)]
    moved = pd.to_numeric(rows["projected"], errors="coerce")
    rows = rows.assign(moved=moved)[moved.notna()]
    out = []
    for _, group in rows.groupby(ATTACK_KEY, sort=False):
        worst = group.iloc[int(group["moved"].to_numpy().argmax())]
        value = float(worst["moved"])
        ok = value <= PROJECTION_ROUNDING
        detail = ("within its budget and [0, 1]" if ok else
                  f"its output left the budget or [0, 1] by up to {value:.3g} and was projected back: a bug in the "
                  "attack's search (its numbers are those of the projected images)")  # fmt: skip
        out.append(Check("in-budget", worst["model"], int(worst["train_seed"]), _label(worst), float(worst["eps"]),
                         "all", value, 0.0, PROJECTION_ROUNDING, ok, detail))  # fmt: skip
    return out


PROJECTION_ROUNDING = 1e-5  # float32 arithmetic on [0, 1] pixels; one 8-bit level is 3.9e-3


def _large_eps(probes: pd.DataFrame, chance: float) -> list[Check]:
    if probes.empty:
        return []
    top1 = metric_table.all_names(chance=True)
    large = probes[probes["metric"].isin(top1) & probes["eps"].astype(float).isin(list(LARGE_EPS.values()))]
    out = []
    for _, r in large.iterrows():
        value = float(r["value"])
        tol = max(NEAR_CHANCE, 3 * math.sqrt(chance * (1 - chance) / max(float(r["n_eval"]), 1.0)))
        ok = value <= chance + tol
        name = metric_table.label(r["metric"])
        detail = (f"{name} {100 * value:.1f} vs chance {100 * chance:.1f}: gradient masking or a broken attack?"
                  if not ok else "near chance")  # fmt: skip
        detail += f" ({int(r['steps'])} steps of {format_eps(float(r['step_size']))})"
        out.append(Check("large-eps", r["model"], int(r["train_seed"]), _label(r), float(r["eps"]), r["metric"],
                         value, chance, tol, ok, detail))  # fmt: skip
    return out


def _label(rows: pd.DataFrame | pd.Series) -> str:
    """The attack as tables name it (`pgd:steps=1`), from a series' rows or one row."""
    row = rows.iloc[0] if isinstance(rows, pd.DataFrame) else rows
    label = row.get("attack_label")
    return label if isinstance(label, str) and label else str(row["attack"])
