"""The tidy tables of a run, appended atomically and verified before they are trusted.

`results.csv` (DESIGN.md): one row per cell x metric. `cmc.csv`: one row per cell x rank k, the
CMC curve up to rank 50 for the CMC plot. `queries.csv`: one row per cell x scored query (or test
image): its outcome in each per-query column of the metric table (robustbench_lfm.metric_table:
the Rank-1 hit or correct class, the AP), which the report's standard errors and paired
tests resample. Appending rewrites the file through a temp file, fsync and a rename
(robustbench_lfm.files.atomic_write), so a crash leaves either the old table or the new one, never half a row.

Nothing read back is trusted unchecked (`scan`): a header that is not this version's is refused
(StoreError) before any work; a last line with no line end (a torn write, or a file cut by hand)
and any row of the wrong width are dropped with a warning, and their cells count as not done, so a
resumed sweep recomputes them. The runner writes a cell's side rows (queries, curve) first and its
results last, and a cell is done only when every metric row it should have is present and holds a
finite value in [0, 1] and its side rows exist (runner.py).
"""

from __future__ import annotations

import csv
import io
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from robustbench_lfm import metric_table
from robustbench_lfm.files import atomic_write

COLUMNS = (
    "run_id", "cell_id", "task", "dataset", "data_params", "test_dataset", "test_data_params", "train_fraction",
    "model", "backbone", "regularizer",
    "model_params", "pretrained_sha256", "recipe_key", "train_seed", "attack", "attack_label", "attack_params",
    "objective", "norm", "eps", "severity", "steps", "step_size", "perturbed", "surrogate", "quantize", "distance",
    "ap", "flip", "precision", "attack_precision", "rerank", "metric", "value", "n_eval", "eval_subset", "wall_s",
    "checkpoint_sha256", "lfm_bench_version", "torch_version", "git_sha", "created_at",
)  # fmt: skip


CMC_COLUMNS = ("cell_id", "model", "attack", "eps", "train_seed", "rerank", "rank", "cmc")
QUERY_COLUMNS = ("cell_id", "rerank", "query", *metric_table.query_columns())


class StoreError(ValueError):
    """A result file this version cannot use; the message names the fix."""


@dataclass
class Scan:
    """A table as read back: the rows that parse, and what was dropped."""

    rows: list[dict[str, str]] = field(default_factory=list)
    torn: bool = False  # the last line had no line end
    ragged: int = 0  # rows of the wrong width

    @property
    def damaged(self) -> bool:
        """Whether anything was dropped."""
        return self.torn or self.ragged > 0


class ResultStore:
    """A tidy CSV of the run: `results.csv` and `probes.csv` (the default columns), `cmc.csv`
    (CMC_COLUMNS) or `queries.csv` (QUERY_COLUMNS)."""

    def __init__(self, path: Path, columns: tuple[str, ...] = COLUMNS) -> None:
        self.path = Path(path)
        self.columns = columns

    def _text(self) -> str:
        if not self.path.exists():
            return ""
        try:
            return self.path.read_text()
        except UnicodeDecodeError:
            raise StoreError(f"{self.path} is not a text CSV; move it away or start a new run with --out") from None

    def scan(self) -> Scan:
        """The rows that parse (StoreError when the header is not this version's)."""
        text = self._text()
        if not text:
            return Scan()
        header, _, body = text.partition("\n")
        if header != ",".join(self.columns):
            raise StoreError(
                f"{self.path} has other columns than this lfm-bench writes (an older version, or not a results "
                "table); resume it with the version that made it, or start a new run with --out"
            )
        torn = bool(body) and not body.endswith("\n")
        lines = body.split("\n")[:-1]  # the empty string after the last line end, or a torn last line
        out = Scan(torn=torn)
        for fields in csv.reader(lines):
            if len(fields) != len(self.columns):
                out.ragged += 1
                continue
            out.rows.append(dict(zip(self.columns, fields, strict=True)))
        return out

    def repair(self) -> Scan:
        """Scan, and when rows had to be dropped, warn and rewrite the file without them."""
        scan = self.scan()
        if scan.damaged:
            what = ", ".join(
                part for part in ("a torn last line" if scan.torn else "", f"{scan.ragged} ragged row(s)") if part
            )
            warnings.warn(f"{self.path}: dropped {what}; their cells will be recomputed", stacklevel=2)
            atomic_write(self.path, _csv_text(self.columns, scan.rows, header=True))
        return scan

    def cell_ids(self) -> set[str]:
        """Ids of the cells with at least one row that parses."""
        return {row["cell_id"] for row in self.scan().rows}

    def append(self, rows: list[dict[str, Any]], replace_cells: bool = False) -> None:
        """Append rows (dicts keyed by the columns) atomically.

        Args:
            rows: the new rows.
            replace_cells: first drop the rows whose cell_id is among the new rows' (a cell
                recomputed because its record was incomplete).
        """
        missing = set(self.columns) - set().union(*rows) if rows else set()
        if missing:
            raise ValueError(f"rows for {self.path.name} lack columns {sorted(missing)}")
        old = self._text()
        cells = {r["cell_id"] for r in rows}
        if old and (not old.endswith("\n") or (replace_cells and any(c in old for c in cells))):
            kept = [r for r in self.repair().rows if not (replace_cells and r["cell_id"] in cells)]
            old = _csv_text(self.columns, kept, header=True)  # the parse only when a cell is replaced
        elif old and old.partition("\n")[0] != ",".join(self.columns):
            self.scan()  # raises StoreError naming the fix
        atomic_write(
            self.path, (old or _csv_text(self.columns, [], header=True)) + _csv_text(self.columns, rows, False)
        )

    def read(self) -> pd.DataFrame:
        """The rows that parse as a DataFrame (empty with the columns when nothing is recorded)."""
        return self._frame(self.scan().rows)

    def _frame(self, rows: list[dict[str, str]]) -> pd.DataFrame:
        if not rows:
            return pd.DataFrame(columns=list(self.columns))
        text = io.StringIO(_csv_text(self.columns, rows, header=True))
        empty_is_nan = {c: [""] for c in ("value", "eps", "cmc", *metric_table.query_columns())}
        df = pd.read_csv(text, keep_default_na=False, na_values=empty_is_nan, dtype={"rerank": str})
        if "value" in df.columns:  # a value that is not a number reads as NaN: never a valid metric
            df["value"] = pd.to_numeric(df["value"], errors="coerce")
        return df

    def read_valid(self) -> pd.DataFrame:
        """`read`, refusing a damaged table (a torn last line, ragged rows) and a metric value that is
        empty, non-numeric, NaN or outside [0, 1]."""
        scan = self.scan()
        if scan.damaged:
            raise StoreError(f"{self.path} is damaged (a torn last line or ragged rows); rerun the sweep to repair it")
        df = self._frame(scan.rows)
        if "value" in df.columns and len(df):
            bad = df[~df["value"].between(0, 1)]
            if len(bad):
                cells = ", ".join(sorted(set(bad["cell_id"].astype(str)))[:5])
                raise StoreError(
                    f"{self.path} has {len(bad)} row(s) with no valid value (cells {cells}); rerun the sweep "
                    "command to recompute them"
                )
        return df


def valid_value(text: str) -> bool:
    """Whether a CSV `value` is a finite number in [0, 1] (a metric that can be trusted)."""
    try:
        value = float(text)
    except ValueError:
        return False
    return math.isfinite(value) and 0.0 <= value <= 1.0


def _csv_text(columns: tuple[str, ...], rows: list[dict[str, Any]], header: bool) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="raise", lineterminator="\n")
    if header:
        writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()
