"""`lfm-bench check RUN_DIR --baseline BASELINE.csv`: a robustness regression gate for CI (a
baseline given as a run directory is read as its results.csv).

The run's results.csv is compared with a baseline table measurement by measurement. Rows match on
their full identity (robustbench_lfm.identity.MEASUREMENT: task, dataset and its options, recipe,
evaluation options, model with backbone and every parameter, seed, attack with every option and
its threat, eps, steps and step size, re-ranking, metric), not on cell ids, so a baseline survives
a version bump but a PGD-1 run never stands in for a PGD-20 baseline. A matched metric
*regressed* when it fell by more than `tolerance` (absolute, a fraction: 0.02 = 2 points) **and**
the fall is significant at `alpha`:

The metrics compared, and which test each gets, are the `gated` entries of the metric table
(robustbench_lfm.metric_table; the direction is its `higher_is_better`):

* proportions (Rank-k, accuracy): one-sided two-proportion z-test over n_eval queries or images;
* means of per-query scores (mAP): one-sided z-test of the fall against the combined bootstrap
  standard error over queries, sqrt(SE_run^2 + SE_baseline^2), from the run's queries.csv and
  the one beside the baseline file (when it has none, SE_baseline is bounded by
  sqrt(m (1 - m) / n), the largest standard error a mean of n values in [0, 1] with mean m can
  have); without the run's queries.csv the tolerance alone decides.

mINP is not gated (no per-query record, so no test). The gate fails closed: a baseline
measurement with no match in the run is *missing* (each is reported with the run's nearest
measurement of that model and attack and the identity columns that differ, or with the fact that
the run has no cell of that model and attack), and a matched run value that is empty, NaN
or outside [0, 1] is *invalid*; both fail it. A baseline that is empty, holds only a header, is
ragged, binary or non-numeric, or holds one measurement twice is bad input. Exit status: 0 when
nothing regressed, went missing or was invalid, 1 otherwise, 2 for bad input.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from robustbench_lfm import evidence, metric_table
from robustbench_lfm.identity import MEASUREMENT, canonical, labelled
from robustbench_lfm.stats import binomial_se, bootstrap_se, two_proportion_p
from robustbench_lfm.store import COLUMNS, ResultStore, StoreError, valid_value

KEY = list(MEASUREMENT)


class CheckError(ValueError):
    """A table cannot be compared; the message names the fix."""


@dataclass(frozen=True)
class Finding:
    """One compared metric of one cell (`condition` is the identity's label, `pgd:steps=1 8/255`)."""

    model: str
    train_seed: int
    condition: str
    metric: str
    baseline: float
    value: float
    change: float  # value - baseline (fraction)
    p_value: float  # one-sided: how likely a fall this large is by chance; NaN = not tested
    regressed: bool


@dataclass(frozen=True)
class CheckResult:
    """Everything `check` found."""

    compared: int
    regressions: list[Finding]
    missing: list[dict]
    tolerance: float
    alpha: float
    invalid: list[dict]
    unmatched: int = 0  # run measurements the baseline does not have (new cells: not gated)

    @property
    def passed(self) -> bool:
        """No regression, nothing missing, nothing invalid."""
        return not self.regressions and not self.missing and not self.invalid

    def to_json(self) -> str:
        """The result for dashboards."""
        return json.dumps(
            {"passed": self.passed, "compared": self.compared, "tolerance": self.tolerance, "alpha": self.alpha,
             "regressions": [asdict(f) for f in self.regressions], "missing": self.missing,
             "invalid": self.invalid, "unmatched_in_run": self.unmatched},
            indent=2,
        )  # fmt: skip

    def to_text(self) -> str:
        """Lines for a terminal or a CI log."""
        lines = [
            f"compared {self.compared} metrics against the baseline (tolerance {100 * self.tolerance:.1f} points, "
            f"alpha {self.alpha}): {len(self.regressions)} regressed, {len(self.missing)} missing, "
            f"{len(self.invalid)} invalid; {self.unmatched} run metrics have no baseline (not gated)"
        ]
        for f in self.regressions:
            change = f"{100 * f.baseline:.1f} -> {100 * f.value:.1f} ({100 * f.change:+.1f} points, p={f.p_value:.2g})"
            lines.append(f"REGRESSED {f.model} seed {f.train_seed} {f.condition} {f.metric}: {change}")
        for m in self.missing:
            why = f": {m['nearest']}" if m.get("nearest") else ""
            lines.append(f"MISSING {m['model']} seed {m['train_seed']} {m['condition']} {m['metric']}{why}")
        for m in self.invalid:
            lines.append(f"INVALID {m['model']} seed {m['train_seed']} {m['condition']} {m['metric']}: {m['value']!r}")
        lines.append("PASSED" if self.passed else "FAILED")
        return "\n".join(lines)


def read_table(path: Path, role: str) -> pd.DataFrame:
    """A results table, whole and typed (CheckError otherwise), read by column name: a table of an
    older version reads, its missing columns at the values they imply (robustbench_lfm.columns)."""
    if not path.is_file():
        what = "is not a file" if path.exists() else "does not exist"
        raise CheckError(f"{role} {path} {what}; give a results.csv written by `lfm-bench run`")
    store = ResultStore(path)
    try:
        scan = store.scan()
    except StoreError as err:  # a column this version does not know, one no older value stands for, not text
        raise CheckError(f"{role}: {err}") from None
    if not path.read_bytes().strip():
        raise CheckError(f"{role} {path} is empty; give a results.csv written by `lfm-bench run`")
    if scan.damaged:
        raise CheckError(f"{role} {path} is damaged (a torn last line or ragged rows); rewrite it with `lfm-bench run`")
    df = pd.DataFrame(scan.rows, columns=list(COLUMNS))
    try:
        df = canonical(df)
    except (ValueError, TypeError) as err:
        raise CheckError(f"{role} {path} has a non-numeric eps, step, step size or seed ({err})") from None
    duplicated = df[df.duplicated(KEY, keep=False)]
    if len(duplicated):
        raise CheckError(
            f"{role} {path} holds {len(duplicated)} rows for {duplicated[KEY].drop_duplicates().shape[0]} "
            "measurement(s): one measurement twice; rebuild it from a run directory"
        )
    return df


def _baseline_file(path: Path) -> Path:
    """The baseline's results.csv: `path` itself, or the results.csv of the run directory `path` names
    (`--baseline OLD_RUN` reads as `--baseline OLD_RUN/results.csv`, as RUN_DIR does)."""
    if not path.is_dir():
        return path
    if not (path / "results.csv").is_file():
        raise CheckError(
            f"baseline {path} is a directory with no results.csv; give a results.csv or the run directory "
            "`lfm-bench run` wrote"
        )
    return path / "results.csv"


def _baseline(path: Path) -> pd.DataFrame:
    """The baseline's gated rows: at least one, each with a valid value and a positive n_eval."""
    base = read_table(path, "baseline")
    gated = metric_table.all_names(gated=True)
    base = base[base["metric"].isin(gated)]
    if base.empty:
        raise CheckError(f"baseline {path} holds no gated metric ({', '.join(gated)}); give a results.csv with rows")
    n_eval = pd.to_numeric(base["n_eval"], errors="coerce")
    bad = ~base["value"].map(valid_value) | ~(n_eval >= 1)
    if bad.any():
        raise CheckError(f"baseline {path}: {int(bad.sum())} row(s) have no valid value or n_eval; regenerate it")
    return base.assign(value=base["value"].astype(float), n_eval=n_eval.astype(int))


def _where(rows: pd.DataFrame, side: str = "") -> list[dict]:
    """Rows as {model, train_seed, condition, metric, value} for the findings; `side` "_base" labels
    the rows by the baseline's columns (a missing measurement has no run columns)."""
    named = labelled(rows.assign(attack_label=rows[f"attack_label{side}"], value=rows[f"value{side}"]))
    return [
        {"model": r["row"], "train_seed": int(r["train_seed"]), "condition": r["condition"], "metric": r["metric"],
         "value": r.get("value")}
        for _, r in named.iterrows()
    ]  # fmt: skip


def compare(run_dir: Path, baseline: Path, tolerance: float = 0.02, alpha: float = 0.05) -> CheckResult:
    """Compare RUN_DIR/results.csv with `baseline` (module docstring)."""
    if not 0 <= tolerance < 1 or not 0 < alpha < 1:
        raise CheckError(f"--tolerance {tolerance} must lie in [0, 1) and --alpha {alpha} in (0, 1)")
    baseline = _baseline_file(baseline)
    base = _baseline(baseline)
    current = read_table(run_dir / "results.csv", "run") if (run_dir / "results.csv").exists() else None
    if current is None:
        raise CheckError(f"{run_dir} has no results.csv; give the directory `lfm-bench run` wrote")
    evidence.warn_if_changed(run_dir)
    try:  # each value against its cell's per-query rows, both sides
        evidence.verify(current, run_dir / "queries.csv", run_dir / "results.csv")
        evidence.verify(base, baseline.with_name("queries.csv"), baseline)
        evidence.verify_members_of(run_dir)
    except evidence.EvidenceError as err:
        raise CheckError(str(err)) from None
    merged = base.merge(current, on=KEY, how="left", suffixes=("_base", ""), indicator=True)
    missing = merged[merged["_merge"] == "left_only"]
    matched = merged[merged["_merge"] == "both"]
    ok = (matched["value"].map(valid_value) & (pd.to_numeric(matched["n_eval"], errors="coerce") >= 1)).astype(bool)
    invalid, found = matched.loc[~ok], matched.loc[ok].assign(value=lambda d: d["value"].astype(float))
    unmatched = len(current[current["metric"].isin(metric_table.all_names(gated=True))]) - len(matched)
    ses = _query_errors(run_dir / "queries.csv", found, "cell_id")
    base_ses = _query_errors(baseline.with_name("queries.csv"), found, "cell_id_base")
    regressions = []
    conditions = labelled(found) if len(found) else found
    for (_, r), (_, named) in zip(found.iterrows(), conditions.iterrows(), strict=True):
        se = ses.get((r["cell_id"], r["rerank"], r["metric"]), math.nan)
        bound = binomial_se(float(r["value_base"]), int(r["n_eval_base"]))  # AP in [0, 1]: var <= m (1 - m)
        base_se = base_ses.get((r["cell_id_base"], r["rerank"], r["metric"]), bound)
        finding = _judge(r, named["condition"], math.hypot(se, base_se), tolerance, alpha)
        if finding.regressed:
            regressions.append(finding)
    absent = [{**where, "nearest": nearest(row, current)} for where, (_, row) in
              zip(_where(missing, "_base"), missing.iterrows(), strict=True)]  # fmt: skip
    return CheckResult(len(found), regressions, absent, tolerance, alpha, _where(invalid), max(unmatched, 0))


def nearest(wanted: pd.Series, run: pd.DataFrame) -> str:
    """Why a baseline measurement has no match in the run, in words: the run's measurement of the
    same model and attack that differs from it in the fewest identity columns, and those columns
    (`recipe_key (baseline 3fa91c2e..., run 77b0...)`); or that the run has no cell of that model
    and attack at all."""
    same = run[(run["model"] == wanted["model"]) & (run["attack"] == wanted["attack"])]
    if same.empty:
        return f"the run has no cell of model {wanted['model']} under attack {wanted['attack']}"
    columns = [c for c in KEY if c in run.columns]
    differing = (same[columns] != wanted[columns]).sum(axis=1)
    closest = same.loc[differing.idxmin()]
    fields = [f"{c} (baseline {_short(wanted[c])}, run {_short(closest[c])})" for c in columns
              if closest[c] != wanted[c]]  # fmt: skip
    return "the nearest run measurement differs in " + ", ".join(fields)


def _short(value: object) -> str:
    text = str(value)
    return repr(text if len(text) <= 40 else text[:37] + "...")


def _judge(r: pd.Series, condition: str, se: float, tolerance: float, alpha: float) -> Finding:
    base, value = float(r["value_base"]), float(r["value"])
    metric = metric_table.get_metric(r["metric"])
    fall = metric.sign * (base - value)
    if metric.proportion:
        before, after = (base, int(r["n_eval_base"])), (value, int(r["n_eval"]))
        first, second = (before, after) if metric.higher_is_better else (after, before)
        p = two_proportion_p(*first, *second)  # how likely the second lies this far below the first
    elif math.isfinite(se) and se > 0:  # a mean of per-query scores (mAP)
        p = 0.5 * math.erfc(fall / se / math.sqrt(2))
    else:
        p = math.nan  # no queries.csv: the tolerance alone decides
    regressed = fall > tolerance and (p < alpha if math.isfinite(p) else True)
    return Finding(r["model"], int(r["train_seed"]), condition, r["metric"], base, value, value - base, p,
                   regressed)  # fmt: skip


def _query_errors(path: Path, rows: pd.DataFrame, id_column: str) -> dict[tuple[str, str, str], float]:
    """Bootstrap SE of each matched cell's per-query metrics (mAP) from a queries.csv ({} when
    there is none); proportions need none (their test is over counts)."""
    if not path.is_file():
        return {}
    try:
        queries = ResultStore.queries(path).read()
    except StoreError as err:
        raise CheckError(str(err)) from None
    scored = [m for m in metric_table.METRICS.values() if m.gated and not m.proportion and m.query_column]
    out: dict[tuple[str, str, str], float] = {}
    for metric in scored:
        rows_of = rows[rows["metric"] == metric.name]
        wanted = set(zip(rows_of[id_column], rows_of["rerank"], strict=True))
        for (cell, rerank), g in queries.groupby(["cell_id", "rerank"]):
            if (cell, rerank) in wanted:
                out[(str(cell), str(rerank), metric.name)] = bootstrap_se(g[metric.query_column].to_numpy(dtype=float))
    return out
