"""The sweep coordinator: pending cells from the spec, grouped by (model, seed), run on an executor.

Each group (robustbench_lfm/group.py) trains or loads its checkpoint and evaluates its cells;
this process writes what comes back, so it is the run directory's only writer (under RunLock).
Before any work the directory is bound to the run (rundir.py: same task, data, recipe and
evaluation) and its tables are verified (store.py). A cell is done only when every metric row
it should have is present with a valid value and its side rows (queries.csv, and cmc.csv for
re-ID) exist; done cells are skipped, every other cell is (re)computed and replaces whatever
partial record it had, so rerunning an interrupted or damaged run completes it. At the end the
sanity checks run over the table and manifest.json is completed.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from robustbench_lfm import attacks, estimate, evidence, metric_table, progress, rundir, sanity
from robustbench_lfm.checkpoints import probe_given_models
from robustbench_lfm.datasets import ClassificationDataset, Dataset
from robustbench_lfm.environment import configure_determinism, machine, now, package_versions
from robustbench_lfm.executors import ExecSpec, run_tasks
from robustbench_lfm.files import atomic_write, remove_stale_temps
from robustbench_lfm.group import GroupResult, run_dataset, run_group
from robustbench_lfm.lock import RunLock
from robustbench_lfm.metrics import chance_rank1
from robustbench_lfm.rerank import RerankParams
from robustbench_lfm.spec import Cell, ModelSpec, RunSpec, SpecError, prerequisites
from robustbench_lfm.store import ResultStore, valid_value

Log = Callable[[str], None]


@dataclass
class Manifest:
    """manifest.json: the resolved spec, versions, machine, seeds and timings."""

    spec: dict[str, Any]
    versions: dict[str, str]
    machine: dict[str, Any]
    started_at: str = field(default_factory=now)
    finished_at: str | None = None
    training: dict[str, Any] = field(default_factory=dict)
    cells_run: int = 0
    cells_skipped: int = 0
    probes_run: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    executor: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0
    tables: dict[str, str] = field(default_factory=dict)  # sha256 of each table as this sweep left it
    random_in_eval: dict[str, Any] = field(default_factory=dict)  # given models random in eval mode, how much
    command: str = ""  # the command line that ran this sweep (`lfm-bench run ...`); "" through the Python API

    invocations: list[dict[str, Any]] = field(default_factory=list)

    def write(self, spec: RunSpec) -> None:
        """Write atomically to the run directory."""
        atomic_write(spec.out_dir / "manifest.json", json.dumps(asdict(self), indent=2, default=str))

    def carry_over(self, spec: RunSpec) -> None:
        """Keep the earlier sweeps into this directory: each one's spec, times and cell counts."""
        try:
            old = json.loads((spec.out_dir / "manifest.json").read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return
        if isinstance(old, dict):
            recorded = old.get("invocations")
            earlier: list[Any] = recorded if isinstance(recorded, list) else []
            keep = ("spec", "command", "started_at", "finished_at", "cells_run", "cells_skipped", "failed")
            self.invocations = [*earlier, {k: old.get(k) for k in keep}]


def _random_models(spec: RunSpec, random: dict[str, float]) -> dict[str, Any]:
    """The manifest's record of the given models random in eval mode, once the run is shown to score
    them as it must (RunSpec.random_model_shortfall; SpecError naming the fix otherwise)."""
    missing = spec.random_model_shortfall()
    if missing:
        label, gap = next(iter(random.items()))
        raise SpecError(
            f"model {label!r} is random in eval mode (two forwards of the same images differ by up to {gap:.3g} "
            f"of its output's scale): it is scored only with {'; '.join(missing)}; or make its eval-mode "
            "forward deterministic"
        )
    eot = {a.label: int(dict(a.options).get("eot", 1)) for a in spec.attacks}
    return {
        label: {"relative_gap": gap, "score_repeats": spec.evaluation.score_repeats, "attack_eot": eot}
        for label, gap in random.items()
    }


class SweepError(RuntimeError):
    """Some models or cells failed; every other cell was evaluated and recorded (exit 1)."""


def run_sweep(spec: RunSpec, log: Log = print, ex: ExecSpec | None = None, command: str = "") -> pd.DataFrame:
    """Run every pending cell of `spec` on the executor `ex`; returns the whole result table.

    Cells are grouped by (model, seed) so a checkpoint is trained once; the checkpoints other
    groups need (MixACM teachers, the transfer surrogate) are trained first. Each finished group's
    rows stream into the run's CSVs here, the only writer. A model whose training fails (e.g. a
    NaN loss) loses its own cells only, a cell whose attack, corruption or model outputs fail
    loses itself only (robustbench_lfm/faults.py): the others run, the sanity checks and
    manifest are written, then SweepError names each failure.

    Raises:
        RunLockedError: another sweep is writing the same run directory.
        ModelOutputError: a given model (`ckpt:`, `evaluate`) maps the dataset's images to no
            finite (N, D) output; raised before any cell runs.
        SweepError: one or more models or cells failed.
    """
    ex = ex or ExecSpec()
    with RunLock(spec.out_dir):
        start = time.perf_counter()
        dataset = run_dataset(spec)  # before anything is written: data that cannot be scored is refused
        rundir.bind(spec)
        for folder in (spec.out_dir, *(spec.cache_dir / k for k in ("checkpoints", "datasets", "adversarial"))):
            remove_stale_temps(folder)  # what a killed sweep (or report) left half-written
        tables = _Tables(spec)
        done = _done_cells(spec, tables, log)  # verifies every table before any work
        configure_determinism(torch.device(spec.device))  # before machine() records it; each worker sets it too
        manifest = Manifest(spec.to_json(), package_versions(), machine(torch.device(spec.device)), command=command)
        manifest.executor = {**asdict(ex), "folder": str(ex.folder or ""), "worker_threads": ex.worker_threads()}
        manifest.carry_over(spec)
        manifest.write(spec)
        given = (*spec.models, *((spec.threat.surrogate,) if spec.threat.surrogate else ()))
        # before any cell: a bad output is refused, a model random in eval mode needs EOT and repeated scoring
        random = probe_given_models(given, dataset, torch.device(spec.device))
        if random:
            manifest.random_in_eval = _random_models(spec, random)
            manifest.write(spec)
        if not spec.quiet:
            log(f"dataset {spec.data.name}:\n{dataset.summary()}")
        shape = work_shape(spec, dataset)
        ran = _run_groups(spec, ex, tables, manifest, done, shape)
        table = tables.results.read()
        with suppress(OSError):  # the rates only feed estimates: a cache that cannot take them loses nothing
            rows = [r for r in tables.results.scan().rows if r["cell_id"] in ran]
            estimate.record(spec.cache_dir, estimate.measured_rates(spec, manifest.training, rows, shape))
        projecting = frozenset(
            n for n in attacks.registry.ATTACKS.names() if not attacks.get_attack_class(n).stays_in_budget
        )
        checks = sanity.run_checks(table, tables.probes.read(), _chance(dataset), projecting)
        sanity.write(checks, spec.out_dir / "sanity.csv")
        manifest.finished_at, manifest.wall_s = now(), round(time.perf_counter() - start, 2)
        manifest.tables = evidence.digests(spec.out_dir)
        manifest.write(spec)
    if manifest.failed:
        lines = "; ".join(f"{label}: {err}" for label, err in manifest.failed.items())
        cells = sum(" " in label for label in manifest.failed)  # a cell's label names its attack after a space
        what = ", ".join(part for part in (
            f"{len(manifest.failed) - cells} model(s) failed" if len(manifest.failed) > cells else "",
            f"{cells} cell(s) failed" if cells else "") if part)  # fmt: skip
        raise SweepError(
            f"{what}; their cells are missing (every other cell is recorded; a rerun retries them): {lines}"
        )
    return table


class _Tables:
    """The run's CSVs."""

    def __init__(self, spec: RunSpec) -> None:
        self.results = ResultStore(spec.out_dir / "results.csv")
        self.probes = ResultStore(spec.out_dir / "probes.csv")
        self.curves = ResultStore.cmc(spec.out_dir / "cmc.csv")
        self.queries = ResultStore.queries(spec.out_dir / "queries.csv")
        self.members = ResultStore.members(spec.out_dir / "members.csv")


def expected_rows(spec: RunSpec) -> set[tuple[str, str]]:
    """The (rerank, metric) pairs every cell of `spec` records."""
    reranks = [RerankParams().label() if on else "" for on in spec.evaluation.rerank_modes()]
    return {(rr, m) for rr in reranks for m in metric_table.names(spec.recipe.task)}


def complete_cells(rows: list[dict[str, str]], expected: set[tuple[str, str]]) -> set[str]:
    """Cells whose rows are exactly `expected`, once each, with valid values."""
    seen: dict[str, list[tuple[str, str]]] = {}
    bad: set[str] = set()
    for row in rows:
        seen.setdefault(row["cell_id"], []).append((row["rerank"], row["metric"]))
        if not valid_value(row["value"]):
            bad.add(row["cell_id"])
    return {c for c, got in seen.items() if c not in bad and len(got) == len(expected) and set(got) == expected}


def _done_cells(spec: RunSpec, tables: _Tables, log: Log) -> dict[str, set[str]]:
    """Per table ("results", "probes"), the cells already done; warns about recorded cells that are not."""
    expected = expected_rows(spec)
    results, probes = tables.results.repair().rows, tables.probes.repair().rows
    sides = [tables.queries] + ([tables.curves] if spec.recipe.task == "reid" else [])
    side_cells = [{r["cell_id"] for r in t.repair().rows} for t in sides]
    complete = complete_cells(results, expected)
    ensembles = {r["cell_id"] for r in results if _is_ensemble(r["attack"])}  # their members.csv rows too
    with_members = {r["cell_id"] for r in tables.members.repair().rows} if ensembles else set()
    done = {c for c in complete if all(c in side for side in side_cells) and (c not in ensembles or c in with_members)}
    redo = {r["cell_id"] for r in results} - done
    if redo:
        warnings.warn(
            f"{len(redo)} recorded cell(s) in {tables.results.path} are incomplete, invalid or lack their "
            "queries.csv / cmc.csv rows (an ensemble cell its members.csv rows); recomputing them",
            stacklevel=2,
        )
    return {"results": done, "probes": complete_cells(probes, expected)}


def _is_ensemble(name: str) -> bool:
    """Whether attack `name` is scored per query over members (auto-reid), so its cells have members.csv rows."""
    return name in attacks.registry.ATTACKS.names() and issubclass(attacks.get_attack_class(name), attacks.Ensemble)


def _run_groups(
    spec: RunSpec, ex: ExecSpec, tables: _Tables, manifest: Manifest, done: dict[str, set[str]], shape: estimate.Shape
) -> set[str]:
    """Run the pending (model, seed) groups on the executor and write what comes back; the ids of
    the cells it ran. The progress bar counts the whole sweep in estimated seconds of work
    (training and cells, robustbench_lfm/estimate.py), so its ETA covers what is left."""
    cells = [("results", c) for c in spec.cells()] + [("probes", c) for c in spec.probe_cells()]
    pending = [(dest, c) for dest, c in cells if c.cell_id(spec.data, spec.recipe, spec.evaluation) not in done[dest]]
    manifest.cells_skipped = sum(d == "results" for d, _ in cells) - sum(d == "results" for d, _ in pending)
    groups = _by_model(pending)
    first = prerequisites(spec, [(m, seed, any(c.attack is not None for _, c in g)) for (m, seed), g in groups.items()])
    before, after = estimate.phase_seconds(
        spec, first, {k: [c for _, c in g] for k, g in groups.items()}, shape, estimate.read_rates(spec.cache_dir)
    )
    total = round(sum(e.seconds for phase in (before, after) for e in phase.values()), 1)
    bar = tqdm(total=total, desc=f"sweep ({len(pending)} cells)", disable=spec.quiet, unit="s", bar_format=SWEEP_BAR)
    # Teachers and the surrogate are trained (or loaded) first, then the groups that load them.
    phases: list[tuple[dict, list[tuple[RunSpec, ModelSpec, int, list[tuple[str, Cell]]]]]] = [
        (before, [(spec, m, seed, []) for m, seed in first]),
        (after, [(spec, m, seed, group) for (m, seed), group in groups.items()]),
    ]
    with bar:  # closed before an error's line, which would otherwise come before the bar's last state
        for estimates, tasks in phases:  # the bar moves with each epoch and cell (robustbench_lfm/progress.py)
            moved = progress.SweepBar(bar, lambda cells: estimate.cells_work(spec, cells, shape), shape.scored)
            for (model, seed), e in estimates.items():
                bounded = frozenset(c for c in e.cells if estimate.bounded(spec, c))
                moved.expect(f"{model.label}@seed{seed}", e.training, e.per_work, e.seconds, e.cells, bounded)
            with progress.listening(moved):
                for result in run_tasks(ex, run_group, tasks):
                    _record(result, tables, manifest)
                    moved.finished(result.label)
        left = (bar.total or 0.0) - bar.n  # the total shrinks as AutoAttack's batches say what they cost
        if 0 < left < 1e-6:  # the steps' float sum: every group came back, so the bar is full
            bar.update(left)
    return {c.cell_id(spec.data, spec.recipe, spec.evaluation) for _, c in pending}


# The sweep bar: its unit is an estimated second of work, so "left" is the ETA of the whole sweep.
SWEEP_BAR = "{desc}: {percentage:3.0f}%|{bar}| {elapsed} elapsed, about {remaining} left"


def _record(result: GroupResult, tables: _Tables, manifest: Manifest) -> None:
    """Write a group's rows (side tables first: results.csv records the cells as done)."""
    for label, info in result.training.items():  # a teacher trained here, then loaded by its own group
        if label not in manifest.training or not info.get("cached"):
            manifest.training[label] = info
    if result.failed is not None:
        manifest.failed[result.label] = result.failed
    manifest.failed.update(result.failed_cells)
    # The same measurements recorded under other cell ids (made by code since edited: an attack, a
    # model, a plugin) are replaced, never kept beside the new ones as if they were other seeds. Each
    # table's own: a probe the grid holds has its sweep cell's id, which a probe scaled from a larger
    # budget supersedes in probes.csv only (the sweep cell stays in results.csv).
    stale = {name: getattr(tables, name).superseded(result.rows.get(name, [])) for name in ("results", "probes")}
    for name in ("queries", "members", "curves", "probes", "results"):  # results last: they record the cells as done
        drop = stale["probes" if name == "probes" else "results"]  # queries, members, curves: the results' cells
        if result.rows.get(name) or drop:
            getattr(tables, name).append(result.rows.get(name, []), replace_cells=True, drop_cells=drop)
    manifest.cells_run += result.cells_run
    manifest.probes_run += result.probes_run


def work_shape(spec: RunSpec, data: Dataset) -> estimate.Shape:
    """The sizes the sweep's work scales with (robustbench_lfm/estimate.py), from its dataset."""
    from robustbench_lfm.training import images_per_epoch

    if isinstance(data, ClassificationDataset):
        scored, gallery, images, classes = len(data.test.images), 0, data.test.images, data.num_classes
    else:
        scored, gallery, images = len(data.query.images), len(data.gallery.images), data.query.images
        classes = data.num_train_ids
    size = (int(images.shape[-2]), int(images.shape[-1]))
    return estimate.Shape(scored, gallery, size, images_per_epoch(data, spec.recipe), classes)


def dry_run(spec: RunSpec) -> str:
    """What `run --dry-run` prints: the models to train or reuse, the cells to run or resume, and
    the estimated time (robustbench_lfm/estimate.py). Reads the run directory, writes nothing there."""
    dataset = run_dataset(spec)
    expected = expected_rows(spec)
    done = {
        name: complete_cells(ResultStore(spec.out_dir / f"{name}.csv").scan().rows, expected)
        for name in ("results", "probes")
    }
    work = estimate.pending_work(spec, work_shape(spec, dataset), done)
    return estimate.describe(work, estimate.read_rates(spec.cache_dir))[0]


def _chance(data: Dataset) -> float:
    """The headline metric of a random guess: Rank-1 of a random ranking, or 1 / classes."""
    if isinstance(data, ClassificationDataset):
        return 1.0 / data.num_classes
    q, g = data.query, data.gallery
    return chance_rank1(q.pids, g.pids, q.camids, g.camids)


def _by_model(cells: list[tuple[str, Cell]]) -> dict[tuple[ModelSpec, int], list[tuple[str, Cell]]]:
    groups: dict[tuple[ModelSpec, int], list[tuple[str, Cell]]] = {}
    for dest, cell in cells:
        groups.setdefault((cell.model, cell.seed), []).append((dest, cell))
    return groups
