"""The frozen run specification: names and options parsed and validated once, then expanded into cells.

Validation lives here, not in the CLI: every problem raises `SpecError` with a message that names
the problem and the fix. Registry names are the same strings in the CLI, config and CSV.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import attacks
import models
import robustbench_lfm.methods  # noqa: F401  (registers the training methods' parameters)
from robustbench_lfm import __version__
from robustbench_lfm.datasets import get_dataset_info
from robustbench_lfm.hashing import canonical_json, content_hash
from robustbench_lfm.identity import format_eps
from robustbench_lfm.recipe import RecipeError, TrainRecipe

__all__ = ["RecipeError", "TrainRecipe", "format_eps"]  # re-exported: the spec is where callers meet them


class SpecError(ValueError):
    """Bad user input; the message says what is wrong and how to fix it."""


Params = tuple[tuple[str, Any], ...]


def parse_scalar(text: str) -> Any:
    """'3' -> 3, '0.5' -> 0.5, '8/255' -> 0.0313..., 'true' -> True, '0.02..0.4' -> (0.02, 0.4),
    '2..7' -> (2, 7), else the string."""
    low = text.strip().lower()
    if ".." in low:
        parts = [parse_scalar(t) for t in low.split("..")]
        if len(parts) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in parts):
            return (parts[0], parts[1])  # ints stay ints: images_per_visit=2..7
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    try:
        return float(Fraction(text))
    except (ValueError, ZeroDivisionError):
        return text.strip()


def parse_named(item: str) -> tuple[str, Params]:
    """'lfm:p=0.3,channels=0.25' -> ('lfm', (('channels', 0.25), ('p', 0.3)))."""
    name, _, rest = item.strip().partition(":")
    params: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = part.partition("=")
        if not eq or not key.strip():
            raise SpecError(f"bad option {part!r} in {item!r}; write NAME:key=value,key=value")
        params[key.strip()] = _checked_number(parse_scalar(value), part, item)
    return name.strip(), tuple(sorted(params.items()))


INT_LIMIT = 2**31  # options are counts, sizes and seeds: anything larger is a typo or an overflow


def _checked_number(value: Any, part: str, item: str) -> Any:
    """`value`, refused when it is a number that is not finite or overflows (NaN passes `< 0`)."""
    numbers = value if isinstance(value, tuple) else (value,)
    for v in numbers:
        if isinstance(v, float) and not math.isfinite(v):
            raise SpecError(f"option {part!r} in {item!r} is not a finite number; write e.g. 0.1")
        if isinstance(v, int) and not isinstance(v, bool) and abs(v) >= INT_LIMIT:
            raise SpecError(f"option {part!r} in {item!r} is out of range (|value| must be < 2^31)")
    return value


def split_list(text: str) -> list[str]:
    """Split a comma list of names, keeping 'name:k=v,k=v' groups together ('+' also separates)."""
    items: list[str] = []
    for part in (p.strip() for p in text.replace("+", ",").split(",")):
        if not part:
            continue
        if "=" in part and ":" not in part and items:
            items[-1] += "," + part  # a further option of the previous name
        else:
            items.append(part)
    return items


def parse_eps(text: str) -> tuple[float, ...]:
    """'2/255,4/255,8/255' -> floats on the pixel scale; each must lie in [0, 1]."""
    values = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            value = float(Fraction(part))
        except (ValueError, ZeroDivisionError, OverflowError):
            raise SpecError(f"eps {part!r} is not a number in [0, 1]; write e.g. 8/255 or 0.03") from None
        if not 0.0 <= value <= 1.0 or math.isnan(value):
            raise SpecError(f"eps {part} = {value:.4g} is outside [0, 1]; budgets are on the pixel scale, e.g. 8/255")
        values.append(value)
    if not values:
        raise SpecError("no eps given; write e.g. --eps 2/255,4/255,8/255")
    return tuple(values)


@dataclass(frozen=True)
class ModelSpec:
    """A registered model name with its overrides, resolved parameters, backbone and training method.

    Attributes:
        name: the registry name.
        backbone: the resolved backbone.
        regularizer: the CSV `regularizer` value: the regularizer module's name, else the model's
            own name for methods and architecture changes, "none" for plain.
        params: the user's overrides (they make the label, `lfm:p=0.3`).
        resolved: every parameter after defaults, recipe and overrides (CSV `model_params`).
        method: the training method ("standard", "gwi", "pgd-at", "mixacm").
        teacher: MixACM's teacher model, trained first; None otherwise.
    """

    name: str
    backbone: str
    regularizer: str
    params: Params = ()
    resolved: Params = ()
    method: str = "standard"
    teacher: ModelSpec | None = None

    @property
    def label(self) -> str:
        """The display/CSV name: 'lfm' or 'lfm:p=0.3'."""
        if not self.params:
            return self.name
        return self.name + ":" + ",".join(f"{k}={format_param(v)}" for k, v in self.params)

    def overrides(self) -> dict[str, Any]:
        """Keyword arguments for `models.create_model`."""
        return {"backbone": self.backbone, **dict(self.resolved)}


def format_param(value: Any) -> str:
    """A parameter value as the command line takes it: (0.02, 0.4) -> '0.02..0.4'."""
    return f"{value[0]}..{value[1]}" if isinstance(value, tuple) else str(value)


@dataclass(frozen=True)
class AttackSpec:
    """A registered attack name with its resolved options (every option, defaults filled in).

    Build one with `AttackSpec.create`, which checks the options against the attack's
    constructor: `pgd` and `pgd:steps=20` resolve alike, so they are one measurement.
    """

    name: str
    options: Params = ()

    @classmethod
    def create(cls, name: str, options: dict[str, Any] | Params = ()) -> AttackSpec:
        """The spec of attack `name` with `options` resolved against its defaults (TypeError,
        ValueError or UnknownAttackError on a bad name, option or value)."""
        resolved = attacks.resolve_options(attacks.get_attack_class(name), dict(options))
        return cls(name, tuple(sorted(resolved.items())))

    def build(self, seed: int) -> attacks.Attack:
        """A fresh attack object with a random-start seed."""
        return attacks.create_attack(self.name, seed=seed, **dict(self.options))

    @property
    def label(self) -> str:
        """The attack as tables name it: its name and its non-default options, `pgd:steps=1`."""
        defaults = attacks.get_attack_class(self.name).defaults()
        changed = [(k, v) for k, v in self.options if defaults.get(k, object()) != v]
        return self.name + (":" + ",".join(f"{k}={format_param(v)}" for k, v in changed) if changed else "")

    def params_json(self) -> str:
        """The CSV `attack_params`: every resolved option as canonical JSON."""
        return canonical_json(dict(self.options))


@dataclass(frozen=True)
class DataSpec:
    """A registered dataset name with its options, and for real datasets the folder it is read from.

    Attributes:
        name: registry name.
        options: the dataset's options as given (for folder datasets they include the image size).
        root: the --data-root folder, or None for generated data.
        source: fingerprint of the folder's files ("" for generated data). Checkpoint keys use it,
            not `root`, so moving a folder keeps its checkpoints and changing a file retrains.
        resolved: every option of the dataset's config, defaults filled in (CSV `data_params`).
    """

    name: str
    options: Params = ()
    root: str | None = None
    source: str = ""
    resolved: Params = ()

    def key(self) -> dict[str, Any]:
        """What identifies the data in checkpoint and cell keys."""
        return {"name": self.name, "options": self.resolved or self.options, "source": self.source}

    def params_json(self) -> str:
        """The CSV `data_params`: every resolved option of the dataset as canonical JSON."""
        return canonical_json(dict(self.resolved))


@dataclass(frozen=True)
class EvalSpec:
    """How retrieval is scored (reference/reid.md B1-B4).

    Attributes:
        distance: "cosine" (1 - cos, the default) or "euclidean" (squared L2) on the post-BNNeck embedding.
        ap: "plain" (torchreid's non-interpolated AP) or "trapezoid" (the official Market script).
        flip: the evaluated model averages the embeddings of the image and its mirror; attacks
            see the same averaged model.
        rerank: "off", "on" (k-reciprocal re-ranking, Zhong et al. CVPR 2017, k1=20, k2=6,
            lambda=0.3) or "both" (each cell scored both ways from the same features).
    """

    distance: str = "cosine"
    ap: str = "plain"
    flip: bool = False
    rerank: str = "off"

    def rerank_modes(self) -> tuple[bool, ...]:
        """The re-ranking settings each cell is scored with."""
        return {"off": (False,), "on": (True,), "both": (False, True)}[self.rerank]


@dataclass(frozen=True)
class ThreatSpec:
    """Who crafts the adversarial images and in what form the target sees them.

    Attributes:
        surrogate: transfer (black-box) setting: the images are crafted on this model (trained with
            the same data, recipe and seed) and every target is evaluated on them; None = white-box.
        quantize: adversarial images are rounded to 8 bits before evaluation (a saved PNG).
    """

    surrogate: ModelSpec | None = None
    quantize: bool = False


@dataclass(frozen=True)
class Cell:
    """One sweep cell: a trained model (model, data, recipe, seed) under one attack at one eps."""

    model: ModelSpec
    attack: AttackSpec | None  # None: the clean cell (attack = none, eps = 0)
    eps: float
    seed: int
    threat: ThreatSpec = ThreatSpec()
    probe_of: float | None = None  # a large-eps probe: the sweep budget whose schedule it scales

    def build_attack(self, task: str) -> attacks.Attack | None:
        """The cell's attack, seeded by the training seed; a large-eps probe runs the schedule of
        the sweep's largest budget with its steps scaled to this eps (`Attack.rescaled`)."""
        if self.attack is None:
            return None
        attack = self.attack.build(seed=self.seed)
        return attack if self.probe_of is None else attack.rescaled(self.probe_of, self.eps, task)

    def train_key(self, data: DataSpec, recipe: TrainRecipe) -> str:
        """Cache key of the checkpoint this cell needs."""
        return content_hash(
            {
                "model": asdict(self.model),
                "data": data.key(),
                "recipe": recipe.key(),
                "seed": self.seed,
                "version": __version__,
            }
        )

    def cell_id(self, data: DataSpec, recipe: TrainRecipe, evaluation: EvalSpec) -> str:
        """Short hash of everything that determines this cell's numbers."""
        attack = asdict(self.attack) if self.attack else None
        content = {
            "train": self.train_key(data, recipe),
            "attack": attack,
            "eps": self.eps,
            "eval": asdict(evaluation),
            "version": __version__,
        }
        if self.probe_of is not None:
            content["probe_of"] = self.probe_of
        if self.attack is not None and self.threat != ThreatSpec():
            surrogate = self.threat.surrogate
            content["threat"] = {
                "surrogate": None
                if surrogate is None
                else Cell(surrogate, None, 0.0, self.seed).train_key(data, recipe),
                "quantize": self.threat.quantize,
            }
        return content_hash(content, 12)


@dataclass(frozen=True)
class RunSpec:
    """Everything one `lfm-bench run` does, resolved and validated."""

    models: tuple[ModelSpec, ...]
    attacks: tuple[AttackSpec, ...]
    eps: tuple[float, ...]
    seeds: tuple[int, ...]
    data: DataSpec
    recipe: TrainRecipe
    out_dir: Path
    cache_dir: Path
    evaluation: EvalSpec = EvalSpec()
    threat: ThreatSpec = ThreatSpec()
    device: str = "cpu"
    batch_size: int = 256
    quiet: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def cells(self) -> list[Cell]:
        """The grid: per seed and model, the clean cell then attack x eps."""
        out = []
        for seed in self.seeds:
            for model in self.models:
                out.append(Cell(model, None, 0.0, seed))
                out += [Cell(model, a, e, seed, self.threat) for a in self.attacks for e in self.eps]
        return out

    def probe_cells(self) -> list[Cell]:
        """Extra cells the sanity checks need (robustbench_lfm.sanity): per model, seed and attack,
        eps 0 and a very large eps; and FGSM at the sweep's eps when PGD runs without it."""
        names = {a.name for a in self.attacks}
        reference = max(self.eps)
        out = []
        for seed in self.seeds:
            for model in self.models:
                for a in self.attacks:
                    out.append(Cell(model, a, 0.0, seed, self.threat))
                    out.append(Cell(model, a, large_eps(a), seed, self.threat, probe_of=reference))
                    if a.name == "pgd" and "fgsm" not in names:
                        fgsm = fgsm_like(a)
                        out += [Cell(model, fgsm, e, seed, self.threat) for e in self.eps]
        return list(dict.fromkeys(out))

    def to_json(self) -> dict[str, Any]:
        """The resolved spec for manifest.json."""
        d = asdict(self)
        d["out_dir"], d["cache_dir"] = str(self.out_dir), str(self.cache_dir)
        d["models"] = [{**asdict(m), "label": m.label} for m in self.models]
        return d


LARGE_EPS = {"linf": 64 / 255, "l2": 16.0}


def large_eps(attack: AttackSpec) -> float:
    """The 'very large' budget of the sanity check in the attack's norm: 64/255 L-inf, 16 L2."""
    return LARGE_EPS[attack.build(0).norm]


def fgsm_like(pgd: AttackSpec) -> AttackSpec:
    """FGSM with PGD's objective and side, the reference of the PGD >= FGSM check."""
    keep = {k: v for k, v in pgd.options if k in ("objective", "side")}
    return AttackSpec.create("fgsm", keep)


def resolve_model(item: str, backbone: str | None, recipe: TrainRecipe) -> ModelSpec:
    """Parse and check one model item against the registry and the recipe.

    Parameters resolve in order: the entry's defaults, the recipe's `[methods.NAME]` overrides
    for the entry's training method, then the item's own `key=value` options.
    """
    name, params = parse_named(item)
    try:
        entry = models.get_model_entry(name)
        bb = backbone or entry.backbone or recipe.backbone
        models.registry.BACKBONES[bb]  # UnknownNameError with a did-you-mean
        from_recipe = recipe.method_overrides(entry.method)
        unknown = sorted(set(from_recipe) - set(entry.training_params()))
        if unknown:
            raise SpecError(
                f"recipe {recipe.source}: [methods.{entry.method}] has unknown parameter(s) {', '.join(unknown)} "
                f"(known: {', '.join(sorted(entry.training_params()))})"
            )
        resolved = models.resolve_params(name, {**from_recipe, **dict(params)}, bb)
        models.create_model(name, 2, task=recipe.task, backbone=bb, **resolved)  # checks the values
    except models.UnknownNameError as err:
        raise SpecError(str(err)) from None
    except (TypeError, ValueError) as err:
        raise SpecError(f"model {item!r}: {err}") from None
    teacher = None
    if entry.method == "mixacm":
        teacher = resolve_model(str(resolved["teacher"]), bb, recipe)
        if teacher.method == "mixacm":
            raise SpecError(f"model {item!r}: a MixACM teacher must not itself be distilled; use e.g. teacher=pgd-at")
    reg = entry.regularizer if entry.regularizer != "none" else ("none" if name == "plain" else name)
    return ModelSpec(name, bb, reg, params, tuple(sorted(resolved.items())), entry.method, teacher)


def resolve_attack(item: str, task: str | None = None) -> AttackSpec:
    """Parse and check one attack item against the registry (and the dataset's task, if given)."""
    name, options = parse_named(item)
    try:
        spec = AttackSpec.create(name, options)
        attack = spec.build(0)
        if task is not None:
            attack.check_task(task)
            attack.describe(0.0, task)  # checks the objective against the task
    except attacks.UnknownAttackError as err:
        raise SpecError(str(err)) from None
    except (TypeError, ValueError) as err:
        raise SpecError(f"attack {item!r}: {err}") from None
    return spec


def resolve_data(item: str, root: str | Path | None, backbones: tuple[str, ...] = ()) -> DataSpec:
    """Parse and check the dataset item; a folder dataset's layout is checked and fingerprinted.

    Args:
        item: "name" or "name:key=value,...".
        root: the --data-root folder (folder datasets only).
        backbones: the sweep's backbones; a folder dataset with no height/width takes their input size.
    """
    name, options = parse_named(item)
    try:
        info = get_dataset_info(name)
        if info.sized_by_backbone and not {"height", "width"} & {k for k, _ in options}:
            options = tuple(sorted({**dict(options), **_input_size(name, backbones)}.items()))
        resolved = asdict(info.check_options(dict(options)))
        if root is not None and not info.needs_root:
            raise SpecError(f"--data-root is only for datasets read from a folder, not {name!r}")
        source = info.source(root)
    except KeyError as err:
        raise SpecError(str(err.args[0])) from None
    except (TypeError, ValueError) as err:
        raise SpecError(f"dataset {item!r}: {err}") from None
    params = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in resolved.items()))
    return DataSpec(name, options, None if root is None else str(Path(root).resolve()), source, params)


def _input_size(dataset: str, backbones: tuple[str, ...]) -> dict[str, int]:
    """height/width options from the backbones' common input size."""
    sizes = {b: models.get_input_size(b) for b in backbones}
    if len(set(sizes.values())) != 1:
        listed = ", ".join(f"{b} {h}x{w}" for b, (h, w) in sizes.items()) or "none given"
        raise SpecError(
            f"the models' backbones differ in input size ({listed}); set it with --dataset {dataset}:height=H,width=W"
        )
    h, w = next(iter(sizes.values()))
    return {"height": h, "width": w}


def check_writable(path: Path, what: str) -> None:
    """Create `path` if needed and prove it is writable, or raise SpecError naming the fix."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise SpecError(
            f"{what} {str(path)!r} is not writable ({err.strerror}); choose another with --out / --cache-dir"
        ) from None


def parse_seeds(text: str) -> tuple[int, ...]:
    """'0,1,2' -> (0, 1, 2); seeds are non-negative integers."""
    try:
        seeds = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise SpecError(f"--seeds {text!r} must be comma-separated integers, e.g. 0,1,2") from None
    if not seeds or min(seeds) < 0 or max(seeds) >= INT_LIMIT:
        raise SpecError(f"--seeds {text!r} must list one or more integers in [0, 2^31)")
    return tuple(dict.fromkeys(seeds))


def unique(items: list[str]) -> list[str]:
    """Items in order without repeats."""
    return list(dict.fromkeys(items))
