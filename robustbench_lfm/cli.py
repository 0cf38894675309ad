"""The `lfm-bench` command line: `run` a sweep, `report` it, `check` it against a baseline, `ls`
the registries.

Exit status of every command: 0 success; 1 a regression, a failed cell or a failed check; 2 bad
input, one line `lfm-bench: error: <what is wrong and how to fix it>` (click's own usage errors
too); 3 an internal error, one line naming the file that holds the traceback. No traceback
reaches the terminal (`LfmBench.main`).
"""

from __future__ import annotations

import errno
import json
import math
import os
import shlex
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from robustbench_lfm import startup
from robustbench_lfm.cli_options import (
    RUN_OPTIONS,
    SectionedCommand,
    fail,
    format_option,
    plugin_option,
    quiet_option,
    with_options,
)
from robustbench_lfm.faults import MACHINE_ERRORS
from robustbench_lfm.files import atomic_write
from robustbench_lfm.options import EXECUTOR, RunOptions
from robustbench_lfm.parsing import SpecError

if TYPE_CHECKING:
    import pandas as pd

    from robustbench_lfm.executors import ExecSpec
    from robustbench_lfm.spec import RunSpec


def machine_error(err: OSError) -> str:
    """One line naming the path, the cause and the fix; what the run wrote before stays (every
    table is replaced atomically, a cell at a time)."""
    where = f"{err.filename}: " if err.filename else ""
    cause = err.strerror or errno.errorcode.get(err.errno or 0, str(err))
    fix = ("free space (or choose another --out / --cache-dir)" if err.errno in (errno.ENOSPC, errno.EDQUOT)
           else "choose a path you can write (--out / --cache-dir)")  # fmt: skip
    return f"{where}{cause}; {fix}, then rerun the same command: the cells already recorded are kept"


def internal_error(err: BaseException) -> NoReturn:
    """Exit 3 with one line naming a file that holds the traceback (never the traceback itself)."""
    path = Path(tempfile.gettempdir()) / f"lfm-bench-traceback-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.txt"
    try:
        atomic_write(path, "".join(traceback.format_exception(err)))
        where = f"the traceback is in {path}"
    except OSError:
        where = "the traceback could not be saved"
    fail(f"internal error ({type(err).__name__}: {err}); {where}; please report it", status=3)


def _warning_line(message: Warning | str, *args: Any, **kwargs: Any) -> str:
    return f"lfm-bench: warning: {message}\n"


INVOCATION: list[str] = []  # this process's arguments after `lfm-bench`, as given (manifest.json `command`)


class LfmBench(click.Group):
    """The command group, with the exit-status contract of the module docstring."""

    def main(self, *args: Any, **kwargs: Any) -> NoReturn:
        kwargs["standalone_mode"] = False
        given = kwargs.get("args", args[0] if args else None)
        INVOCATION[:] = [str(a) for a in (sys.argv[1:] if given is None else given)]
        warnings.formatwarning = _warning_line
        try:
            status = super().main(*args, **kwargs)
        except click.exceptions.Exit as done:
            sys.exit(done.exit_code)
        except click.ClickException as err:
            ctx = getattr(err, "ctx", None)
            where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
            fail(f"{err.format_message()}{where}")
        except (click.Abort, KeyboardInterrupt):
            fail("interrupted; rerun the same command to resume", status=130)
        except OSError as err:
            if err.errno not in MACHINE_ERRORS:
                internal_error(err)
            fail(machine_error(err))
        except Exception as err:
            internal_error(err)
        sys.exit(status if isinstance(status, int) else 0)


@click.group(cls=LfmBench, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lfm-bench")
def main() -> None:
    """lfm-bench: adversarial robustness of regularizers (LFM, Dropout, Cutout, RCM, ...).

    Sweeps registered models against registered attacks and records clean and attacked
    Rank-1 / mAP / mINP (re-ID) or accuracy (classification) into a tidy CSV, a manifest and
    plots; `report` turns a run into paper tables and figures, `board` puts many runs side by
    side as a static leaderboard site, `check` gates CI on robustness regressions, `plan` says
    how many seeds a comparison needs. See `lfm-bench ls`.
    """


@main.command(cls=SectionedCommand)
@with_options(RUN_OPTIONS)
def run(fmt: str, **opts: Any) -> None:  # opts: one keyword per RunOptions field
    """Train (or reuse cached) models and evaluate them clean and under attack.

    Writes results.csv, cmc.csv, probes.csv, sanity.csv, manifest.json, fingerprint.json,
    robustness.png, cmc.png (and corruptions.png with --attacks corrupt) to the run directory and
    prints a table of Rank-1 / mAP in % with the sanity checks under it. Rerunning the same
    command resumes an interrupted sweep, recomputing any cell whose record is incomplete; a run
    directory refuses a run with another dataset, recipe or evaluation (more models, attacks, eps
    or seeds may join it). Real datasets: --dataset market1501 --data-root DIR (or dukemtmc).
    """
    from robustbench_lfm import names
    from robustbench_lfm.files import default_cache_dir

    cache_dir = Path(opts["cache_dir"]) if opts.get("cache_dir") else default_cache_dir()
    _guard(lambda: names.precheck(opts, cache_dir))  # a typo: one line before torch is imported
    startup.import_torch()
    from robustbench_lfm.spec import build_spec

    executor = {k: opts[k] for k in EXECUTOR}
    spec = _guard(lambda: build_spec(RunOptions(**opts)))
    if not spec.plugins:  # the registries hold the built-in names alone: remember them for the next typo
        names.remember(spec.cache_dir)
    ex = _guard(lambda: _exec_spec(spec, **executor))
    if opts["dry_run"]:
        from robustbench_lfm.datasets import DatasetFolderError
        from robustbench_lfm.runner import dry_run

        try:
            click.echo(dry_run(spec))
        except (SpecError, DatasetFolderError) as err:
            fail(str(err))
        return
    start = time.perf_counter()
    df, failure = _sweep(spec, ex, log=(lambda line: click.echo(line, err=True)) if fmt == "json" else click.echo)
    _print_summary(spec, df, failure, fmt, time.perf_counter() - start)
    if failure is not None:
        fail(str(failure), status=1)
    invalid = df[~df["value"].between(0, 1)] if len(df) else df  # the store reads a non-number as NaN
    if len(invalid):  # a NaN metric (e.g. a model whose embeddings are NaN) is a failed cell, never a pass
        cells = ", ".join(sorted({f"{r['model']} {r['attack_label']}" for _, r in invalid.iterrows()}))
        fail(f"{invalid['cell_id'].nunique()} cell(s) recorded no valid value ({cells}); rerun to recompute", 1)


def _sweep(spec: RunSpec, ex: ExecSpec, log: Callable[[str], None]) -> tuple[pd.DataFrame, Exception | None]:
    """Run the sweep: (its results, the failure of some model's cells or None); bad input exits 2."""
    from robustbench_lfm.datasets import DatasetFolderError
    from robustbench_lfm.lock import RunLockedError
    from robustbench_lfm.runner import SweepError, run_sweep
    from robustbench_lfm.store import ResultStore, StoreError

    try:
        return run_sweep(spec, log=log, ex=ex, command=shlex.join(["lfm-bench", *INVOCATION])), None
    except SweepError as err:  # the other models' cells are done: show them, then fail
        return ResultStore(spec.out_dir / "results.csv").read(), err
    except (StoreError, RunLockedError, SpecError, DatasetFolderError) as err:
        fail(str(err))


def _print_summary(spec: RunSpec, df: pd.DataFrame, failure: Exception | None, fmt: str, took: float) -> None:
    """The plots, then the table and sanity checks (text) or the summary object (json)."""
    from robustbench_lfm import sanity
    from robustbench_lfm.report.corruption import plot_severity
    from robustbench_lfm.store import ResultStore
    from robustbench_lfm.summary import cmc_labelled, plot_cmc, plot_eps_curves, summary_json, summary_table

    plot = plot_eps_curves(df, spec.out_dir / "robustness.png")
    severity_plot = plot_severity(df, spec.out_dir / "corruptions.png") if len(df) else None
    curves = cmc_labelled(ResultStore.cmc(spec.out_dir / "cmc.csv").read(), df)
    cmc_plot = plot_cmc(curves, spec.out_dir / "cmc.png", spec.data.name)
    checks = sanity.read(spec.out_dir / "sanity.csv")
    plots = [str(p) for p in (plot, severity_plot, cmc_plot) if p is not None]
    if fmt == "json":
        summary = summary_json(df, checks, spec.out_dir, plots, took, failure)
        click.echo(json.dumps({"note": spec.note, **summary} if spec.note else summary, indent=2))
        return
    if spec.note:
        click.echo(f"{spec.note}\n")
    click.echo(summary_table(df))
    click.echo("\n" + sanity.summary(checks))
    click.echo(f"\n{len(df)} rows in {spec.out_dir / 'results.csv'}; plots {', '.join(plots) or 'none'}; {took:.1f} s")


def _guard(build: Callable[[], Any]) -> Any:
    from robustbench_lfm.recipe import RecipeError

    try:
        return build()
    except (SpecError, RecipeError) as err:
        fail(str(err))


def _exec_spec(
    spec: RunSpec, executor: str, jobs: int, threads: int | None, scheduler: str | None, cluster: str | None
) -> ExecSpec:
    """The executor options, checked (SpecError on an inconsistent combination)."""
    from robustbench_lfm.executors import ExecSpec

    try:
        return ExecSpec(executor, jobs, threads, scheduler, spec.out_dir / "submitit", cluster)
    except ValueError as err:
        raise SpecError(str(err)) from None


@main.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Report folder (default RUN_DIR/report).")
@click.option(
    "--pair",
    "pairs",
    multiple=True,
    help="Also test model A against model B on the same queries, e.g. --pair lfm,dropout (repeatable); "
    "every model is tested against plain.",
)
@quiet_option("Print nothing but errors (the files are still written).")
def report(run_dir: Path, out: Path | None, pairs: tuple[str, ...], quiet: bool) -> None:
    """Write Markdown and LaTeX tables, paired tests, figures (PNG, PDF) and one HTML page for RUN_DIR.

    Reads only the run's CSVs: works with no checkpoint and no GPU.
    """
    from robustbench_lfm.report import ReportError, build_report

    parsed = []
    for p in pairs:
        names = [n.strip() for n in p.split(",")]
        if len(names) != 2 or not all(names):
            fail(f"--pair {p!r}: write two model names separated by a comma, e.g. --pair lfm,dropout")
        parsed.append((names[0], names[1]))
    try:
        written = build_report(run_dir, out, parsed)
    except ReportError as err:
        fail(str(err))
    if quiet:
        return
    click.echo(written.markdown.read_text())
    figures = ", ".join(sorted(written.figures))
    click.echo(f"wrote {written.markdown}, {written.latex}, {written.html}; figures ({figures}) as PNG and PDF")


@main.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    required=True,
    help="Site folder: a new or empty one, or one an earlier `board` built (updated in place).",
)
@click.option(
    "--cache-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Where every figure drawn is kept, for any site to copy instead of drawing it again (default "
    "$LFM_BENCH_CACHE, else ~/.cache/lfm-bench; its figures/ folder is safe to delete).",
)
@quiet_option("Print nothing but the runs left out and errors.")
def board(run_dirs: tuple[Path, ...], out: Path, cache_dir: Path | None, quiet: bool) -> None:
    """Build a static leaderboard site from RUN_DIRS: one board per comparable setting.

    A board holds the numbers made under one setting (task, data and its options, scored data,
    training share, recipe, evaluation options, threat and budget); its table ranks the models by
    their robust headline metric, the worst case first where auto-reid or autoattack ran, with
    seeds, ± and bold as `report` defines them. Each model links to a page with its provenance
    (checkpoints, recipe, parameters, code, the runs and commands that made it, sanity verdicts)
    and figures. Open OUT/index.html in a browser: plain files, nothing fetched, works offline.
    Rebuilding reads only the runs that changed, and a figure drawn before, for this site or
    another, from the same numbers is copied from the cache (--cache-dir). A damaged or
    unreadable run directory is named in one line and left out; the others are built (exit 0).
    """
    from robustbench_lfm.board import BoardError, build_board
    from robustbench_lfm.lock import RunLockedError

    try:
        result = build_board(list(run_dirs), out, cache_dir)
    except (BoardError, RunLockedError) as err:
        fail(str(err))
    for line in result.refused:
        click.echo(f"lfm-bench: warning: left out: {line}", err=True)
    if quiet:
        return
    for table in result.boards:
        click.echo(f"  {table.board.title}: {len(table.entries)} models from {len(table.runs)} run(s)")
    used, read = len(result.used), len(result.read)
    click.echo(
        f"{len(result.boards)} boards from {used} run(s) ({read} read, {used - read} unchanged since the last build); "
        f"{len(result.written)} files written, "
        f"{len(result.removed)} removed in {result.seconds:.1f} s: {out / 'index.html'}"
    )


@main.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option(
    "--baseline",
    type=click.Path(path_type=Path),
    required=True,
    help="A results.csv to compare against (e.g. the committed results/baseline/ci-synthreid/results.csv), or "
    "the run directory that holds one.",
)
@click.option(
    "--tolerance",
    type=float,
    default=0.02,
    show_default=True,
    help="Largest fall that is never a regression, as a fraction (0.02 = 2 points).",
)
@click.option("--alpha", type=float, default=0.05, show_default=True, help="Significance level of the one-sided test.")
@format_option("json: the findings as one object, for dashboards.")
@quiet_option("Print only what failed (regressed, missing, invalid); nothing on a pass.")
def check(run_dir: Path, baseline: Path, tolerance: float, alpha: float, fmt: str, quiet: bool) -> None:
    """Compare RUN_DIR/results.csv with a baseline table; exit 1 on a robustness regression.

    Measurements match on their full identity (data and its options, recipe, evaluation, model
    and its parameters, seed, attack and every option, eps, steps). A metric regressed when it
    fell by more than --tolerance and the fall is significant at --alpha (two-proportion test for
    Rank-k and accuracy; the run's bootstrap error for mAP). A baseline measurement missing from
    the run, or a run value that is empty or NaN, also fails (exit 1). An empty, header-only,
    ragged or non-numeric baseline is bad input (exit 2). Exit 0 when all is well.
    """
    from robustbench_lfm.check import CheckError, compare

    try:
        result = compare(run_dir, baseline, tolerance, alpha)
    except CheckError as err:
        fail(str(err))
    if fmt == "json":
        click.echo(result.to_json())
    elif quiet:
        failed = [
            line for line in result.to_text().splitlines() if line.startswith(("REGRESSED", "MISSING", "INVALID"))
        ]
        if failed:
            click.echo("\n".join(failed))
    else:
        click.echo(result.to_text())
    sys.exit(0 if result.passed else 1)


@main.command()
@click.argument("run_dir", type=click.Path(path_type=Path), required=False)
@click.option("--difference", type=float, required=True, help="The true difference to detect, in points (3 = 3).")
@click.option("--power", type=float, default=0.8, show_default=True, help="The chance of detecting it.")
@click.option("--alpha", type=float, default=0.05, show_default=True, help="The test's level (two-sided).")
@click.option("--metric", default="rank1", show_default=True, help="A metric with per-query outcomes: rank1 or mAP.")
@click.option("--queries", default="", help="Query counts to plan for, e.g. 277,3368 (default: the pilot's).")
@click.option("--seed-spread", type=float, default=None, help="Without RUN_DIR: the seed-to-seed spread of the "
              "difference, in points.")  # fmt: skip
@click.option("--query-spread", type=float, default=None, help="Without RUN_DIR: the spread of one query's paired "
              "difference, in points.")  # fmt: skip
def plan(run_dir: Path | None, difference: float, power: float, alpha: float, metric: str, queries: str,
         seed_spread: float | None, query_spread: float | None) -> None:  # fmt: skip
    """How many training seeds (and queries) detect a DIFFERENCE between two models with POWER.

    From a pilot RUN_DIR with two or more seeds (every model against plain, every condition), or
    from spreads you give (--seed-spread, --query-spread, --queries). The test planned for is the
    report's: a paired t-test over training seeds (robustbench_lfm/plan.py says the model).
    """
    from robustbench_lfm.plan import PlanError, Spreads, as_fraction, explain, pilot_spreads, plan_table

    try:
        wanted = as_fraction(difference, "--difference")
        if not 0 < power < 1 or not 0 < alpha < 1:
            raise PlanError(f"--power {power} and --alpha {alpha} must lie in (0, 1)")
        items = [q.strip() for q in queries.split(",") if q.strip()]
        if not all(q.isdigit() for q in items):
            raise PlanError(f"--queries {queries}: give whole numbers >= 1, e.g. 277,3368")
        counts = [int(q) for q in items]
        if any(q < 1 for q in counts):
            raise PlanError(f"--queries {queries}: give whole numbers >= 1, e.g. 277,3368")
        if run_dir is None:
            if seed_spread is None or query_spread is None or not counts:
                raise PlanError("give a pilot RUN_DIR, or --seed-spread, --query-spread and --queries")
            if not math.isfinite(seed_spread) or not 0 <= seed_spread < 100:
                raise PlanError(f"--seed-spread {seed_spread} must be a number of points in [0, 100)")
            rows = [("A", "B", "given", Spreads(seed_spread / 100, as_fraction(query_spread, "--query-spread")))]
        else:
            rows = pilot_spreads(run_dir, metric)
    except (PlanError, ValueError) as err:
        fail(str(err))
    table = plan_table(rows, wanted, counts, power, alpha)
    click.echo(table.to_string(index=False))
    click.echo(explain(wanted, power, alpha))


@main.command(name="ls")
@format_option("json: one object of every registry (names, parameters with defaults, descriptions, sources).")
@quiet_option("Names only, one per line, after their kind: model lfm, attack pgd.")
@plugin_option()
def ls(fmt: str, quiet: bool, plugins: tuple[str, ...]) -> None:
    """List registered models (with their parameters), regularizers, backbones, attacks, datasets,
    metrics and recipes; an entry from a plugin says which file or package it comes from.

    Loads the model and attack libraries (torch), whose registries are filled by importing them,
    the first time for the installed code; then prints what it remembered in the cache, without
    torch (robustbench_lfm/names.py; not with --plugin or installed plugin packages).
    """
    from robustbench_lfm import names
    from robustbench_lfm.files import default_cache_dir

    form = "json" if fmt == "json" else "quiet" if quiet else "text"
    forms = None if plugins else names.remembered_listing(default_cache_dir())
    if forms is None:
        startup.import_torch()
        from robustbench_lfm.listing import registry_listing, rendered
        from robustbench_lfm.plugins import load_plugins

        _guard(lambda: load_plugins(plugins))
        listing = registry_listing()
        forms = rendered(listing)
        if not plugins:
            names.remember(default_cache_dir(), listing)
    click.echo(forms[form])
