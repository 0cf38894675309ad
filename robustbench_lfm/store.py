"""The tidy tables of a run, appended atomically and verified before they are trusted.

`results.csv` (results/README.md): one row per cell x metric. `cmc.csv`: one row per cell x rank k, the
CMC curve up to rank 50 for the CMC plot. `queries.csv`: one row per cell x scored query (or test
image): its outcome in each per-query column of the metric table (robustbench_lfm.metric_table:
the Rank-1 hit or correct class, the AP), which the report's standard errors and paired
tests resample. `members.csv`: one row per ensemble cell (auto-reid) x member x scored query: the
member's own first-match rank and AP, from which the report says which member decided.
Appending rewrites the file through a temp file, fsync and a rename (robustbench_lfm.files.atomic_write),
so a crash leaves either the old table or the new one, never half a row.

Tables are read by header name (`scan`), so a table of an older version reads: a column it lacks
takes the value its declaration says older tables imply (robustbench_lfm.columns), and the next
append rewrites the file in this version's columns. A column this version does not know, or a
declared one with no older value, is refused (StoreError naming it) before any work.
Nothing read back is trusted unchecked: a last line with no line end (a torn write, or a file cut by hand)
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
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from robustbench_lfm import columns, metric_table
from robustbench_lfm.files import atomic_write
from robustbench_lfm.identity import MEASUREMENT

COLUMNS = columns.names(columns.RESULTS)
CMC_COLUMNS = columns.names(columns.CMC)


class StoreError(ValueError):
    """A result file this version cannot use; the message names the fix."""


@dataclass
class Scan:
    """A table as read back: the rows that parse, and what was dropped."""

    rows: list[dict[str, str]] = field(default_factory=list)
    torn: bool = False  # the last line had no line end
    ragged: int = 0  # rows of the wrong width
    upgraded: bool = False  # written under other columns (an older version): rewritten on the next append

    @property
    def damaged(self) -> bool:
        """Whether anything was dropped."""
        return self.torn or self.ragged > 0


class ResultStore:
    """A tidy CSV of the run: `results.csv` and `probes.csv` (the default: columns.RESULTS),
    `cmc.csv` (columns.CMC) or `queries.csv` (columns.queries())."""

    def __init__(self, path: Path, declared: tuple[columns.Column, ...] = columns.RESULTS) -> None:
        self.path = Path(path)
        self.declared = declared
        self.columns = columns.names(declared)

    @classmethod
    def cmc(cls, path: Path) -> ResultStore:
        """`cmc.csv`."""
        return cls(path, columns.CMC)

    @classmethod
    def members(cls, path: Path) -> ResultStore:
        """`members.csv`: each ensemble member's per-query outcome (auto-reid)."""
        return cls(path, columns.MEMBERS)

    @classmethod
    def queries(cls, path: Path) -> ResultStore:
        """`queries.csv`, with the per-query columns of the metrics registered now."""
        return cls(path, columns.queries())

    def _text(self) -> str:
        if not self.path.exists():
            return ""
        try:
            return self.path.read_text()
        except UnicodeDecodeError:
            raise StoreError(f"{self.path} is not a text CSV; move it away or start a new run with --out") from None

    def scan(self) -> Scan:
        """The rows that parse, keyed by this version's columns (StoreError when the header names a
        column this version does not know, or lacks one no older value stands for)."""
        text = self._text()
        if not text:
            return Scan()
        header_line, _, body = text.partition("\n")
        header = next(csv.reader([header_line.removeprefix("\ufeff")]), [])
        fill = self._older(header)
        torn = bool(body) and not body.endswith("\n")
        lines = body.split("\n")[:-1]  # the empty string after the last line end, or a torn last line
        out = Scan(torn=torn, upgraded=bool(fill) or header != list(self.columns))
        for fields in csv.reader(lines):
            if len(fields) != len(header):
                out.ragged += 1
                continue
            row = dict(zip(header, fields, strict=True))
            for column in fill:
                row[column.name] = column.implied(row)
            out.rows.append({name: row[name] for name in self.columns})
        return out

    def _older(self, header: list[str]) -> list[columns.Column]:
        """The declared columns `header` lacks, each with the value older tables imply."""
        declared = {c.name: c for c in self.declared}
        unknown = [name for name in header if name not in declared]
        if unknown or len(set(header)) != len(header):
            what = f"column {unknown[0]!r}, which this version does not know" if unknown else "a repeated column"
            raise StoreError(
                f"{self.path} has {what} (a newer lfm-bench wrote it, or it is not a results table); read it with "
                "that version, or start a new run with --out"
            )
        missing = [declared[name] for name in self.columns if name not in header]
        lacking = [c.name for c in missing if c.older is None]
        if lacking:
            raise StoreError(
                f"{self.path} lacks column(s) {', '.join(lacking)}, which no older value stands for (a table of an "
                "early lfm-bench, or not a results table); regenerate it with `lfm-bench run`"
            )
        return missing

    def repair(self) -> Scan:
        """Scan, and when rows had to be dropped, warn and rewrite the file without them (an older
        table is rewritten at the next append)."""
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

    def append(self, rows: list[dict[str, Any]], replace_cells: bool = False, drop_cells: Collection[str] = ()) -> None:
        """Append rows (dicts keyed by the columns) atomically; a table of an older version is
        rewritten in this version's columns first.

        Args:
            rows: the new rows.
            replace_cells: first drop the rows whose cell_id is among the new rows' (a cell
                recomputed because its record was incomplete).
            drop_cells: first drop the rows of these cells too (cells the new ones supersede: the
                same measurement made by other code, `superseded`).
        """
        if not rows and not (drop_cells and self.path.exists()):
            return
        missing = set(self.columns) - set().union(*rows) if rows else set()
        if missing:
            raise ValueError(f"rows for {self.path.name} lack columns {sorted(missing)}")
        old = self._text()
        dropped = set(drop_cells) | ({r["cell_id"] for r in rows} if replace_cells else set())
        stale = old and (old.partition("\n")[0] != ",".join(self.columns) or not old.endswith("\n"))
        if stale or (old and any(c in old for c in dropped)):
            kept = [r for r in self.repair().rows if r["cell_id"] not in dropped]
            old = _csv_text(self.columns, kept, header=True)  # the parse only when a cell is replaced
        atomic_write(
            self.path, (old or _csv_text(self.columns, [], header=True)) + _csv_text(self.columns, rows, False)
        )

    def superseded(self, rows: list[dict[str, Any]]) -> set[str]:
        """Cells of this table that measure what `rows` measure (every identity column equal) under
        another cell id: the same number made by other code (an edited attack, model or plugin),
        which the new rows replace rather than join as if they were another seed."""
        if not rows or not self.path.exists():
            return set()
        key = [c for c in MEASUREMENT if c in self.columns]
        new = {tuple(str(r[c]) for c in key) for r in rows}
        ids = {str(r["cell_id"]) for r in rows}
        return {r["cell_id"] for r in self.scan().rows if r["cell_id"] not in ids and tuple(r[c] for c in key) in new}

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
