"""The report's statistics on simulated runs: how often they claim a difference that is not there,
and how often they find one that is.

Usage: python scripts/simulate_tests.py [--trials 400] [--queries 277] [--seed-sd 0.02] [--seed 0]

Each trial simulates one run's per-query Rank-1 hits for three models (`plain` and two others)
under three conditions (the table's columns), at 1, 2, 3 and 5 training seeds:

    hit(query q, model m, seed s, condition c) ~ Bernoulli(clip(p_qc + effect_m + u_msc, 0, 1))

with p_qc a query's difficulty shared by every model and seed (the queries are the same images:
a paired design), u_msc ~ N(0, seed-sd) the training seed's own luck per condition, and
effect_m the model's true difference from `plain`; a query's AP is 1 on a hit, else U(0.05, 0.5).
It then runs the report's own code on the
simulated results.csv and queries.csv (robustbench_lfm/report/tables.py: `pair_tests` for the
paired tests, `column_leaders` and `marked` for bold) and counts:

* `test rejects`: the share of trials in which the paired test of model `b` against `plain`, clean
  column, gives p < 0.05 (with one seed this is the query-level comparison of two checkpoints the
  report labels as such, not a method test);
* `bold anywhere`: the share of trials in which any column has a bold mark (Holm over the columns);
* `bold right`: the share in which bold goes to the model that is truly best in a column.

Under the null (every effect 0) `test rejects` is the test's false-positive rate and `bold
anywhere` the table's family-wise false-positive rate; with a true effect they are its power.
The stated detectable difference (`detectable`, tests.csv) is printed beside: the median over
trials of the difference the seed-level test would detect with 80% power.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from robustbench_lfm.report.tables import aggregate, column_leaders, marked, pair_tests
from robustbench_lfm.stats import binomial_se

CONDITIONS = ("clean", "pgd 4/255", "pgd 8/255")
BASE = {"clean": 0.85, "pgd 4/255": 0.45, "pgd 8/255": 0.15}
EPS = {"clean": 0.0, "pgd 4/255": 4 / 255, "pgd 8/255": 8 / 255}


def simulate(rng: np.random.Generator, effects: dict[str, float], seeds: int, queries: int, seed_sd: float):
    """(results, queries) frames of one simulated run, in the columns the report reads."""
    results, outcomes = [], []
    difficulty = {c: np.clip(rng.normal(BASE[c], 0.25, queries), 0, 1) for c in CONDITIONS}
    for model, effect in effects.items():
        for seed in range(seeds):
            for condition in CONDITIONS:
                p = np.clip(difficulty[condition] + effect + rng.normal(0, seed_sd), 0, 1)
                hits = (rng.random(queries) < p).astype(int)
                ap = np.where(hits == 1, 1.0, rng.uniform(0.05, 0.5, queries))  # a hit ranks its match first
                cell = f"{model}-{seed}-{condition}"
                base = {"cell_id": cell, "rerank": "", "row": model, "condition": condition, "eps": EPS[condition],
                        "train_seed": seed, "n_eval": queries, "task": "reid"}  # fmt: skip
                results.append({**base, "metric": "rank1", "value": hits.mean()})
                results.append({**base, "metric": "mAP", "value": ap.mean()})
                outcomes.append(pd.DataFrame({"cell_id": cell, "rerank": "", "query": np.arange(queries), "hit": hits,
                                              "ap": ap}))  # fmt: skip
    return pd.DataFrame(results), pd.concat(outcomes, ignore_index=True)


def trial(rng: np.random.Generator, effects: dict[str, float], seeds: int, queries: int, seed_sd: float) -> dict:
    """One simulated run through the report's tests and marks."""
    df, outcomes = simulate(rng, effects, seeds, queries, seed_sd)
    tests = pair_tests(df, outcomes, [("b", "plain")])
    clean = tests[(tests["condition"] == "clean") & (tests["metric"] == "rank1")].iloc[0]
    cells = df.assign(se=[binomial_se(v, n) for v, n in zip(df["value"], df["n_eval"], strict=True)])  # a stand-in
    models = list(effects)
    columns = [(c, m) for c in CONDITIONS for m in ("rank1", "mAP")]
    leaders = column_leaders(cells, aggregate(cells), models, columns)
    bold = marked(leaders)
    best = max(effects, key=lambda m: effects[m])
    truly_best = len({round(v, 9) for v in effects.values()}) > 1
    return {
        "rejects": clean["p_value"] < 0.05,
        "bold_any": any(bold.values()),
        "bold_right": truly_best and any(best in marks for marks in bold.values()),
        "detectable": clean["detectable"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=400)
    parser.add_argument("--queries", type=int, default=277, help="synthreid's default test split has 277 queries")
    parser.add_argument("--seed-sd", type=float, default=0.02, help="seed-to-seed sd of a model's Rank-1 (fraction)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    settings = [("null: b = c = plain", {"plain": 0.0, "b": 0.0, "c": 0.0})] + [
        (f"b {d:+.0%} over plain, c = plain", {"plain": 0.0, "b": d, "c": 0.0}) for d in (0.03, 0.06, 0.10)
    ]
    print(f"{args.trials} trials per row; {args.queries} queries; seed sd {100 * args.seed_sd:.1f} points; "
          f"3 models x 6 columns (Rank-1 and mAP, 3 conditions); alpha 0.05\n")  # fmt: skip
    rows = []
    start = time.perf_counter()
    for name, effects in settings:
        for seeds in (1, 2, 3, 5):
            runs = [trial(rng, effects, seeds, args.queries, args.seed_sd) for _ in range(args.trials)]
            detectable = np.nanmedian([r["detectable"] for r in runs]) if seeds > 1 else np.nan
            rows.append({
                "setting": name, "seeds": seeds,
                "test rejects": np.mean([r["rejects"] for r in runs]),
                "bold anywhere": np.mean([r["bold_any"] for r in runs]),
                "bold right": np.mean([r["bold_right"] for r in runs]) if effects["b"] else np.nan,
                "detectable (points)": 100 * detectable,
            })  # fmt: skip
    table = pd.DataFrame(rows)
    for column in ("test rejects", "bold anywhere", "bold right"):
        table[column] = table[column].map(lambda v: "-" if np.isnan(v) else f"{100 * v:.1f}%")
    table["detectable (points)"] = table["detectable (points)"].map(lambda v: "-" if np.isnan(v) else f"{v:.1f}")
    print(table.to_string(index=False))
    print(f"\n({time.perf_counter() - start:.0f} s; one seed: the test compares two checkpoints over the queries "
          "and the report marks no bold)")  # fmt: skip


if __name__ == "__main__":
    main()
