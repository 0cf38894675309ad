"""One leaderboard's table: models as rows, clean and robust headline metrics as columns.

A row (`Entry`) is a model as one version of the code made it: every model-role column (label,
backbone, regularizer, resolved parameters, pretrained weights) and the `code` of its clean cells
(the code that built, trained and scored it), within one setting. Two code versions of a model are
two rows, never averaged; an attack whose code changed between two runs of one model version is
two columns; training seeds of the same model and code, from one run directory or several, are
its seeds. A cell recorded by two run
directories (the same `cell_id`) counts once; if the two disagree, the board keeps the first and
says so. Each table cell is aggregated as the report aggregates it (report.tables: mean over
seeds, ± their sample std, or one checkpoint's standard error with one seed, † where a column
mixes the two), and a column's best is bold only as the report's rule allows (ahead of its
runner-up at p < 0.05 over the seeds, Holm-corrected over the table's columns).

Columns: `clean` first, then the worst case over an attack ensemble (`auto-reid`, `autoattack`)
where one was run, then every other attack at the board's budget (re-ranked scores beside);
a corruption board has the mean over the corruptions run, then each corruption (each averaged over
its severities, then over seeds). Torch-free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from robustbench_lfm import metric_table
from robustbench_lfm.board.settings import CORRUPTION, Board
from robustbench_lfm.hashing import content_hash
from robustbench_lfm.identity import MODEL, RUN, labelled, ordered_conditions, subset_note
from robustbench_lfm.report.corruption import corruption_rows
from robustbench_lfm.report.tables import TableCell, aggregate, column_leaders, headline_metrics, legend, marked

WORST_CASE = ("auto-reid", "autoattack")  # attack ensembles whose number is each input's worst case
ENTRY_KEY = (*RUN, *MODEL, "model_code")
CLEAN = "clean"
CORRUPTION_MEAN = "mean over corruptions"


@dataclass(frozen=True)
class Entry:
    """A model as one version of the code made it, in one setting; `id` names its page."""

    id: str
    label: str
    model: str
    backbone: str
    regularizer: str
    code: str
    seeds: tuple[int, ...]


@dataclass(frozen=True)
class Column:
    """A condition and a headline metric; `attack` is what the attack filter matches (`clean` for clean)."""

    condition: str
    metric: str
    attack: str
    worst_case: bool

    @property
    def label(self) -> str:
        return f"{self.condition} {metric_table.label(self.metric)}"


@dataclass
class LeaderTable:
    """A board's table: entries (in default order, best first), columns, cells, bold marks, legend."""

    board: Board
    entries: list[Entry]
    columns: list[Column]
    cells: dict[tuple[str, int], TableCell]
    bold: set[tuple[str, int]]
    legend: str
    runs: list[str]
    rows: pd.DataFrame = field(default_factory=pd.DataFrame)  # the board's rows, labelled (`_labels`)
    conflicts: list[str] = field(default_factory=list)
    versioned: list[str] = field(default_factory=list)  # models shown as one row per version of their code

    @property
    def mixed(self) -> bool:
        """Whether the table holds one-seed cells beside several-seed cells (the one-seed ones get †)."""
        return len({c.n_seeds > 1 for c in self.cells.values()}) > 1


def entry_id(row: pd.Series) -> str:
    """The page name of a row's entry: a hash of its ENTRY_KEY values."""
    return content_hash([str(row[c]) for c in ENTRY_KEY], 12)


def distinct_cells(rows: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """`rows` with each (cell, re-ranking, metric) once, the first run's; and a line per cell two runs
    recorded with different values."""
    keys = ["cell_id", "rerank", "metric"]
    spread = rows.groupby(keys, sort=False)["value"].agg(["min", "max"])
    clash = spread[(spread["max"] - spread["min"]).abs() > 1e-9]
    conflicts = []
    for (cell, rerank, metric), _ in clash.iterrows():
        same = (rows["cell_id"] == cell) & (rows["rerank"] == rerank) & (rows["metric"] == metric)
        runs = sorted(set(rows.loc[same, "run_path"]))
        conflicts.append(
            f"cell {cell} ({metric}{' ' + rerank if rerank else ''}) has different values in {', '.join(runs)}: "
            "the board shows the first; rerun one of them to settle it"
        )
    return rows.drop_duplicates(keys, keep="first"), conflicts


def _labels(rows: pd.DataFrame) -> pd.DataFrame:
    """`rows` with `row`, `condition` and `series` labels (robustbench_lfm.identity), `model_code` (the
    `code` of the clean cell of the same model, seed and run: the code that built, trained and scored
    the model), and `entry` (entry_id). A label shared by two model codes gets the code appended; a
    condition computed by two versions of its code for one model code (an attack edited between two
    runs) becomes two conditions, each with its code: never averaged."""
    named = labelled(rows)
    run_of = named[[*MODEL, "train_seed", "run_path"]].astype(str).agg("\x1f".join, axis=1)
    clean_code = named[named["attack"] == "none"].groupby(run_of)["code"].first()
    model_code = run_of.map(clean_code).fillna("").astype(str)
    named = named.assign(model_code=model_code)
    codes = named.groupby("row")["model_code"].transform("nunique")
    row = named["row"].where(codes <= 1, named["row"] + " [code " + model_code.str[:8] + "]")
    versions = named.groupby(["model_code", "condition"])["code"].transform("nunique")
    version = " [code " + named["code"].str[:8] + "]"
    split = versions > 1
    named = named.assign(row=row, condition=named["condition"].where(~split, named["condition"] + version),
                         series=named["series"].where(~split, named["series"] + version))  # fmt: skip
    return named.assign(entry=named.apply(entry_id, axis=1))


def _corruption_cells(named: pd.DataFrame) -> pd.DataFrame:
    """Per (row, seed, metric): each corruption's value averaged over its severities, and their mean."""
    rows = corruption_rows(named)
    rows = rows[rows["rerank"].fillna("") == ""]
    rows = rows.assign(condition=rows["corruption"] + rows["variant"].map(lambda v: f" ({v})" if v else ""))
    per_type = rows.groupby(["row", "train_seed", "metric", "condition"], sort=False)["value"].mean().reset_index()
    mean = per_type.groupby(["row", "train_seed", "metric"], sort=False)["value"].mean().reset_index()
    both = pd.concat([mean.assign(condition=CORRUPTION_MEAN), per_type], ignore_index=True)
    return both.assign(se=math.nan, attack="corrupt", eps=0.0)


def _columns(cells: pd.DataFrame, metrics: list[str], corruption: bool) -> list[Column]:
    attack_of = cells.groupby("condition")["attack"].first()
    if corruption:
        types = sorted(c for c in attack_of.index if c not in (CLEAN, CORRUPTION_MEAN))
        order = [c for c in (CLEAN, CORRUPTION_MEAN) if c in attack_of.index] + types
    else:
        conditions = ordered_conditions(cells)
        order = sorted(conditions, key=lambda c: (c != CLEAN, attack_of[c] not in WORST_CASE))
    return [
        Column(c, m, CLEAN if c == CLEAN else str(attack_of[c]), attack_of[c] in WORST_CASE)
        for c in order
        for m in metrics
    ]


def _order(entries: dict[str, Entry], columns: list[Column], cells: dict[tuple[str, int], TableCell]) -> list[Entry]:
    """Best first: by the first robust column (the worst case where there is one), then clean."""
    robust = next((i for i, c in enumerate(columns) if c.attack != CLEAN), None)
    keys = [i for i in (robust, 0) if i is not None]

    def score(e: Entry) -> tuple:
        return (*(-(cells[(e.id, i)].mean if (e.id, i) in cells else -1.0) for i in keys), e.label)

    return sorted(entries.values(), key=score)


def build_table(board: Board, rows: pd.DataFrame) -> LeaderTable:
    """The table of `board` from its rows (settings.assign; every RunRecord column plus `run_path`)."""
    named, conflicts = distinct_cells(_labels(rows))  # labels first: a model's code is its own run's clean cell's
    metrics = headline_metrics(named)
    corruption = board.fields["threat"] == CORRUPTION
    clean = named[named["attack"] == "none"].assign(condition=lambda d: d["condition"].where(d["rerank"] != "", CLEAN))
    if corruption:
        clean = clean[clean["rerank"] == ""]
        cells = pd.concat([clean, _corruption_cells(named[named["attack"] != "none"])], ignore_index=True)
    else:
        cells = pd.concat([clean, named[named["attack"] != "none"]], ignore_index=True)
    columns = _columns(cells, metrics, corruption)
    agg = aggregate(cells)
    entries: dict[str, Entry] = {}
    for (label, entry), g in named.groupby(["row", "entry"], sort=False):
        first = g.iloc[0]
        entries[str(entry)] = Entry(str(entry), str(label), str(first["model"]), str(first["backbone"]),
                                    str(first["regularizer"]), str(first["model_code"]),
                                    tuple(sorted(int(s) for s in g["train_seed"].unique())))  # fmt: skip
    by_label = {e.label: e.id for e in entries.values()}
    table = {
        (by_label[r], i): agg[(r, c.condition, c.metric)]
        for i, c in enumerate(columns)
        for r in by_label
        if (r, c.condition, c.metric) in agg
    }
    keys = [(c.condition, c.metric) for c in columns]
    leaders = column_leaders(cells, agg, list(by_label), keys)
    best = marked(leaders)
    bold = {(by_label[m], i) for i, k in enumerate(keys) for m in best.get(k, set())}
    return LeaderTable(
        board=board,
        entries=_order(entries, columns, table),
        columns=columns,
        cells=table,
        bold=bold,
        legend=legend(agg, leaders) + subset_note(named),
        runs=sorted(set(named["run_path"])),
        rows=named,
        conflicts=conflicts,
        versioned=sorted({str(m) for m, n in named.groupby("model")["model_code"].nunique().items() if n > 1}),
    )
