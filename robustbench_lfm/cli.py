"""The `lfm-bench` command line: `run` a sweep, `report` it, `check` it against a baseline, `ls`
the registries.

Exit status of every command: 0 success; 1 a regression, a failed cell or a failed check; 2 bad
input, one line `lfm-bench: error: <what is wrong and how to fix it>` (click's own usage errors
too); 3 an internal error, one line naming the file that holds the traceback. No traceback
reaches the terminal (`LfmBench.main`).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from robustbench_lfm.files import atomic_write
from robustbench_lfm.parsing import SpecError, format_eps, format_param

if TYPE_CHECKING:
    import pandas as pd

    from robustbench_lfm.executors import ExecSpec
    from robustbench_lfm.spec import RunSpec


def fail(message: str, status: int = 2) -> NoReturn:
    """Print one error line and exit."""
    click.echo(f"lfm-bench: error: {message}", err=True)
    sys.exit(status)


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


class LfmBench(click.Group):
    """The command group, with the exit-status contract of the module docstring."""

    def main(self, *args: Any, **kwargs: Any) -> NoReturn:
        kwargs["standalone_mode"] = False
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
        except Exception as err:
            internal_error(err)
        sys.exit(status if isinstance(status, int) else 0)


@click.group(cls=LfmBench, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lfm-bench")
def main() -> None:
    """lfm-bench: adversarial robustness of regularizers (LFM, Dropout, Cutout, RCM, ...).

    Sweeps registered models against registered attacks and records clean and attacked
    Rank-1 / mAP / mINP (re-ID) or accuracy (classification) into a tidy CSV, a manifest and
    plots; `report` turns a run into paper tables and figures, `check` gates CI on robustness
    regressions. See `lfm-bench ls`.
    """


PRESET_DIR = Path(__file__).with_name("presets")


def _presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def _apply_config(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Eager callback of --preset and --config: the file's keys become the run's defaults, so any
    flag given on the command line still wins."""
    if value is None:
        return None
    from robustbench_lfm.config import ConfigError, read_config

    path = PRESET_DIR / f"{value}.toml" if param.name == "preset" else Path(value)
    if param.name == "preset" and not path.is_file():
        fail(f"unknown preset {value!r} (known: {', '.join(_presets())}); or give a file with --config")
    try:
        defaults = read_config(path, ctx.command)
    except ConfigError as err:
        fail(str(err))
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    return value


@main.command()
@click.option(
    "--preset",
    default=None,
    is_eager=True,
    expose_value=False,
    callback=_apply_config,
    help="Run a shipped protocol: lfm-paper, rcm-cifar, robustbench-linf (robustbench_lfm/presets/).",
)
@click.option(
    "--config",
    default=None,
    is_eager=True,
    expose_value=False,
    callback=_apply_config,
    help="Run the options of a TOML file (keys are option names: models, attacks, eps, dataset, ...).",
)
@click.option(
    "--models",
    "models_",
    default="lfm",
    show_default=True,
    help="Comma list of model names with options, e.g. lfm,lfm:p=0.3,lfm:at=layer1,lfm:area=0.1..0.3 "
    "(see `lfm-bench ls`).",
)
@click.option(
    "--attacks",
    "attacks_",
    default="pgd",
    show_default=True,
    help="Comma list of attack names; options as pgd:steps=20 or sma:norm=l2,side=gallery (see `lfm-bench ls`).",
)
@click.option(
    "--eps",
    default="4/255,8/255",
    show_default=True,
    help="Budgets on the [0, 1] pixel scale in each attack's norm (L-inf: 8/255; L2: one image's L2 norm).",
)
@click.option(
    "--surrogate",
    default=None,
    help="Transfer attack: craft the images on this model (e.g. plain) and evaluate every model on them.",
)
@click.option("--quantize", is_flag=True, help="Round adversarial images to 8 bits (as saved PNGs) before evaluation.")
@click.option("--seeds", default="0", show_default=True, help="Training seeds, e.g. 0,1,2.")
@click.option(
    "--dataset",
    default="synthreid",
    show_default=True,
    help="Dataset name with options, e.g. synthreid:train_ids=40; classification: synthcls, digits, cifar10.",
)
@click.option(
    "--data-root",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder holding a real dataset (market1501, dukemtmc, cifar10) in its published layout.",
)
@click.option(
    "--distance",
    type=click.Choice(["cosine", "euclidean"]),
    default="cosine",
    show_default=True,
    help="Retrieval distance on the post-BNNeck embedding (euclidean = squared L2).",
)
@click.option(
    "--ap",
    type=click.Choice(["plain", "trapezoid"]),
    default="plain",
    show_default=True,
    help="AP formula: plain = torchreid's; trapezoid = the official Market-1501 script's (lower).",
)
@click.option("--flip", is_flag=True, help="Score (and attack) the flip-averaged embedding.")
@click.option(
    "--rerank",
    type=click.Choice(["off", "on", "both"]),
    default="off",
    show_default=True,
    help="k-reciprocal re-ranking (k1=20, k2=6, lambda=0.3); both = each cell scored both ways.",
)
@click.option(
    "--recipe",
    default="cpu",
    show_default=True,
    help="Training recipe for the dataset's task: cpu (CPU-sized), paper (the papers' GPU settings) "
    "or a .toml file (copy one from robustbench_lfm/recipes/).",
)
@click.option("--epochs", type=int, default=None, help="Override the recipe's epochs (schedule scaled).")
@click.option("--backbone", default=None, help="Override every model's backbone (resnet-mini, resnet18, resnet50).")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Run directory (default results/<run-name>/).",
)
@click.option("--name", default=None, help="Run name (default: models, attacks and a hash of the spec).")
@click.option(
    "--cache-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Checkpoints and generated data (default $LFM_BENCH_CACHE, else ~/.cache/lfm-bench).",
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option(
    "--batch-size",
    type=click.IntRange(1, 2**31 - 1),
    default=256,
    show_default=True,
    help="Evaluation and attack batch size.",
)
@click.option(
    "--executor",
    type=click.Choice(["local", "dask", "submitit"]),
    default="local",
    show_default=True,
    help="Where (model, seed) groups run: this machine, a dask cluster, or Slurm via submitit.",
)
@click.option(
    "--jobs",
    type=click.IntRange(1, 100_000),
    default=1,
    show_default=True,
    help="Parallel workers (processes, dask workers, array).",
)
@click.option(
    "--threads", type=click.IntRange(1, 4096), default=None, help="Torch threads per worker (default: cores / jobs)."
)
@click.option("--scheduler", default=None, help="dask scheduler address, e.g. tcp://10.0.0.5:8786 (default: local).")
@click.option(
    "--cluster",
    type=click.Choice(["slurm", "local", "debug"]),
    default=None,
    help="submitit cluster (default: Slurm when available).",
)
@click.option("--no-baseline", is_flag=True, help="Do not add the `plain` baseline model.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars or dataset summary.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json: print the summary (every headline cell, the sanity checks, the files) as one JSON object; "
    "progress lines go to stderr.",
)
def run(fmt: str, **opts: Any) -> None:
    """Train (or reuse cached) models and evaluate them clean and under attack.

    Writes results.csv, cmc.csv, probes.csv, sanity.csv, manifest.json, fingerprint.json,
    robustness.png and cmc.png to the run directory and prints a table of Rank-1 / mAP in % with
    the sanity checks under it. Rerunning the same command resumes an interrupted sweep,
    recomputing any cell whose record is incomplete; a run directory refuses a run with another
    dataset, recipe or evaluation (more models, attacks, eps or seeds may join it). Real
    datasets: --dataset market1501 --data-root DIR (or dukemtmc).
    """
    from robustbench_lfm.spec import build_spec

    executor = {k: opts.pop(k) for k in EXECUTOR_OPTIONS}
    spec = _guard(lambda: build_spec(**opts))
    ex = _guard(lambda: _exec_spec(spec, **executor))
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
        return run_sweep(spec, log=log, ex=ex), None
    except SweepError as err:  # the other models' cells are done: show them, then fail
        return ResultStore(spec.out_dir / "results.csv").read(), err
    except (StoreError, RunLockedError, SpecError, DatasetFolderError) as err:
        fail(str(err))


def _print_summary(spec: RunSpec, df: pd.DataFrame, failure: Exception | None, fmt: str, took: float) -> None:
    """The plots, then the table and sanity checks (text) or the summary object (json)."""
    from robustbench_lfm import sanity
    from robustbench_lfm.store import CMC_COLUMNS, ResultStore
    from robustbench_lfm.summary import cmc_labelled, plot_cmc, plot_eps_curves, summary_json, summary_table

    plot = plot_eps_curves(df, spec.out_dir / "robustness.png")
    curves = cmc_labelled(ResultStore(spec.out_dir / "cmc.csv", CMC_COLUMNS).read(), df)
    cmc_plot = plot_cmc(curves, spec.out_dir / "cmc.png", spec.data.name)
    checks = sanity.read(spec.out_dir / "sanity.csv")
    plots = [str(p) for p in (plot, cmc_plot) if p is not None]
    if fmt == "json":
        click.echo(json.dumps(summary_json(df, checks, spec.out_dir, plots, took, failure), indent=2))
        return
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


EXECUTOR_OPTIONS = ("executor", "jobs", "threads", "scheduler", "cluster")


def run_defaults() -> dict[str, Any]:
    """The `run` command's option defaults, keyed as `build_spec` takes them (for in-process callers)."""
    return {p.name: p.default for p in run.params if p.expose_value and p.name not in (*EXECUTOR_OPTIONS, "fmt")}


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
@click.option("--quiet", "-q", is_flag=True, help="Print nothing but errors (the files are still written).")
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
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option(
    "--baseline",
    type=click.Path(path_type=Path),
    required=True,
    help="A results.csv to compare against (e.g. the committed results/baseline/ci-synthreid.csv).",
)
@click.option(
    "--tolerance",
    type=float,
    default=0.02,
    show_default=True,
    help="Largest fall that is never a regression, as a fraction (0.02 = 2 points).",
)
@click.option("--alpha", type=float, default=0.05, show_default=True, help="Significance level of the one-sided test.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option(
    "--quiet",
    "-q",
    is_flag=True,
    help="Print only what failed (regressed, missing, invalid); nothing when the gate passes.",
)
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


def _show(key: str, value: Any) -> str:
    """A parameter as it is written on the command line: 0.02..0.4, 8/255."""
    return format_eps(value) if key in ("eps", "step_size") else format_param(value)


@main.command(name="ls")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json: one object of every registry (names, parameters with defaults, descriptions, sources).",
)
@click.option(
    "--quiet", "-q", is_flag=True, help="Names only, one per line, prefixed by their kind (model lfm, attack pgd, ...)."
)
def ls(fmt: str, quiet: bool) -> None:
    """List registered models (with their parameters), attacks, datasets, metrics and recipes.

    Loads the model and attack libraries (torch): their registries are filled by importing them.
    """
    listing = registry_listing()
    if fmt == "json":
        click.echo(json.dumps(listing, indent=2, default=str))
    elif quiet:
        for kind, entries in listing.items():
            click.echo("\n".join(f"{kind.rstrip('s')} {name}" for name in entries))
    else:
        click.echo(_listing_text(listing))


def registry_listing() -> dict[str, dict[str, dict[str, Any]]]:
    """Every registry as plain values: kind -> name -> {description, parameters, source, ...}."""
    import attacks
    import models
    import robustbench_lfm.methods  # noqa: F401  (registers the training methods' parameters)
    from robustbench_lfm import metric_table
    from robustbench_lfm.datasets import DATASETS
    from robustbench_lfm.recipe import recipe_names

    model_reg, attack_reg = models.registry.MODELS, attacks.registry.ATTACKS
    return {
        "models": {n: {"description": e.description, "parameters": e.defaults(), "source": model_reg.source(n)}
                   for n, e in model_reg.items()},
        "backbones": {n: {"input_size": list(b.input_size), "strides": list(b.strides),
                          "source": models.registry.BACKBONES.source(n)} for n, b in models.registry.BACKBONES.items()},
        "attacks": {n: {"description": _first_line(sys.modules[c.__module__].__doc__), "tasks": list(c.tasks),
                        "parameters": c.defaults(), "source": attack_reg.source(n)} for n, c in attack_reg.items()},
        "datasets": {n: {"description": d.description, "task": d.task, "source": DATASETS.source(n)}
                     for n, d in DATASETS.items()},
        "metrics": {n: {"label": m.label, "task": m.task, "headline": m.headline, "gated": m.gated,
                        "source": metric_table.METRICS.source(n)} for n, m in metric_table.METRICS.items()},
        "recipes": {task: {"names": recipe_names(task)} for task in models.TASKS},
    }  # fmt: skip


def _first_line(doc: str | None) -> str:
    return (doc or "").strip().splitlines()[0] if (doc or "").strip() else ""


def _outside(source: str) -> str:
    """` [from MODULE]` for an entry registered outside lfm-bench, else nothing."""
    return "" if source.split(".")[0] in ("models", "attacks", "robustbench_lfm") else f" [from {source}]"


def _listing_text(listing: dict[str, dict[str, dict[str, Any]]]) -> str:
    lines = ["models (NAME:key=value overrides a parameter):"]
    for name, m in listing["models"].items():
        lines.append(f"  {name:<16} {m['description']}{_outside(m['source'])}")
        params = ", ".join(f"{k}={_show(k, v)}" for k, v in m["parameters"].items())
        if params:
            lines.append(f"  {'':<16}   {params}")
    lines.append(f"backbones: {', '.join(listing['backbones'])}")
    lines.append("attacks:")
    for name, a in listing["attacks"].items():
        lines.append(f"  {name:<14} [{'/'.join(a['tasks'])}] {a['description']}{_outside(a['source'])}")
        options = ", ".join(f"{k}={'default' if v is None else _show(k, v)}" for k, v in a["parameters"].items())
        lines.append(f"  {'':<14}   {options}")
    lines.append("datasets:")
    lines += [
        f"  {name:<12} ({d['task']}) {d['description']}{_outside(d['source'])}"
        for name, d in listing["datasets"].items()
    ]
    lines.append("metrics: " + ", ".join(f"{n} ({m['task']})" for n, m in listing["metrics"].items()))
    lines.append("recipes (--recipe):")
    lines += [f"  {task}: {', '.join(r['names'])}" for task, r in listing["recipes"].items()]
    return "\n".join(lines)
