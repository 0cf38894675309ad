"""`lfm-bench board RUN_DIR... --out SITE`: every run directory's numbers side by side, as a static site.

The site (plain HTML, the project's own CSS and script under assets/, PNG figures; nothing fetched
at view time, so it opens from file://):

* `index.html` — one leaderboard per comparable setting (board/settings.py: task, data and its
  options, scored data, training share, recipe, evaluation options, threat and budget), each a
  sortable table of models with clean and robust headline metrics, the worst case first where an
  ensemble (`auto-reid`, `autoattack`) was run (board/table.py), its legend, the fields in which it
  differs from its nearest boards, and the report's clean-against-robust scatter; a filter bar
  (model, regularizer, backbone, attack); the runs included and those left out, with why;
* `models/<id>.html` — one page per model entry: model parameters and weights, recipe, plugins,
  code identity, each seed's checkpoint sha256 with the run directory and command that made it,
  the sanity verdicts, and the report's figures of that model alone (robustness curves, CMC,
  corruption severities);
* `figures/` — the PNGs (and the report's PDFs), named by a hash of what they plot and the code (and
  matplotlib) that draws them; every figure drawn is also kept in the cache folder's `figures/` (`FIGURE_STORE`), so
  that another site, or this one built again into a new folder, copies it instead of drawing it.

Incremental: each run is read once per change of its files (board/runs.py caches a verified record
in SITE/.board/); a page or figure is written only when its content changed, and files the site
no longer needs are removed (only those the board itself wrote, listed in SITE/.board/state.json).
A damaged or unreadable run directory is left out and named in one line (`BoardResult.refused`).
One builder at a time per site (robustbench_lfm.lock). Torch-free.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, cast

import pandas as pd

from robustbench_lfm import code_identity
from robustbench_lfm.board import pages
from robustbench_lfm.board.runs import RunRecord, load_runs
from robustbench_lfm.board.settings import Board, assign, distinct_titles, recipe_notes
from robustbench_lfm.board.table import Entry, LeaderTable, build_table
from robustbench_lfm.files import atomic_write, default_cache_dir, remove_stale_temps
from robustbench_lfm.hashing import content_hash
from robustbench_lfm.identity import MODEL, corrupted, format_eps
from robustbench_lfm.lock import RunLock

STATE = ".board"
ASSETS = ("board.css", "board.js")
FIGURE_STORE = "figures"  # under the cache folder: every figure drawn for any site, by kind and key


class BoardError(ValueError):
    """The site cannot be built (no usable run, a folder that is not a board); the message names the fix."""


@dataclass
class BoardResult:
    """What `build_board` did."""

    site: Path
    boards: list[LeaderTable]
    refused: list[str]
    read: list[Path]  # run directories read afresh (the others came from the site's cache)
    used: list[Path] = field(default_factory=list)  # every run directory on the site
    written: list[str] = field(default_factory=list)  # files written (new or changed), relative to the site
    removed: list[str] = field(default_factory=list)
    seconds: float = 0.0


class _Site:
    """Writes files under the site only when their bytes change, and remembers every file it made."""

    def __init__(self, root: Path, store: Path | None = None) -> None:
        self.root = root
        self.store = store  # figures drawn for any site (FIGURE_STORE), or None
        self.made: set[str] = set()
        self.written: list[str] = []

    def write(self, relative: str, data: str | bytes) -> None:
        path = self.root / relative
        raw = data.encode() if isinstance(data, str) else data
        self.made.add(relative)
        if path.is_file() and path.read_bytes() == raw:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, raw)
        self.written.append(relative)

    def keep(self, relative: str) -> None:
        self.made.add(relative)


def _state(root: Path) -> dict:
    try:
        state = json.loads((root / STATE / "state.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return state if isinstance(state, dict) else {}


def _check_site(root: Path) -> None:
    """Refuse to write into a folder that holds other things than a board."""
    if root.exists() and not root.is_dir():
        raise BoardError(f"--out {root} is a file; give a folder for the site")
    if root.is_dir() and any(root.iterdir()) and not (root / STATE).is_dir():
        raise BoardError(
            f"--out {root} is not empty and holds no board (no {STATE}/): choose a new or empty folder, so that "
            "nothing of yours is overwritten"
        )


@functools.cache
def _figure_code() -> str:
    """The code identity of the figures and the matplotlib that draws them (a change of either
    redraws them, on a site and in the cache's store)."""
    code = code_identity.digest(code_identity.closure(["robustbench_lfm.report.figures"], code_identity.BUILT_IN))
    return f"{code} matplotlib {importlib.metadata.version('matplotlib')}"


PLOTTED = (
    "row",
    "condition",
    "series",
    "cell_id",
    "rerank",
    "metric",
    "value",
    "n_eval",
    "train_seed",
    "eps",
    "severity",
    "rank",
    "cmc",
    "attack",
    "attack_label",
    "attack_params",
    "dataset",
    "task",
    "eval_subset",
)


def _plotted(rows: pd.DataFrame) -> list:
    """What a figure of `rows` shows, in one text form whether the rows were read afresh or from the
    site's cache (a number as %.10g), sorted: the key of the figure's file."""
    columns = [c for c in PLOTTED if c in rows.columns]
    texts = []
    for c in columns:
        numbers = pd.to_numeric(rows[c], errors="coerce")
        texts.append([str(v) if pd.isna(n) else f"{n:.10g}" for n, v in zip(numbers, rows[c], strict=True)])
    return [columns, sorted(zip(*texts, strict=True))]


Draw = Callable[[pd.DataFrame, Path], list[Path]]  # draws rows into files from a stem (no suffix)
Plot = Callable[[pd.DataFrame, Path], "Path | None"]  # draws rows into one file


def _figure(site: _Site, kind: str, rows: pd.DataFrame, draw: Draw, extra: object = "") -> str | None:
    """figures/<hash>.png of `kind` drawn from `rows` by `draw(rows, stem)`, drawn only when missing."""
    key = content_hash([kind, _figure_code(), str(extra), _plotted(rows)], 16)
    stem = f"figures/{kind}-{key}"
    if (site.root / f"{stem}.png").is_file():
        site.keep(f"{stem}.png")
        if (site.root / f"{stem}.pdf").is_file():
            site.keep(f"{stem}.pdf")
        return f"{stem}.png"
    (site.root / "figures").mkdir(parents=True, exist_ok=True)
    made = _from_store(site, stem)
    if made is None:
        paths = draw(rows, site.root / stem)
        made = [Path(p) for p in (paths or []) if p is not None and Path(p).is_file()]
        _to_store(site, made)
    for p in made:
        relative = str(Path(p).relative_to(site.root))
        site.keep(relative)
        site.written.append(relative)
    return f"{stem}.png" if (site.root / f"{stem}.png").is_file() else None


def _whole(suffix: str, data: bytes) -> bool:
    """Whether `data` is a whole PNG or PDF file (a torn copy lacks its last chunk or %%EOF)."""
    if suffix == ".png":
        return data.startswith(b"\x89PNG\r\n\x1a\n") and data.endswith(b"IEND\xaeB`\x82")
    return data.startswith(b"%PDF") and data.rstrip().endswith(b"%%EOF")


def _from_store(site: _Site, stem: str) -> list[Path] | None:
    """The files of figure `stem` copied from the store into the site, or None (then it is drawn)
    when the store has no whole copy: its PNG, stored last, says the others are there."""
    if site.store is None:
        return None
    png, pdf = (site.store / f"{Path(stem).name}{suffix}" for suffix in (".png", ".pdf"))
    stored = [png, pdf] if pdf.is_file() else [png]
    try:
        copies = {p.suffix: p.read_bytes() for p in stored}
    except OSError:  # not there, or unreadable: drawn again
        return None
    if not all(_whole(suffix, data) for suffix, data in copies.items()):
        return None
    made = []
    for suffix, data in copies.items():
        atomic_write(site.root / f"{stem}{suffix}", data)
        made.append(site.root / f"{stem}{suffix}")
    return made


def _to_store(site: _Site, made: list[Path]) -> None:
    """Keep the files of a figure just drawn in the store, its PNG last. A store that cannot be
    written (a full or read-only cache) costs a later site the drawing, never this build."""
    if site.store is None:
        return
    try:
        for path in sorted(made, key=lambda p: p.suffix == ".png"):
            atomic_write(site.store / path.name, path.read_bytes())
    except OSError:
        return


def _scatter(rows: pd.DataFrame, stem: Path) -> list[Path]:
    from robustbench_lfm.report.figures import scatter

    return scatter(rows, stem)


def _single(plot: Plot) -> Draw:
    """A `summary`-style plot(df, path) as a draw(rows, stem) returning the PNG."""

    def draw(rows: pd.DataFrame, stem: Path) -> list[Path]:
        path = plot(rows, stem.with_suffix(".png"))
        return [path] if path is not None else []

    return draw


def _all_rows(records: list[RunRecord]) -> pd.DataFrame:
    frames = [r.cells.assign(run_path=str(r.path)) for r in records]
    return assign(pd.concat(frames, ignore_index=True)) if frames else pd.DataFrame()


def _board_rows(rows: pd.DataFrame) -> dict[Board, pd.DataFrame]:
    return {cast(Board, b): g.drop(columns=["board"]) for b, g in rows.groupby("board", sort=False)}


def _spec(record: RunRecord) -> dict[str, Any]:
    """The run's resolved spec from its manifest ({} when it has none)."""
    spec = record.manifest.get("spec")
    return spec if isinstance(spec, dict) else {}


def _provenance(
    entry_rows: pd.DataFrame, records: dict[str, RunRecord], boards: list[Board], table_entry: Entry
) -> pages.Provenance:
    first = entry_rows.iloc[0]
    model = {c: str(first[c]) for c in MODEL}
    model["code of its clean cells"] = str(first["model_code"])
    runs = [records[p] for p in dict.fromkeys(entry_rows["run_path"])]
    spec = _spec(runs[0])
    recipe = spec.get("recipe") if isinstance(spec.get("recipe"), dict) else runs[0].fingerprint.get("recipe", {})
    plugins = sorted({str(p) for r in runs for p in (_spec(r).get("plugins") or [])})
    ckpt = (
        entry_rows[entry_rows["attack"] == "none"]
        .drop_duplicates(["train_seed", "checkpoint_sha256", "run_path"])[
            ["train_seed", "checkpoint_sha256", "run_path"]
        ]
        .sort_values(["train_seed", "run_path"])
    )
    commands = {str(r.path): str(r.manifest.get("command") or pages.NO_COMMAND) for r in runs}
    ckpt = ckpt.assign(command=ckpt["run_path"].map(commands)).rename(columns={"run_path": "run directory"})
    sanity = []
    for r in runs:
        seeds = set(entry_rows.loc[entry_rows["run_path"] == str(r.path), "train_seed"].astype(int))
        checks = r.sanity[(r.sanity["model"].astype(str) == str(first["model"]))]
        checks = checks[pd.to_numeric(checks["train_seed"], errors="coerce").isin(seeds)]
        checks = checks.assign(eps=pd.to_numeric(checks["eps"], errors="coerce").map(format_eps), run=str(r.path))
        sanity.append(checks[["check", "train_seed", "attack", "eps", "metric", "passed", "detail", "run"]])
    return pages.Provenance(
        table_entry, boards, model, dict(recipe or {}), plugins, ckpt.reset_index(drop=True),
        pd.concat(sanity, ignore_index=True) if sanity else pd.DataFrame(), [],
    )  # fmt: skip


def _model_figures(site: _Site, entry_rows: pd.DataFrame, record_curves: pd.DataFrame) -> list[tuple[str, str]]:
    from robustbench_lfm.report.corruption import plot_severity
    from robustbench_lfm.summary import cmc_labelled, plot_cmc, plot_eps_curves

    figures = []
    attacked = entry_rows[~corrupted(entry_rows)]
    if (attacked["attack"] != "none").any():
        path = _figure(site, "eps", attacked, _single(plot_eps_curves))
        if path:
            figures.append(("robustness: headline metrics against eps (report figure `eps`)", f"../{path}"))
    curves = cmc_labelled(record_curves, attacked) if not record_curves.empty else record_curves
    if not curves.empty:
        dataset = str(entry_rows["dataset"].iloc[0])
        path = _figure(site, "cmc", curves, _single(lambda c, p: plot_cmc(c, p, dataset)), dataset)
        if path:
            figures.append(("CMC, clean and attacked (report figure `cmc`)", f"../{path}"))
    if corrupted(entry_rows).any():
        path = _figure(site, "corruptions", entry_rows, _single(plot_severity))
        if path:
            figures.append(("common corruptions by severity (report figure `corruptions`)", f"../{path}"))
    return figures


def build_board(run_dirs: list[Path], out: Path, cache_dir: Path | None = None) -> BoardResult:
    """Build or update the site in `out` from `run_dirs` (module docstring); figures drawn for any
    site are kept in `cache_dir`/figures (default: `files.default_cache_dir()`, read now).

    Raises:
        BoardError: `out` is not a board's folder, or no run directory could be used.
        RunLockedError: another `board` is writing `out`.
    """
    start = time.perf_counter()
    _check_site(out)
    out.mkdir(parents=True, exist_ok=True)
    with RunLock(out, writer="board build"):
        remove_stale_temps(out)
        cache = out / STATE / "runs"
        cache.mkdir(parents=True, exist_ok=True)
        records, refused, fresh = load_runs(run_dirs, cache)
        if not records:
            raise BoardError("no run directory could be used: " + " | ".join(refused or ["none given"]))
        store = (cache_dir if cache_dir is not None else default_cache_dir()) / FIGURE_STORE
        with contextlib.suppress(OSError):
            remove_stale_temps(store)  # of a build killed while it stored a figure
        site = _Site(out, store)
        result = _build(site, records, refused)
        result.read = fresh
        result.used = [r.path for r in records]
        result.removed = _prune(out, site, {r.digest for r in records})
        result.written = site.written
        result.seconds = time.perf_counter() - start
        return result


def _build(site: _Site, records: list[RunRecord], refused: list[str]) -> BoardResult:
    by_path = {str(r.path): r for r in records}
    rows = _all_rows(records)
    tables: list[LeaderTable] = []
    figures: dict[str, str] = {}
    board_rows = _board_rows(rows)
    for board, g in board_rows.items():
        table = build_table(board, g)
        tables.append(table)
        named = table.rows[~corrupted(table.rows)]  # its labels: two code versions of a model stay apart
        if (named["attack"] != "none").any():
            path = _figure(site, "scatter", named, _scatter)
            if path:
                figures[board.id] = path
    recipes = {}
    for key, path in rows[["recipe_key", "run_path"]].drop_duplicates().itertuples(index=False):
        spec = by_path[path].manifest.get("spec")
        recipe = spec.get("recipe") if isinstance(spec, dict) else None
        if isinstance(recipe, dict):
            recipes[str(key)] = recipe
    notes = recipe_notes(recipes)
    for table, titled in zip(tables, distinct_titles([t.board for t in tables], notes), strict=True):
        table.board = titled
    tables.sort(key=lambda t: (t.board.fields["task"], t.board.fields["dataset"], t.board.title))
    entries = dict(list(pd.concat([t.rows for t in tables], ignore_index=True).groupby("entry", sort=False)))
    seen: set[str] = set()
    for table in tables:
        for e in table.entries:
            if e.id in seen:
                continue
            seen.add(e.id)
            entry_rows = entries[e.id].drop_duplicates(["cell_id", "rerank", "metric"])
            boards = [t.board for t in tables if any(x.id == e.id for x in t.entries)]
            curves = pd.concat([by_path[p].curves for p in dict.fromkeys(entry_rows["run_path"])], ignore_index=True)
            curves = curves[curves["cell_id"].isin(entry_rows["cell_id"])]
            prov = _provenance(entry_rows, by_path, boards, e)
            prov.figures = _model_figures(site, entry_rows, curves)
            site.write(f"models/{e.id}.html", pages.model_page(prov))
    for name in ASSETS:
        site.write(f"assets/{name}", (resources.files("robustbench_lfm.board") / "assets" / name).read_bytes())
    content = pages.IndexContent([str(r.path) for r in records], refused, figures)
    site.write("index.html", pages.index(tables, content))
    return BoardResult(site.root, tables, refused, [])


def _prune(root: Path, site: _Site, digests: set[str]) -> list[str]:
    """Remove the files an earlier build made that this one did not, and the cached records of runs
    not in this build; then record what the site holds."""
    state = _state(root)
    files = state.get("files")
    before: list[Any] = files if isinstance(files, list) else []
    removed = []
    for relative in before:
        if not isinstance(relative, str) or relative in site.made:
            continue
        path = Path(relative)
        if not path.is_absolute() and ".." not in path.parts:  # a state file edited by hand reaches nothing else
            (root / relative).unlink(missing_ok=True)
            removed.append(relative)
    for cached in (root / STATE / "runs").glob("*.json"):
        if cached.stem not in digests:
            cached.unlink(missing_ok=True)
    atomic_write(root / STATE / "state.json", json.dumps({"files": sorted(site.made)}, indent=1))
    return removed
