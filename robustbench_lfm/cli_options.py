"""The options of `lfm-bench run`, as data, and the shared `--format` and `--quiet` options.

`RUN_OPTIONS` is the list of click options of `run` in `--help` order; `with_options` applies a
list to a command. `--preset` and `--config` are eager: their file's keys become the run's
defaults (`apply_config`), so a flag given on the command line still wins. `run_defaults` reads
every option's default, and `evaluate_options` the options that `robustbench_lfm.evaluate` takes
by the same names, so the CLI and the Python entry point share one table. Torch-free.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]

PRESET_DIR = Path(__file__).with_name("presets")


def presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def apply_config(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Eager callback of --preset and --config: the file's keys become the run's defaults, so any
    flag given on the command line still wins."""
    if value is None:
        return None
    from robustbench_lfm.cli import fail
    from robustbench_lfm.config import ConfigError, read_config

    path = PRESET_DIR / f"{value}.toml" if param.name == "preset" else Path(value)
    if param.name == "preset" and not path.is_file():
        fail(f"unknown preset {value!r} (known: {', '.join(presets())}); or give a file with --config")
    try:
        defaults = read_config(path, ctx.command)
    except ConfigError as err:
        fail(str(err))
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    return value


def with_options(options: list[Decorator]) -> Decorator:
    """A decorator applying `options` so that `--help` lists them in the order given."""

    def wrap(command: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            command = option(command)
        return command

    return wrap


def plugin_option() -> Decorator:
    """`--plugin FILE.py|MODULE` (repeatable; `plugins = [...]` in a config file)."""
    return click.option(
        "--plugin",
        "plugins",
        multiple=True,
        help="Load outside code that registers regularizers, models, attacks or datasets: a .py file or an "
        "importable module (repeatable). Installed `lfm_bench.plugins` entry points load always.",
    )


def format_option(json_means: str) -> Decorator:
    """`--format text|json`; `json_means` says what the JSON holds."""
    return click.option(
        "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True, help=json_means
    )


def quiet_option(means: str) -> Decorator:
    """`--quiet` / `-q` with what it silences for this command."""
    return click.option("--quiet", "-q", is_flag=True, default=False, help=means)


RUN_OPTIONS: list[Decorator] = [
    click.option(
        "--preset",
        default=None,
        is_eager=True,
        expose_value=False,
        callback=apply_config,
        help="Run a shipped protocol: lfm-paper, rcm-cifar, robustbench-linf (robustbench_lfm/presets/).",
    ),
    click.option(
        "--config",
        default=None,
        is_eager=True,
        expose_value=False,
        callback=apply_config,
        help="Run the options of a TOML file (keys are option names: models, attacks, eps, dataset, ...).",
    ),
    click.option(
        "--models",
        "models_",
        default="lfm",
        show_default=True,
        help="Comma list of model names with options, e.g. lfm,lfm:p=0.3,lfm:at=layer1,lfm:area=0.1..0.3; "
        "a+b joins models into one composed defence (rcm-up+pgd-at); see `lfm-bench ls`.",
    ),
    click.option(
        "--attacks",
        "attacks_",
        default="pgd",
        show_default=True,
        help="Comma list of attack names; options as pgd:steps=20, sma:norm=l2,side=gallery or "
        "pgd:di_prob=0.5,ti_kernel=5 (transfer); uap (universal); corrupt:severity=3 (the 15 common "
        "corruptions; see `lfm-bench ls`).",
    ),
    click.option(
        "--eps",
        default="4/255,8/255",
        show_default=True,
        help="Budgets on the [0, 1] pixel scale in each attack's norm (L-inf: 8/255; L2: one image's L2 norm); "
        "a value within 1e-6 of k/255 is k/255, and a budget given twice counts once.",
    ),
    click.option(
        "--surrogate",
        default=None,
        help="Transfer attack: craft the images on this model (e.g. plain) and evaluate every model on them.",
    ),
    click.option(
        "--quantize",
        is_flag=True,
        default=False,
        help="Round adversarial images to 8 bits (as saved PNGs) before evaluation.",
    ),
    click.option("--seeds", default="0", show_default=True, help="Training seeds, e.g. 0,1,2."),
    click.option(
        "--dataset",
        default="synthreid",
        show_default=True,
        help="Dataset name with options, e.g. synthreid:train_ids=40; classification: synthcls, digits, cifar10.",
    ),
    click.option(
        "--test-dataset",
        default=None,
        help="Score another dataset than the one trained on (generalization across domains), with options: "
        "--dataset market1501 --test-dataset dukemtmc, or synthreid:domain=b; same task. CSV test_dataset.",
    ),
    click.option(
        "--data-root",
        type=click.Path(path_type=Path),
        default=None,
        help="Folder holding a real dataset (market1501, dukemtmc, cifar10) in its published layout.",
    ),
    click.option(
        "--distance",
        type=click.Choice(["cosine", "euclidean"]),
        default="cosine",
        show_default=True,
        help="Retrieval distance on the post-BNNeck embedding (euclidean = squared L2).",
    ),
    click.option(
        "--ap",
        type=click.Choice(["plain", "trapezoid"]),
        default="plain",
        show_default=True,
        help="AP formula: plain = torchreid's; trapezoid = the official Market-1501 script's (lower).",
    ),
    click.option("--flip", is_flag=True, default=False, help="Score (and attack) the flip-averaged embedding."),
    click.option(
        "--rerank",
        type=click.Choice(["off", "on", "both"]),
        default="off",
        show_default=True,
        help="k-reciprocal re-ranking (k1=20, k2=6, lambda=0.3); both = each cell scored both ways.",
    ),
    click.option(
        "--n-eval",
        type=click.IntRange(0, 2**31 - 1),
        default=0,
        show_default=True,
        help="Score a fixed, seeded subset of N queries (re-ID, whole gallery) or test images; 0 = all. "
        "A quick look: the subset size is in the n_eval column and the report says so.",
    ),
    click.option(
        "--train-fraction",
        type=float,
        default=1.0,
        show_default=True,
        help="Train on this share of the training split, in (0, 1]: a fixed draw (seed 0), stratified "
        "by identity or class (the low-data regime; CSV train_fraction).",
    ),
    click.option(
        "--train-by",
        type=click.Choice(["images", "ids"]),
        default="images",
        show_default=True,
        help="images: that share of every identity's (class's) images; ids: that share of the re-ID "
        "identities, all their images.",
    ),
    click.option(
        "--precision",
        type=click.Choice(["fp32", "bf16"]),
        default=None,
        help="Training and feature extraction in float32 or under bfloat16 autocast (default: the recipe's, fp32).",
    ),
    click.option(
        "--attack-precision",
        type=click.Choice(["fp32", "bf16"]),
        default="fp32",
        show_default=True,
        help="The attacks' passes; bf16 rounds pixels coarser than one 1/255 step, a weaker attack.",
    ),
    click.option(
        "--recipe",
        default="cpu",
        show_default=True,
        help="Training recipe for the dataset's task: cpu (CPU-sized), paper (the papers' GPU settings) "
        "or a .toml file (copy one from robustbench_lfm/recipes/).",
    ),
    click.option("--epochs", type=int, default=None, help="Override the recipe's epochs (schedule scaled)."),
    click.option(
        "--pretrained",
        type=click.Path(path_type=Path),
        default=None,
        help="Initialise every model's backbone from this torchvision-layout ResNet state dict "
        "(.pth read with weights_only, or .safetensors); its sha256 joins the checkpoint key and the CSV.",
    ),
    click.option(
        "--backbone",
        default=None,
        help="Override every model's backbone (resnet-mini, resnet18, resnet50, preact-resnet18, vgg16); "
        "a model's own backbone=NAME comes first.",
    ),
    plugin_option(),
    click.option(
        "--out",
        type=click.Path(path_type=Path),
        default=None,
        help="Run directory (default results/<run-name>/).",
    ),
    click.option("--name", default=None, help="Run name (default: models, attacks and a hash of the spec)."),
    click.option(
        "--cache-dir",
        type=click.Path(path_type=Path),
        default=None,
        help="Checkpoints and generated data (default $LFM_BENCH_CACHE, else ~/.cache/lfm-bench).",
    ),
    click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:K."),
    click.option(
        "--batch-size",
        type=click.IntRange(1, 2**31 - 1),
        default=256,
        show_default=True,
        help="Evaluation and attack batch size.",
    ),
    click.option(
        "--executor",
        type=click.Choice(["local", "dask", "submitit"]),
        default="local",
        show_default=True,
        help="Where (model, seed) groups run: this machine, a dask cluster, or Slurm via submitit.",
    ),
    click.option(
        "--jobs",
        type=click.IntRange(1, 100_000),
        default=1,
        show_default=True,
        help="Parallel workers (processes, dask workers, array).",
    ),
    click.option(
        "--threads",
        type=click.IntRange(1, 4096),
        default=None,
        help="Torch threads per worker (default: cores / jobs).",
    ),
    click.option(
        "--scheduler", default=None, help="dask scheduler address, e.g. tcp://10.0.0.5:8786 (default: local)."
    ),
    click.option(
        "--cluster",
        type=click.Choice(["slurm", "local", "debug"]),
        default=None,
        help="submitit cluster (default: Slurm when available).",
    ),
    click.option("--no-baseline", is_flag=True, default=False, help="Do not add the `plain` baseline model."),
    quiet_option("No progress bars or dataset summary."),
    format_option(
        "json: print the summary (every headline cell, the sanity checks, the files) as one JSON object; "
        "progress lines go to stderr."
    ),
]


EXECUTOR_OPTIONS = ("executor", "jobs", "threads", "scheduler", "cluster")

# The `run` options that apply to a model given to `robustbench_lfm.evaluate`: the data, threat and
# evaluation it is scored under, and where. The others train registered models (models, recipe,
# epochs, backbone, pretrained, train fraction), name the run (out, name) or drive the CLI.
EVALUATE_OPTIONS = (
    "dataset", "test_dataset", "data_root", "attacks", "eps", "seeds", "quantize", "distance", "ap", "flip",
    "rerank", "n_eval", "precision", "attack_precision", "cache_dir", "device", "batch_size", "quiet",
)  # fmt: skip


@functools.cache
def run_command() -> click.Command:
    """A command holding `run`'s options (for reading their names, types and defaults)."""
    command = click.command()(with_options(RUN_OPTIONS)(lambda **_: None))
    return click.Command("run", params=command.params)


def keyword(option: click.Parameter) -> str:
    """An option's Python keyword: its long flag with `-` as `_` (`--n-eval` -> `n_eval`)."""
    flag = next(o for o in option.opts if o.startswith("--"))
    return flag[2:].replace("-", "_")


def run_defaults() -> dict[str, Any]:
    """The `run` command's option defaults, keyed as `build_spec` takes them (for in-process callers).
    Every flag states `default=False`: click 8.5 leaves an unstated default as its UNSET marker."""
    ctx = click.Context(run_command())
    return {
        p.name: () if getattr(p, "multiple", False) else p.get_default(ctx)  # a repeatable option's default is empty
        for p in run_command().params
        if p.expose_value and p.name is not None and p.name not in (*EXECUTOR_OPTIONS, "fmt")
    }


def evaluate_options() -> dict[str, click.Option]:
    """`robustbench_lfm.evaluate`'s keywords: `EVALUATE_OPTIONS`, each the `run` option of that name."""
    table = {keyword(p): p for p in run_command().params if isinstance(p, click.Option)}
    return {name: table[name] for name in EVALUATE_OPTIONS}
