"""Training recipes: small TOML files per task, resolved into a frozen `TrainRecipe`.

`robustbench_lfm/recipes/` ships, per task, a CPU-sized default (`cpu`) and the papers' settings
for GPU users (`paper`); `--recipe NAME` picks one for the dataset's task and `--recipe FILE.toml`
reads a user's copy. A file names its `task` and any `TrainRecipe` field; a `[methods.NAME]`
table overrides a training method's parameters (e.g. the iteration at which group-wise inhibition
starts) for every model that uses it. The resolved recipe goes into manifest.json and into every
checkpoint key, so changing a number retrains.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from robustbench_lfm.hashing import content_hash, without_defaults
from robustbench_lfm.precision import PRECISIONS
from robustbench_lfm.typecheck import check_fields

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

RECIPE_DIR = Path(__file__).with_name("recipes")
Params = tuple[tuple[str, Any], ...]


class RecipeError(ValueError):
    """A recipe file is missing, malformed or inconsistent; the message names the fix."""


@dataclass(frozen=True)
class TrainRecipe:
    """How a model is trained. Field defaults are the CPU-sized re-ID recipe (recipes/reid-cpu.toml),
    but for `precision`: fp32 here, so a recipe file that does not name it trains in float32.

    Attributes:
        task: "reid" or "classification".
        backbone: backbone of every model that does not name one.
        epochs: passes over the training split.
        optimizer: "adam" or "sgd".
        lr: base learning rate.
        weight_decay: L2 weight decay.
        momentum: SGD momentum.
        nesterov: SGD Nesterov momentum.
        batch_size: classification batch size (re-ID batches are ids_per_batch x images_per_id).
        ids_per_batch: P of the re-ID P x K sampler.
        images_per_id: K of the re-ID P x K sampler.
        warmup_epochs: linear warm-up from warmup_factor x lr.
        warmup_factor: the warm-up's starting fraction of lr.
        milestones: epochs at which lr is multiplied by `gamma`.
        gamma: lr decay factor.
        label_smoothing: epsilon of the cross-entropy (re-ID ID loss, classification loss).
        triplet_margin: re-ID batch-hard triplet margin (non-squared Euclidean on the pooled feature).
        pad: pixels of zero padding before the random crop.
        flip: random horizontal flip with probability 0.5.
        methods: per training method, parameter overrides: (("gwi", (("start_iter", 100),)),).
        init: the backbone's initialisation the recipe expects: "random", or "imagenet" (ImageNet
            weights from a file the user gives with --pretrained; lfm-bench downloads nothing).
        precision: "fp32", or "bf16" to train under bfloat16 autocast (robustbench_lfm/precision.py);
            --precision sets it.
        source: the recipe's name or file (not part of the checkpoint key).
    """

    task: str = "reid"
    backbone: str = "resnet-mini"
    epochs: int = 15
    optimizer: str = "adam"
    lr: float = 6e-3
    weight_decay: float = 5e-4
    momentum: float = 0.9
    nesterov: bool = False
    batch_size: int = 64
    ids_per_batch: int = 16
    images_per_id: int = 4
    warmup_epochs: int = 1
    warmup_factor: float = 0.1
    milestones: tuple[int, ...] = (12,)
    gamma: float = 0.1
    label_smoothing: float = 0.1
    triplet_margin: float = 0.3
    pad: int = 3
    flip: bool = True
    methods: tuple[tuple[str, Params], ...] = ()
    init: str = "random"
    precision: str = "fp32"
    source: str = "reid-cpu"

    def __post_init__(self) -> None:
        problems = []
        if self.task not in ("reid", "classification"):
            problems.append(f"task = {self.task!r} must be 'reid' or 'classification'")
        if self.init not in ("random", "imagenet"):
            problems.append(f"init = {self.init!r} must be 'random' or 'imagenet'")
        if self.precision not in PRECISIONS:
            problems.append(f"precision = {self.precision!r} must be one of {', '.join(PRECISIONS)}")
        if self.optimizer not in ("adam", "sgd"):
            problems.append(f"optimizer = {self.optimizer!r} must be 'adam' or 'sgd'")
        if self.epochs < 1 or self.batch_size < 2 or self.ids_per_batch < 2 or self.images_per_id < 2:
            problems.append("epochs must be >= 1 and batch_size, ids_per_batch, images_per_id >= 2")
        if not self.lr > 0 or self.weight_decay < 0 or not 0 <= self.label_smoothing < 1:
            problems.append("lr must be > 0, weight_decay >= 0, label_smoothing in [0, 1)")
        if problems:
            raise RecipeError(f"recipe {self.source}: " + "; ".join(problems))

    def method_overrides(self, method: str) -> dict[str, Any]:
        """The recipe's parameter overrides for the training method `method`."""
        return dict(dict(self.methods).get(method, ()))

    def scaled_to(self, epochs: int) -> TrainRecipe:
        """The same recipe over `epochs` epochs, warm-up and milestones scaled proportionally."""
        if epochs < 1:
            raise RecipeError(f"--epochs {epochs} must be >= 1")
        f = epochs / self.epochs
        stones = tuple(sorted({max(1, round(m * f)) for m in self.milestones if round(m * f) < epochs}))
        warmup = min(round(self.warmup_epochs * f), epochs - 1)
        return replace(self, epochs=epochs, warmup_epochs=warmup, milestones=stones)

    def key(self) -> dict[str, Any]:
        """What identifies the recipe in checkpoint keys: every field but `source`."""
        key = {k: v for k, v in dataclasses.asdict(self).items() if k != "source"}
        return without_defaults(key, {"init": "random", "precision": "fp32"})

    def fingerprint(self) -> str:
        """The CSV `recipe_key`: a short hash of `key()` (two recipes with one key train alike)."""
        return content_hash(self.key(), 12)


def recipe_names(task: str) -> list[str]:
    """The shipped recipe names for `task` ("cpu", "paper")."""
    return sorted(p.stem.removeprefix(f"{task}-") for p in RECIPE_DIR.glob(f"{task}-*.toml"))


def load_recipe(name_or_path: str | Path, task: str) -> TrainRecipe:
    """The recipe `name_or_path`: a shipped name ("cpu", "paper") or a TOML file.

    Raises:
        RecipeError: unknown name, unreadable or malformed file, unknown field, or a task that is
            not the dataset's.
    """
    text = str(name_or_path)
    path = Path(text) if text.endswith(".toml") or Path(text).is_file() else RECIPE_DIR / f"{task}-{text}.toml"
    if not path.is_file():
        known = ", ".join(recipe_names(task))
        raise RecipeError(f"no recipe {text!r} for task {task!r}: give one of {known} or a .toml file")
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise RecipeError(f"recipe file {path} cannot be read: {err}") from None
    return _from_table(raw, path.stem if path.parent == RECIPE_DIR else str(path), task)


def _from_table(raw: dict[str, Any], source: str, task: str) -> TrainRecipe:
    fields = {f.name: f for f in dataclasses.fields(TrainRecipe)}
    unknown = sorted(set(raw) - set(fields) - {"source"})
    if unknown:
        raise RecipeError(f"recipe {source}: unknown field(s) {', '.join(unknown)} (known: {', '.join(fields)})")
    if raw.get("task", task) != task:
        raise RecipeError(f"recipe {source} is for task {raw.get('task')!r}, but the dataset's task is {task!r}")
    values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items() if k != "methods"}
    methods = raw.get("methods", {})
    if not isinstance(methods, dict) or not all(isinstance(v, dict) for v in methods.values()):
        raise RecipeError(f"recipe {source}: write method overrides as [methods.NAME] tables of key = value")
    values["methods"] = tuple(sorted((m, tuple(sorted(p.items()))) for m, p in methods.items()))
    problem = check_fields(TrainRecipe, values)
    if problem:
        raise RecipeError(f"recipe {source}: {problem}")
    try:
        return TrainRecipe(**{**values, "task": task, "source": source})
    except TypeError as err:
        raise RecipeError(f"recipe {source}: {err}") from None
