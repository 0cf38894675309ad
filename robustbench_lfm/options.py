"""The options of a run, declared once: `RunOptions`.

Each field of `RunOptions` is one option: its Python name (the keyword of `build_spec` and
`robustbench_lfm.evaluate`, the key of a config file, and `--name-with-dashes` on the command
line), its type (the annotation) and default (real Python values), and its `Declared` metadata:
the help line, the section (data, eval, threat, model, exec), the CSV column it feeds, and the
value at which it is left out of every key (`key_default`: cell ids, checkpoint keys and the run
directory's fingerprint written before the option existed stay valid). The CLI's `run` options
(robustbench_lfm/cli_options.py), `evaluate()`'s keywords and their checks (`convert`), and
docs/options.md (`markdown_table`, kept equal by a test) are generated from it.

Adding an option that changes numbers: a field here (with its `column`), that column in
robustbench_lfm/columns.py, its use in `build_spec` (robustbench_lfm/spec.py), and a test.
Torch-free and click-free.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robustbench_lfm.parsing import INT_LIMIT, SpecError

SECTIONS = ("model", "threat", "data", "eval", "exec")
ALWAYS = object()  # `key_default` of an option that is in every key it feeds, whatever its value


@dataclass(frozen=True)
class Declared:
    """What an option is besides its name, type and default.

    Attributes:
        help: its `--help` line.
        section: one of SECTIONS.
        column: the CSV column it feeds ("" for an option that changes no number: where and how
            the run executes).
        key_default: the value at which it is left out of every key (ALWAYS: never left out).
        choices: the values it takes, when they are a fixed set.
        minimum, maximum: an integer option's bounds.
        evaluate: a keyword of `robustbench_lfm.evaluate` (an option that applies to a given model).
        flag: its command-line flag, when not `--name-with-dashes` (`--plugin`).
        short: a one-letter alias (`-q`).
    """

    help: str
    section: str
    column: str = ""
    key_default: Any = ALWAYS
    choices: tuple[str, ...] = ()
    minimum: int | None = None
    maximum: int | None = None
    evaluate: bool = False
    flag: str = ""
    short: str = ""


def option(default: Any, help: str, section: str, **declared: Any) -> Any:
    """A `RunOptions` field: its default and its `Declared` metadata."""
    if section not in SECTIONS:
        raise ValueError(f"section {section!r} is not one of {SECTIONS}")
    return field(default=default, metadata={"declared": Declared(help, section, **declared)})


@dataclass(frozen=True)
class RunOptions:
    """Every option of `lfm-bench run`, with its default (module docstring)."""

    models: str = option(
        "lfm",
        "Comma list of model names with options, e.g. lfm,lfm:p=0.3,lfm:at=layer1,lfm:area=0.1..0.3; "
        "a+b joins models into one composed defence (rcm-up+pgd-at); see `lfm-bench ls`.",
        "model", column="model",
    )  # fmt: skip
    attacks: str = option(
        "pgd",
        "Comma list of attack names; options as pgd:steps=20, sma:norm=l2,side=gallery or "
        "pgd:di_prob=0.5,ti_kernel=5 (transfer); uap (universal); corrupt:severity=3 (the 15 common "
        "corruptions; see `lfm-bench ls`).",
        "threat", column="attack_params", evaluate=True,
    )  # fmt: skip
    eps: str = option(
        "4/255,8/255",
        "Budgets on the [0, 1] pixel scale in each attack's norm (L-inf: 8/255; L2: one image's L2 norm); "
        "a value within 1e-6 of k/255 is k/255, and a budget given twice counts once.",
        "threat", column="eps", evaluate=True,
    )  # fmt: skip
    surrogate: str | None = option(
        None,
        "Transfer attack: craft the images on this model (e.g. plain) and evaluate every model on them.",
        "threat", column="surrogate",
    )  # fmt: skip
    quantize: bool = option(
        False, "Round adversarial images to 8 bits (as saved PNGs) before evaluation.", "threat",
        column="quantize", evaluate=True,
    )  # fmt: skip
    seeds: str = option("0", "Training seeds, e.g. 0,1,2.", "model", column="train_seed", evaluate=True)
    dataset: str = option(
        "synthreid",
        "Dataset name with options, e.g. synthreid:train_ids=40; classification: synthcls, digits, cifar10.",
        "data", column="data_params", evaluate=True,
    )  # fmt: skip
    test_dataset: str | None = option(
        None,
        "Score another dataset than the one trained on (generalization across domains), with options: "
        "--dataset market1501 --test-dataset dukemtmc, or synthreid:domain=b; same task. CSV test_dataset.",
        "data", column="test_data_params", evaluate=True,
    )  # fmt: skip
    data_root: Path | None = option(
        None,
        "Folder holding a real dataset (market1501, dukemtmc, cifar10) in its published layout.",
        "data", column="data_params", evaluate=True,
    )  # fmt: skip
    distance: str = option(
        "cosine", "Retrieval distance on the post-BNNeck embedding (euclidean = squared L2).", "eval",
        column="distance", choices=("cosine", "euclidean"), evaluate=True,
    )  # fmt: skip
    ap: str = option(
        "plain", "AP formula: plain = torchreid's; trapezoid = the official Market-1501 script's (lower).", "eval",
        column="ap", choices=("plain", "trapezoid"), evaluate=True,
    )  # fmt: skip
    flip: bool = option(False, "Score (and attack) the flip-averaged embedding.", "eval", column="flip", evaluate=True)
    rerank: str = option(
        "off", "k-reciprocal re-ranking (k1=20, k2=6, lambda=0.3); both = each cell scored both ways.", "eval",
        column="rerank", choices=("off", "on", "both"), evaluate=True,
    )  # fmt: skip
    n_eval: int = option(
        0,
        "Score a fixed, seeded subset of N queries (re-ID, whole gallery) or test images; 0 = all. "
        "A quick look: the subset size is in the n_eval column and the report says so.",
        "eval", column="eval_subset", key_default=0, minimum=0, maximum=INT_LIMIT - 1, evaluate=True,
    )  # fmt: skip
    score_repeats: int = option(
        1,
        "Score every cell this many times (fresh forward passes of the same clean and adversarial images) "
        "and record the mean and its spread (CSV value, score_sd): for a model random in eval mode, which "
        "needs >= 2 and eot >= 2 on every gradient attack.",
        "eval", column="score_repeats", key_default=1, minimum=1, maximum=1000, evaluate=True,
    )  # fmt: skip
    train_fraction: float = option(
        1.0,
        "Train on this share of the training split, in (0, 1]: a fixed draw (seed 0), stratified "
        "by identity or class (the low-data regime; CSV train_fraction).",
        "data", column="train_fraction", key_default=1.0,
    )  # fmt: skip
    train_by: str = option(
        "images",
        "images: that share of every identity's (class's) images; ids: that share of the re-ID "
        "identities, all their images.",
        "data", column="train_fraction", choices=("images", "ids"),
    )  # fmt: skip
    precision: str | None = option(
        None,
        "Training and feature extraction in float32 or under bfloat16 autocast (default: training as the "
        "recipe says, bf16 in the cpu re-ID recipe; features fp32).",
        "eval", column="precision", choices=("fp32", "bf16"), key_default="fp32", evaluate=True,
    )  # fmt: skip
    attack_precision: str = option(
        "fp32", "The attacks' passes; bf16 rounds pixels coarser than one 1/255 step, a weaker attack.", "threat",
        column="attack_precision", choices=("fp32", "bf16"), key_default="fp32", evaluate=True,
    )  # fmt: skip
    recipe: str = option(
        "cpu",
        "Training recipe for the dataset's task: cpu (CPU-sized), paper (the papers' GPU settings) "
        "or a .toml file (copy one from robustbench_lfm/recipes/).",
        "model", column="recipe_key",
    )  # fmt: skip
    epochs: int | None = option(
        None, "Override the recipe's epochs (schedule scaled).", "model", column="recipe_key", minimum=1,
        maximum=INT_LIMIT - 1,
    )  # fmt: skip
    pretrained: Path | None = option(
        None,
        "Initialise every model's backbone from this torchvision-layout ResNet state dict "
        "(.pth read with weights_only, or .safetensors); its sha256 joins the checkpoint key and the CSV.",
        "model", column="pretrained_sha256",
    )  # fmt: skip
    backbone: str | None = option(
        None,
        "Override every model's backbone (resnet-mini, resnet18, resnet50, preact-resnet18, vgg16); "
        "a model's own backbone=NAME comes first.",
        "model", column="backbone",
    )  # fmt: skip
    plugins: tuple[str, ...] = option(
        (),
        "Load outside code that registers regularizers, models, attacks or datasets: a .py file or an "
        "importable module (repeatable). Installed `lfm_bench.plugins` entry points load always.",
        "model", column="code", flag="--plugin",
    )  # fmt: skip
    no_baseline: bool = option(False, "Do not add the `plain` baseline model.", "model")
    out: Path | None = option(None, "Run directory (default results/<run-name>/).", "exec")
    name: str | None = option(None, "Run name (default: models, attacks and a hash of the spec).", "exec")
    cache_dir: Path | None = option(
        None, "Checkpoints and generated data (default $LFM_BENCH_CACHE, else ~/.cache/lfm-bench).", "exec",
        evaluate=True,
    )  # fmt: skip
    device: str = option("auto", "auto, cpu, cuda or cuda:K.", "exec", evaluate=True)
    batch_size: int = option(
        256,
        "Evaluation and attack batch size (a last batch under a quarter of it joins the one before).",
        "exec",
        minimum=1,
        maximum=INT_LIMIT - 1,
        evaluate=True,
    )
    executor: str = option(
        "local", "Where (model, seed) groups run: this machine, a dask cluster, or Slurm via submitit.", "exec",
        choices=("local", "dask", "submitit"),
    )  # fmt: skip
    jobs: int = option(1, "Parallel workers (processes, dask workers, array).", "exec", minimum=1, maximum=100_000)
    threads: int | None = option(
        None, "Torch threads per worker (default: cores / jobs).", "exec", minimum=1, maximum=4096
    )
    scheduler: str | None = option(None, "dask scheduler address, e.g. tcp://10.0.0.5:8786 (default: local).", "exec")
    cluster: str | None = option(
        None, "submitit cluster (default: Slurm when available).", "exec", choices=("slurm", "local", "debug")
    )
    quiet: bool = option(False, "No progress bars or dataset summary.", "exec", short="-q", evaluate=True)
    dry_run: bool = option(
        False,
        "Print the grid (models to train or reuse, cells to run or resume) and an estimate of its time from the "
        "rates earlier sweeps measured, then stop: nothing is trained, attacked or recorded (generated data is "
        "cached, as the run would).",
        "exec",
    )  # fmt: skip
    note: str | None = option(
        None, "A line printed above the result table and kept in manifest.json (the smoke preset says what it is).",
        "exec",
    )  # fmt: skip


EXECUTOR = ("executor", "jobs", "threads", "scheduler", "cluster")  # where groups run: not the spec's


def declared() -> dict[str, tuple[dataclasses.Field, Declared]]:
    """Option name -> (its field, its declaration), in `--help` order."""
    return {f.name: (f, f.metadata["declared"]) for f in dataclasses.fields(RunOptions)}


def kind(f: dataclasses.Field) -> str:
    """An option's kind from its annotation: flag, int, float, path, list or text."""
    annotation = str(f.type)
    for name, found in (("bool", "flag"), ("tuple", "list"), ("Path", "path"), ("int", "int"), ("float", "float")):
        if annotation.startswith(name):
            return found
    return "text"


def flag(name: str) -> str:
    """An option's command-line flag: `--n-eval`, or its declared one (`--plugin`)."""
    return declared()[name][1].flag or "--" + name.replace("_", "-")


def at_key_default(name: str, value: Any) -> bool:
    """Whether option `name` at `value` is left out of every key (module docstring)."""
    default = declared()[name][1].key_default
    return default is not ALWAYS and value == default


def evaluate_keywords() -> tuple[str, ...]:
    """The options `robustbench_lfm.evaluate` takes, in `--help` order."""
    return tuple(name for name, (_, d) in declared().items() if d.evaluate)


def convert(name: str, value: Any) -> Any:
    """`value` checked as option `name` takes it (SpecError naming the option and the fix)."""
    f, d = declared()[name]
    what = f"{name}={value!r}"
    if value is None and f.default is None:
        return None
    found = kind(f)
    if found == "flag":
        if not isinstance(value, bool):
            raise SpecError(f"{what} must be True or False")
        return value
    if found == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecError(f"{what} must be a whole number")
        low, high = d.minimum, d.maximum
        if (low is not None and value < low) or (high is not None and value > high):
            raise SpecError(f"{what} must lie in [{low}, {high}]")
        return value
    if found == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise SpecError(f"{what} must be a finite number")
        return float(value)
    if found == "path":
        if not isinstance(value, (str, Path)):
            raise SpecError(f"{what} must be a path")
        return Path(value)
    if found == "list":
        if isinstance(value, str):
            return (value,)
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise SpecError(f"{what} must be a string or a sequence of strings")
        return tuple(value)
    if not isinstance(value, str):
        raise SpecError(f"{what} must be a string")
    if d.choices and value not in d.choices:
        raise SpecError(f"{what} must be one of {', '.join(d.choices)}")
    return value


def unknown(name: str, known: tuple[str, ...]) -> str:
    """The did-you-mean for a keyword that is not among `known`."""
    close = [k for k in known if k.startswith(name) or name.startswith(k)] or difflib.get_close_matches(name, known, 3)
    return f"; did you mean {' or '.join(close[:3])}?" if close else ""


def markdown_table() -> str:
    """docs/options.md's table (a test keeps the file equal to it)."""
    lines = ["| option | default | section | CSV column | left out of keys at | evaluate() | meaning |",
             "| --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for name, (f, d) in declared().items():
        shown = "" if d.key_default is ALWAYS else f"`{d.key_default!r}`"
        values = f" ({' / '.join(d.choices)})" if d.choices else ""
        lines.append(
            f"| `{flag(name)}` | `{f.default!r}` | {d.section} | {f'`{d.column}`' if d.column else ''} | {shown} | "
            f"{'yes' if d.evaluate else ''} | {d.help}{values} |"
        )
    return "\n".join(lines) + "\n"
