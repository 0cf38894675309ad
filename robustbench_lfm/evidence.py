"""Tables that prove their numbers: each cell's headline values against its per-query rows.

A results row of a metric with a per-query record (robustbench_lfm.metric_table: Rank-1 and
accuracy from `hit`, mAP from `ap`) is the mean of that cell's rows in queries.csv. `check` and
`report` recompute the means and refuse, in one line naming the cell, a table whose values
disagree with their evidence (a value edited by hand, a table from one run beside the queries of
another). The sweep records each table's sha256 in manifest.json (`digests`); `check` and
`report` warn when a table no longer has it (`warn_if_changed`). Reads only the CSVs; torch-free.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pandas as pd

from robustbench_lfm import metric_table
from robustbench_lfm.hashing import file_sha256
from robustbench_lfm.store import ResultStore, StoreError

TOLERANCE = 1e-6  # the mean of the written per-query values against the written cell value


class EvidenceError(StoreError):
    """A results table disagrees with its per-query rows; the message names the cell and the fix."""


def verify(results: pd.DataFrame, queries_path: Path, table: Path) -> int:
    """Check every verifiable value of `results` (read from `table`) against `queries_path`;
    returns how many were checked (0 when there is no queries.csv to check against).

    Raises:
        EvidenceError: a value disagrees with the mean of its cell's per-query rows, or a cell of
            a metric with a per-query record has no rows in queries.csv.
    """
    if not queries_path.is_file() or results.empty:
        return 0
    queries = ResultStore.queries(queries_path).read()
    checked = 0
    for metric in metric_table.METRICS.values():
        column = metric.query_column
        rows = results[results["metric"] == metric.name]
        if not column or rows.empty or column not in queries.columns:
            continue
        values = pd.to_numeric(queries[column], errors="coerce")
        means = values.groupby([queries["cell_id"], queries["rerank"].fillna("")]).agg(["mean", "count"])
        for _, row in rows.iterrows():
            key = (str(row["cell_id"]), "" if pd.isna(row["rerank"]) else str(row["rerank"]))
            if key not in means.index:
                raise EvidenceError(
                    f"{table}: cell {key[0]} ({row['model']}, {row['attack']}) has no per-query rows in "
                    f"{queries_path.name}, so its {metric.name} cannot be verified; rerun the sweep to rebuild them"
                )
            mean, count = float(means.at[key, "mean"]), int(means.at[key, "count"])  # type: ignore[arg-type]
            if abs(float(row["value"]) - mean) > TOLERANCE:
                raise EvidenceError(
                    f"{table}: cell {key[0]} ({row['model']}, {row['attack']}) records {metric.name} "
                    f"{float(row['value']):.4f}, but its {count} rows in {queries_path.name} give "
                    f"{mean:.4f}: the table was edited or mixed with another run's; rerun the sweep"
                )
            checked += 1
    return checked


def verify_members(members: pd.DataFrame, queries_path: Path, table: Path) -> int:
    """Check that each ensemble cell's per-query outcome in queries.csv (`hit`, `ap`) is the worst
    over its members in members.csv (Rank-1 hit only when no member pushed the first match past
    rank 1; AP the lowest); returns the queries checked.

    Raises:
        EvidenceError: a query's outcome is not the worst of its members', or it has none.
    """
    if members.empty or not queries_path.is_file():
        return 0
    queries = ResultStore.queries(queries_path).read()
    key = ["cell_id", "rerank", "query"]
    m = members.assign(rerank=members["rerank"].fillna(""), query=pd.to_numeric(members["query"]),
                       first_match=pd.to_numeric(members["first_match"]), ap=pd.to_numeric(members["ap"]))  # fmt: skip
    worst = m.groupby(key).agg(rank=("first_match", "max"), ap=("ap", "min"))
    q = queries.assign(rerank=queries["rerank"].fillna(""), query=pd.to_numeric(queries["query"]))
    q = q[q["cell_id"].isin(set(m["cell_id"]))].set_index(key)
    joined = q.join(worst, how="left", rsuffix="_right")
    hit = pd.to_numeric(joined["hit"], errors="coerce")
    bad = joined[
        joined["rank"].isna()
        | (hit != (joined["rank"] == 1).astype(float))
        | ((pd.to_numeric(joined["ap"], errors="coerce") - joined["ap_right"]).abs() > TOLERANCE)
    ]
    if not bad.empty:
        cell, _, query = bad.index[0]
        raise EvidenceError(
            f"{table}: ensemble cell {cell} query {query}: its outcome in {queries_path.name} is not the worst "
            f"of its members' here: the tables were edited or mixed with another run's; rerun the sweep"
        )
    return len(joined)


def verify_members_of(run_dir: Path) -> int:
    """`verify_members` on a run directory's members.csv and queries.csv (0 without members.csv)."""
    path = run_dir / "members.csv"
    if not path.is_file():
        return 0
    return verify_members(ResultStore.members(path).read(), run_dir / "queries.csv", path)


TABLES = ("results.csv", "probes.csv", "queries.csv", "cmc.csv", "members.csv")


def digests(run_dir: Path) -> dict[str, str]:
    """The sha256 of each table of a run directory (manifest.json `tables`)."""
    return {name: file_sha256(run_dir / name) for name in TABLES if (run_dir / name).is_file()}


def warn_if_changed(run_dir: Path) -> list[str]:
    """Warn about each table whose sha256 is not the one the last sweep recorded (edited, or
    replaced, after the run); returns their names. A manifest without digests says nothing."""
    try:
        recorded = json.loads((run_dir / "manifest.json").read_text()).get("tables") or {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        recorded = {}
    changed = [name for name, sha in digests(run_dir).items() if name in recorded and recorded[name] != sha]
    for name in changed:
        warnings.warn(
            f"{run_dir / name} is not the table the sweep wrote (its sha256 differs from manifest.json's): edited "
            "or replaced after the run",
            stacklevel=2,
        )
    return changed
