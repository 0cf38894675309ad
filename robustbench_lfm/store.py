"""The tidy tables of a run, appended atomically.

`results.csv` (DESIGN.md): one row per cell x metric. `cmc.csv`: one row per cell x rank k, the
CMC curve up to rank 50 for the CMC plot. `queries.csv`: one row per cell x scored query (or test
image): its Rank-1 hit (or correct class) and AP, which the report's standard errors and paired
tests resample. Appending rewrites the file through a temp file and a
rename, so a crash leaves either the old table or the new one, never half a row. The runner writes
a cell's curve first and its results last: results.csv is the record of what is done, so an
interrupted sweep resumes where it stopped, and a curve written twice replaces the first.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

import pandas as pd

COLUMNS = (
    "run_id", "cell_id", "task", "dataset", "model", "backbone", "regularizer", "model_params",
    "train_seed", "attack", "objective", "norm", "eps", "steps", "step_size", "perturbed",
    "surrogate", "quantize", "distance", "ap", "flip", "rerank", "metric", "value", "n_eval", "wall_s",
    "checkpoint_sha256", "lfm_bench_version", "torch_version", "git_sha", "created_at",
)  # fmt: skip


CMC_COLUMNS = ("cell_id", "model", "attack", "eps", "train_seed", "rerank", "rank", "cmc")
QUERY_COLUMNS = ("cell_id", "rerank", "query", "hit", "ap")


class StoreError(RuntimeError):
    """A result file this version cannot append to; the message names the fix."""


class ResultStore:
    """A tidy CSV of the run: `results.csv` (the default columns), `cmc.csv` (CMC_COLUMNS) or
    `queries.csv` (QUERY_COLUMNS)."""

    def __init__(self, path: Path, columns: tuple[str, ...] = COLUMNS) -> None:
        self.path = Path(path)
        self.columns = columns

    def cell_ids(self) -> set[str]:
        """Ids of the cells already recorded."""
        if not self.path.exists():
            return set()
        with open(self.path, newline="") as fh:
            return {row["cell_id"] for row in csv.DictReader(fh)}

    def append(self, rows: list[dict[str, Any]], replace_cells: bool = False) -> None:
        """Append rows (dicts keyed by the columns) atomically.

        Args:
            rows: the new rows.
            replace_cells: first drop the rows whose cell_id is among the new rows' (cmc.csv, queries.csv).
        """
        missing = set(self.columns) - set().union(*rows) if rows else set()
        if missing:
            raise ValueError(f"rows for {self.path.name} lack columns {sorted(missing)}")
        old = self.path.read_text() if self.path.exists() else ""
        header = old.split("\n", 1)[0]
        if old and header != ",".join(self.columns):
            raise StoreError(
                f"{self.path} has other columns than this lfm-bench writes (an older version made it); "
                "resume it with that version, or start a new run with --out"
            )
        cells = {r["cell_id"] for r in rows}
        if replace_cells and any(c in old for c in cells):  # only a resumed cell needs the parse
            old = _without_cells(old, cells)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.columns, extrasaction="raise", lineterminator="\n")
        if not old:
            writer.writeheader()
        writer.writerows(rows)
        tmp = self.path.with_suffix(f".tmp{os.getpid()}")
        with open(tmp, "w", newline="") as fh:
            fh.write(old + buf.getvalue())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)

    def read(self) -> pd.DataFrame:
        """The table as a DataFrame (empty with the columns when nothing is recorded)."""
        if not self.path.exists():
            return pd.DataFrame(columns=list(self.columns))
        return pd.read_csv(self.path, keep_default_na=False, na_values={"value": [""], "eps": [""]})


def _without_cells(text: str, cells: set[str]) -> str:
    """CSV text without the rows of `cells` (header kept)."""
    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows:
        return text
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(r for r in rows if r["cell_id"] not in cells)
    return buf.getvalue()
