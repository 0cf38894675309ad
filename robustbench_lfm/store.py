"""The tidy result table (DESIGN.md): one row per cell x metric, appended atomically.

Appending rewrites the file through a temp file and a rename, so a crash leaves either the old
table or the new one, never half a row; cells already present are skipped by the runner, so an
interrupted sweep resumes where it stopped.
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
    "surrogate", "distance", "metric", "value", "n_eval", "wall_s", "checkpoint_sha256",
    "lfm_bench_version", "torch_version", "git_sha", "created_at",
)  # fmt: skip


class ResultStore:
    """The run's `results.csv`."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def cell_ids(self) -> set[str]:
        """Ids of the cells already recorded."""
        if not self.path.exists():
            return set()
        with open(self.path, newline="") as fh:
            return {row["cell_id"] for row in csv.DictReader(fh)}

    def append(self, rows: list[dict[str, Any]]) -> None:
        """Append rows (dicts keyed by COLUMNS) atomically."""
        missing = set(COLUMNS) - set().union(*rows) if rows else set()
        if missing:
            raise ValueError(f"result rows lack columns {sorted(missing)}")
        old = self.path.read_text() if self.path.exists() else ""
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="raise", lineterminator="\n")
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
            return pd.DataFrame(columns=list(COLUMNS))
        return pd.read_csv(self.path, keep_default_na=False, na_values={"value": [""], "eps": [""]})
