"""`lfm-bench check RUN_DIR --baseline BASELINE.csv`: a robustness regression gate for CI.

The run's results.csv is compared with a baseline table cell by cell. Cells match on what defines
them (dataset, model, seed, attack with objective, norm, side, eps, threat options, evaluation
options, metric), not on cell ids, so a baseline survives a version bump. A matched metric
*regressed* when it fell by more than `tolerance` (absolute, a fraction: 0.02 = 2 points) **and**
the fall is significant at `alpha`:

* proportions (Rank-k, accuracy): one-sided two-proportion z-test over n_eval queries or images;
* mAP: one-sided z-test of the fall against the combined bootstrap standard error over queries,
  sqrt(SE_run^2 + SE_baseline^2), from the run's queries.csv and the one beside the baseline
  file (when it has none, SE_baseline is bounded by sqrt(m (1 - m) / n), the largest standard
  error a mean of n values in [0, 1] with mean m can have); without the run's queries.csv
  the tolerance alone decides.

mINP is not gated (no per-query record, so no test). A baseline cell with no match in the run
is *missing* and also fails the gate. Exit status: 0
when nothing regressed or went missing, 1 otherwise (2 for bad input).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from robustbench_lfm.spec import format_eps
from robustbench_lfm.stats import binomial_se, bootstrap_se, two_proportion_p
from robustbench_lfm.store import QUERY_COLUMNS, ResultStore

KEY = ["dataset", "model", "train_seed", "attack", "objective", "norm", "perturbed", "eps", "surrogate",
       "quantize", "distance", "ap", "flip", "rerank", "metric"]  # fmt: skip
PROPORTIONS = ("rank1", "rank5", "rank10", "accuracy")
GATED = (*PROPORTIONS, "mAP")  # mINP has no per-query record, hence no test: it is not gated


class CheckError(ValueError):
    """A table cannot be compared; the message names the fix."""


@dataclass(frozen=True)
class Finding:
    """One compared metric of one cell."""

    model: str
    train_seed: int
    attack: str
    eps: float
    rerank: str
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

    @property
    def passed(self) -> bool:
        """No regression and nothing missing."""
        return not self.regressions and not self.missing

    def to_json(self) -> str:
        """The result for dashboards."""
        return json.dumps(
            {"passed": self.passed, "compared": self.compared, "tolerance": self.tolerance, "alpha": self.alpha,
             "regressions": [asdict(f) for f in self.regressions], "missing": self.missing},
            indent=2,
        )  # fmt: skip

    def to_text(self) -> str:
        """Lines for a terminal or a CI log."""
        lines = [
            f"compared {self.compared} metrics against the baseline (tolerance {100 * self.tolerance:.1f} points, "
            f"alpha {self.alpha}): {len(self.regressions)} regressed, {len(self.missing)} missing"
        ]
        for f in self.regressions:
            where = f"{f.model} seed {f.train_seed} {_condition(f.attack, f.eps)}{' rerank' if f.rerank else ''}"
            change = f"{100 * f.baseline:.1f} -> {100 * f.value:.1f} ({100 * f.change:+.1f} points, p={f.p_value:.2g})"
            lines.append(f"REGRESSED {where} {f.metric}: {change}")
        for m in self.missing:
            where = f"{m['model']} seed {m['train_seed']} {_condition(m['attack'], m['eps'])}"
            lines.append(f"MISSING {where} {m['metric']}")
        lines.append("PASSED" if self.passed else "FAILED")
        return "\n".join(lines)


def _condition(attack: str, eps: float) -> str:
    return "clean" if attack == "none" else f"{attack} {format_eps(eps)}"


def read_table(path: Path) -> pd.DataFrame:
    """A results table with the matching columns (CheckError otherwise)."""
    if not path.is_file():
        raise CheckError(f"{path} does not exist; give a results.csv written by `lfm-bench run`")
    df = ResultStore(path).read()
    missing = sorted({*KEY, "value", "n_eval"} - set(df.columns))
    if missing:
        raise CheckError(f"{path} lacks the column(s) {', '.join(missing)}; is it an lfm-bench results table?")
    return df.astype({"eps": float, "train_seed": int, "quantize": str, "flip": str})


def compare(run_dir: Path, baseline: Path, tolerance: float = 0.02, alpha: float = 0.05) -> CheckResult:
    """Compare RUN_DIR/results.csv with `baseline` (module docstring)."""
    if not 0 <= tolerance < 1 or not 0 < alpha < 1:
        raise CheckError(f"--tolerance {tolerance} must lie in [0, 1) and --alpha {alpha} in (0, 1)")
    current, base = read_table(run_dir / "results.csv"), read_table(baseline)
    base = base[base["metric"].isin(GATED)]
    merged = base.merge(current, on=KEY, how="left", suffixes=("_base", ""), indicator=True)
    missing = merged[merged["_merge"] == "left_only"]
    found = merged[merged["_merge"] == "both"]
    ses = _query_errors(run_dir / "queries.csv", found, "cell_id")
    base_ses = _query_errors(baseline.with_name("queries.csv"), found, "cell_id_base")
    regressions = []
    for _, r in found.iterrows():
        se = ses.get((r["cell_id"], r["rerank"], r["metric"]), math.nan)
        bound = binomial_se(float(r["value_base"]), int(r["n_eval_base"]))  # AP in [0, 1]: var <= m (1 - m)
        base_se = base_ses.get((r["cell_id_base"], r["rerank"], r["metric"]), bound)
        finding = _judge(r, math.hypot(se, base_se), tolerance, alpha)
        if finding.regressed:
            regressions.append(finding)
    cols = ["model", "train_seed", "attack", "eps", "rerank", "metric"]
    return CheckResult(len(found), regressions, missing[cols].to_dict("records"), tolerance, alpha)


def _judge(r: pd.Series, se: float, tolerance: float, alpha: float) -> Finding:
    base, value = float(r["value_base"]), float(r["value"])
    fall = base - value
    if r["metric"] in PROPORTIONS:
        p = two_proportion_p(base, int(r["n_eval_base"]), value, int(r["n_eval"]))
    elif math.isfinite(se) and se > 0:  # mAP
        p = 0.5 * math.erfc(fall / se / math.sqrt(2))
    else:
        p = math.nan  # no queries.csv: the tolerance alone decides
    regressed = fall > tolerance and (p < alpha if math.isfinite(p) else True)
    return Finding(r["model"], int(r["train_seed"]), r["attack"], float(r["eps"]), r["rerank"], r["metric"],
                   base, value, value - base, p, regressed)  # fmt: skip


def _query_errors(path: Path, rows: pd.DataFrame, id_column: str) -> dict[tuple[str, str, str], float]:
    """Bootstrap SE of each matched cell's mAP from a queries.csv ({} when there is none)."""
    if not path.is_file():
        return {}
    queries = ResultStore(path, QUERY_COLUMNS).read()
    maps = rows[rows["metric"] == "mAP"]
    wanted = set(zip(maps[id_column], maps["rerank"], strict=True))
    return {
        (cell, rerank, "mAP"): bootstrap_se(g["ap"].to_numpy(dtype=float))
        for (cell, rerank), g in queries.groupby(["cell_id", "rerank"])
        if (cell, rerank) in wanted
    }
