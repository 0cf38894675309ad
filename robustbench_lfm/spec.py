"""The frozen run specification: names and options parsed and validated once, then expanded into cells.

Validation lives here, not in the CLI: every problem raises `SpecError` with a message that names
the problem and the fix. Registry names are the same strings in the CLI, config and CSV.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import robustbench_lfm.methods  # noqa: F401  (registers the training methods' parameters)
from robustbench_lfm import attacks, code_identity, datasets, environment, files, models, plugins
from robustbench_lfm.datasets import get_dataset_info
from robustbench_lfm.hashing import canonical_json, content_hash, without_defaults
from robustbench_lfm.identity import LARGE_EPS, format_eps
from robustbench_lfm.modelspec import CHECKPOINT_PREFIX, GIVEN_METHODS, ModelSpec
from robustbench_lfm.options import RunOptions
from robustbench_lfm.parsing import (
    INT_LIMIT,
    Params,
    SpecError,
    format_param,
    option_text,
    parse_eps,
    parse_named,
    parse_scalar,
    parse_seeds,
    split_list,
    unique,
)
from robustbench_lfm.recipe import RecipeError, TrainRecipe, load_recipe
from robustbench_lfm.setting import DataSpec, EvalSpec, ThreatSpec, resolve_data, resolve_test_data
from robustbench_lfm.version import __version__

__all__ = [  # re-exported: the spec is where callers meet them
    "CHECKPOINT_PREFIX",
    "GIVEN_METHODS",
    "INT_LIMIT",
    "DataSpec",
    "EvalSpec",
    "ModelSpec",
    "Params",
    "RecipeError",
    "RunOptions",
    "SpecError",
    "ThreatSpec",
    "TrainRecipe",
    "format_eps",
    "format_param",
    "parse_eps",
    "parse_named",
    "parse_scalar",
    "parse_seeds",
    "resolve_data",
    "split_list",
    "unique",
]


@dataclass(frozen=True)
class AttackSpec:
    """A registered attack name with its resolved options (every option, defaults filled in).

    Build one with `AttackSpec.create`, which checks the options against the attack's
    constructor: `pgd` and `pgd:steps=20` resolve alike, so they are one measurement. Options
    added since the first format (the class's `added_defaults`: DI and TI) are left out at their
    defaults, so the ids and `attack_params` of earlier runs stand.
    """

    name: str
    options: Params = ()

    @classmethod
    def create(cls, name: str, options: dict[str, Any] | Params = ()) -> AttackSpec:
        """The spec of attack `name` with `options` resolved against its defaults (TypeError,
        ValueError or UnknownAttackError on a bad name, option or value)."""
        attack = attacks.get_attack_class(name)
        resolved = without_defaults(attacks.resolve_options(attack, dict(options)), attack.added_defaults)
        return cls(name, tuple(sorted(resolved.items())))

    def build(self, seed: int) -> attacks.Attack:
        """A fresh attack object with a random-start seed."""
        return attacks.create_attack(self.name, seed=seed, **dict(self.options))

    @property
    def budgeted(self) -> bool:
        """Whether the attack searches an eps-ball (False: the corruptions, which have a severity)."""
        return attacks.get_attack_class(self.name).budgeted

    def _described(self) -> Params:
        """The options a label and `attack_params` carry: all but the one standing in eps's place
        (a corruption's severity has its own column)."""
        axis = attacks.get_attack_class(self.name).axis
        return tuple((k, v) for k, v in self.options if k != axis)

    @property
    def label(self) -> str:
        """The attack as tables name it: its name and its non-default options, `pgd:steps=1`."""
        return self.label_on(None)

    def label_on(self, task: str | None) -> str:
        """`label` on `task`: an option at the value the task resolves its default to is left out
        too (`corrupt:type=fog`, not `corrupt:table=imagenet,type=fog`, on re-ID)."""
        cls = attacks.get_attack_class(self.name)
        defaults = {**cls.defaults(), **(cls.task_defaults(task) if task else {})}
        changed = [(k, v) for k, v in self._described() if defaults.get(k, object()) != v]
        return self.name + (":" + ",".join(f"{k}={option_text(k, v)}" for k, v in changed) if changed else "")

    def params_json(self) -> str:
        """The CSV `attack_params`: every resolved option as canonical JSON (a corruption's
        severity is the CSV `severity`)."""
        return canonical_json(dict(self._described()))


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

    def train_key(self, data: DataSpec, recipe: TrainRecipe, with_code: bool = True) -> str:
        """Cache key of the checkpoint this cell needs, with the identity of the code that trains
        it (`train_code`; `with_code=False`: the key as it was before code identity, for tests)."""
        content: dict[str, Any] = {
            "model": self.model.key(),
            "data": data.key(),
            "recipe": recipe.key(),
            "seed": self.seed,
            "version": __version__,
        }
        if with_code:
            content["code"] = train_code(self.model, data)
        return content_hash(content)

    def cell_id(self, data: DataSpec, recipe: TrainRecipe, evaluation: EvalSpec, with_code: bool = True) -> str:
        """Short hash of everything that determines this cell's numbers, the code included
        (`code`; `with_code=False`: the id as it was before code identity, for tests)."""
        attack = asdict(self.attack) if self.attack else None
        content = {
            "train": self.train_key(data, recipe, with_code),
            "attack": attack,
            "eps": self.eps,
            "eval": evaluation.key(),
            "version": __version__,
        }
        if self.probe_of is not None:
            content["probe_of"] = self.probe_of
        if with_code:
            content["code"] = self.code(data)
        if self.attack is not None and (self.threat.surrogate is not None or self.threat.quantize):
            surrogate = self.threat.surrogate
            content["threat"] = {
                "surrogate": None
                if surrogate is None
                else Cell(surrogate, None, 0.0, self.seed).train_key(data, recipe, with_code),
                "quantize": self.threat.quantize,
            }
        if self.attack is not None and dict(self.attack.options).get("source") == "published":
            content["published"] = self.threat.corruptions
        return content_hash(content, 12)

    def code(self, data: DataSpec) -> str:
        """The CSV `code`: identity of the code that computes this cell (robustbench_lfm.code_identity):
        what trains its model (and a surrogate's), its attack and objective, and the scoring glue."""
        return plugins.code_of(self.code_sources(data), (*code_identity.TRAINING, *code_identity.SCORING))

    def foreign(self, data: DataSpec) -> list[str]:
        """What of this cell's code lfm-bench does not own: the plugins that register its components
        and a given model (`ckpt:`, `evaluate()`); a failure in such a cell fails it alone
        (robustbench_lfm/faults.py)."""
        sources = self.code_sources(data)
        found = [f"plugin {p.module}" for p in dict.fromkeys(map(plugins.plugin_of, sources)) if p is not None]
        given = [m for m in (self.model, self.threat.surrogate if self.attack is not None else None) if m and m.given]
        return found + [f"given model {m.label}" for m in given]

    def code_sources(self, data: DataSpec) -> list[str]:
        """The registering modules of everything this cell runs: its model's (and a surrogate's)
        training and its attack and objective."""
        sources = training_sources(self.model, data)
        if self.attack is not None:
            sources += attack_sources(self.attack)
            if self.threat.surrogate is not None:
                sources += training_sources(self.threat.surrogate, data)
        return sources


def training_sources(model: ModelSpec, data: DataSpec) -> list[str]:
    """The registering modules of what trains `model` on `data`: its components, the data's
    generator, a MixACM teacher's (a checkpoint's architecture through `model_sources`)."""
    teacher = [] if model.teacher is None else model_sources(model.teacher)
    return [*model_sources(model), datasets.DATASETS.source(data.name), *teacher]


def train_code(model: ModelSpec, data: DataSpec) -> str:
    """Identity of the code that trains `model` on `data` (`training_sources` and the training glue)."""
    return plugins.code_of(training_sources(model, data), code_identity.TRAINING)


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
    note: str = ""
    pretrained: Path | None = None
    plugins: tuple[plugins.Plugin, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    def cells(self) -> list[Cell]:
        """The grid: per seed and model, the clean cell then attack x eps; a corruption (no budget)
        is one cell at eps 0, untouched by the surrogate and quantization (it consults no model)."""
        out = []
        for seed in self.seeds:
            for model in self.models:
                out.append(Cell(model, None, 0.0, seed))
                for a in self.attacks:
                    if a.budgeted:
                        out += [Cell(model, a, e, seed, self.threat) for e in self.eps]
                    else:
                        out.append(Cell(model, a, 0.0, seed, ThreatSpec(corruptions=self.threat.corruptions)))
        return out

    def random_model_shortfall(self) -> list[str]:
        """What this run lacks to score a model random in eval mode (empty: nothing): scoring
        repeated (--score-repeats 2 or more: the mean and spread over the model's randomness), and
        every attack that follows gradients averaging them over eot >= 2 passes (Athalye et al.,
        ICML 2018: a gradient of one random pass points at the noise, and the model looks robust)."""
        missing = []
        if self.evaluation.score_repeats < 2:
            missing.append("--score-repeats 2 or more (evaluate(..., score_repeats=5))")
        for a in self.attacks:
            cls = attacks.get_attack_class(a.name)
            if not cls.uses_gradients:
                continue
            if "eot" not in attacks.resolve_options(cls, {}):
                missing.append(f"an attack with an eot option in place of {a.label} (it has none)")
            elif int(dict(a.options).get("eot", 1)) < 2:
                better = f"{a.label},eot=10" if ":" in a.label else f"{a.label}:eot=10"
                missing.append(f"eot >= 2 on every gradient attack ({better} in place of {a.label})")
        return missing

    def searches_right_only(self, cell: Cell) -> bool:
        """Whether `cell`'s attack searches only the test images its model classifies correctly
        clean, the others counting as wrong (AutoAttack's protocol, Croce & Hein 2020;
        robustbench_lfm.attacking): a white-box classification attack with a budget, at eps > 0,
        scored in one pass. A transfer attack crafts the same images for every target; a corruption
        has no budget and may turn a wrong image right; a model random in eval mode
        (--score-repeats) decides afresh in every pass which images are right."""
        return (
            self.recipe.task == "classification" and cell.attack is not None and cell.attack.budgeted
            and cell.eps > 0 and self.threat.surrogate is None and self.evaluation.score_repeats == 1
        )  # fmt: skip

    def probe_cells(self) -> list[Cell]:
        """Extra cells the sanity checks need (robustbench_lfm.sanity): per model, seed and attack,
        eps 0 and a very large eps; and FGSM at the sweep's eps when PGD runs without it. A
        corruption has no budget to probe. A probe the grid holds already (the very large eps as
        the sweep's largest, whose schedule it would scale by 1; eps 0 in the grid) is that cell,
        and `run_group` computes it once for both tables."""
        names = {a.name for a in self.attacks}
        reference = max(self.eps)
        out = []
        for seed in self.seeds:
            for model in self.models:
                for a in (a for a in self.attacks if a.budgeted):
                    out.append(Cell(model, a, 0.0, seed, self.threat))
                    large = large_eps(a)
                    scaled = None if large == reference else reference
                    out.append(Cell(model, a, large, seed, self.threat, probe_of=scaled))
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


def model_sources(model: ModelSpec) -> list[str]:
    """The modules that registered what builds and trains `model` (entry, regularizer, backbone,
    training method; a checkpoint's architecture)."""
    if model.base is not None:
        return model_sources(model.base)
    if model.method == "external":
        return []
    reg = models.registry
    entry = reg.get_model_entry(model.name)
    out = [*map(reg.MODELS.source, reg.model_parts(model.name)), reg.BACKBONES.source(model.backbone),
           reg.METHODS.source(model.method)]  # fmt: skip
    return out + ([reg.REGULARIZERS.source(entry.regularizer)] if entry.regularizer != "none" else [])


def attack_sources(attack: AttackSpec) -> list[str]:
    """The modules that registered the attack and its objective."""
    objective = dict(attack.options).get("objective")
    known = isinstance(objective, str) and objective in attacks.objectives.OBJECTIVES.names()
    return [attacks.registry.ATTACKS.source(attack.name)] + (
        [attacks.objectives.OBJECTIVES.source(str(objective))] if known else []
    )


def taught_key(train_key: str, teacher_sha256: str) -> str:
    """A MixACM student's checkpoint key: its train key and its teacher checkpoint's sha256, so a
    retrained teacher retrains the student."""
    return content_hash({"train": train_key, "teacher_sha256": teacher_sha256})


def prerequisites(spec: RunSpec, groups: list[tuple[ModelSpec, int, bool]]) -> list[tuple[ModelSpec, int]]:
    """The checkpoints other groups load, trained or loaded before them, each once: a MixACM
    student's teacher and, for a group with attacked cells, the transfer surrogate.

    Args:
        groups: (model, seed, whether the group has attacked cells) of each group.
    """
    needed = [(m.teacher, seed) for m, seed, _ in groups if m.teacher is not None]
    if spec.threat.surrogate is not None:
        needed += [(spec.threat.surrogate, seed) for _, seed, attacked in groups if attacked]
    return list(dict.fromkeys(needed))


def large_eps(attack: AttackSpec) -> float:
    """The 'very large' budget of the sanity check in the attack's norm: 64/255 L-inf, 16 L2."""
    return LARGE_EPS[attack.build(0).norm]


def fgsm_like(pgd: AttackSpec) -> AttackSpec:
    """FGSM with PGD's objective, side and EOT passes, the reference of the PGD >= FGSM check."""
    keep = {k: v for k, v in pgd.options if k in ("objective", "side", "eot")}
    return AttackSpec.create("fgsm", keep)


def distinct(model_specs: tuple[ModelSpec, ...]) -> tuple[ModelSpec, ...]:
    """The models, each once: two items that resolve alike (`lfm` and `lfm:p=0.5` at its default p,
    a checkpoint given by two paths) are one model, under the label given first."""
    first: dict[ModelSpec, ModelSpec] = {}
    for model in model_specs:
        first.setdefault(dataclasses.replace(model, params=()), model)
    return tuple(first.values())


def resolve_model(item: str, backbone: str | None, recipe: TrainRecipe) -> ModelSpec:
    """Parse and check one model item against the registry and the recipe.

    Parameters resolve in order: the entry's defaults, the recipe's `[methods.NAME]` overrides
    for the entry's training method, then the item's own `key=value` options. The item's
    `backbone=NAME` (`rcm-stride:backbone=vgg16`) picks its backbone before --backbone, the
    entry's and the recipe's, so one sweep can compare architectures.
    """
    if item.strip().startswith(CHECKPOINT_PREFIX):
        from robustbench_lfm.checkpoints import resolve_checkpoint  # reads the file: only when asked

        return resolve_checkpoint(item, backbone, recipe, resolve_model)
    name, params = parse_named(item)
    own = dict(params).get("backbone")  # stays in `params`: the label says which architecture it is
    options = tuple((k, v) for k, v in params if k != "backbone")
    try:
        entry = models.get_model_entry(name)
        bb = str(own) if own is not None else backbone or entry.backbone or recipe.backbone
        models.registry.BACKBONES[bb]  # UnknownNameError with a did-you-mean
        from_recipe = recipe.method_overrides(entry.method)
        unknown = sorted(set(from_recipe) - set(entry.training_params()))
        if unknown:
            raise SpecError(
                f"recipe {recipe.source}: [methods.{entry.method}] has unknown parameter(s) {', '.join(unknown)} "
                f"(known: {', '.join(sorted(entry.training_params()))})"
            )
        resolved = models.resolve_params(name, {**from_recipe, **dict(options)}, bb)
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
    """Parse and check one attack item against the registry (and the dataset's task, if given);
    an item that stands for several (`corrupt:severity=3`) is refused: use `resolve_attacks`."""
    specs = resolve_attacks(item, task)
    if len(specs) != 1:
        raise SpecError(f"attack {item!r} stands for {len(specs)} attacks; name one (e.g. corrupt:type=fog,severity=3)")
    return specs[0]


def resolve_attacks(item: str, task: str | None) -> list[AttackSpec]:
    """Parse and check one attack item against the registry (and the dataset's task, if given): the
    specs it stands for (one for an attack; one per type and severity for `corrupt`)."""
    name, options = parse_named(item)
    try:
        expanded = attacks.get_attack_class(name).expand(dict(options), task or "")
        specs = [AttackSpec.create(name, o) for o in expanded]
        for spec in specs:
            attack = spec.build(0)
            if task is not None:
                attack.check_task(task)
                attack.describe(0.0, task)  # checks the objective against the task
    except attacks.UnknownAttackError as err:
        raise SpecError(str(err)) from None
    except (TypeError, ValueError) as err:
        raise SpecError(f"attack {item!r}: {err}") from None
    return specs


def check_writable(path: Path, what: str, create: bool = True) -> None:
    """Create `path` if needed (`files.check_writable`) and prove it is writable, or raise SpecError
    naming the fix."""
    try:
        files.check_writable(path, create)
    except OSError as err:
        raise SpecError(
            f"{what} {str(path)!r} is not writable ({err.strerror}); choose another with --out / --cache-dir"
        ) from None


def build_spec(o: RunOptions, given: tuple[ModelSpec, ...] = ()) -> RunSpec:
    """Resolve the run's options (robustbench_lfm.options) into a validated RunSpec (SpecError on
    bad input). A `cache_dir` of None is the default cache (`files.default_cache_dir`, read now,
    not at import). `given` adds models evaluated as they are (`robustbench_lfm.evaluate`);
    `plugins` are loaded first (with the installed entry points), so their names resolve."""
    loaded = plugins.load_plugins(o.plugins)  # before any name is resolved: they register names
    task = _dataset_task(o.dataset)
    recipe = load_recipe(o.recipe, task)
    recipe = recipe if o.epochs is None else recipe.scaled_to(o.epochs)
    model_specs = _model_specs(o, recipe, given)
    surrogate = None if o.surrogate is None else resolve_model(o.surrogate, o.backbone, recipe)
    attack_specs = tuple(dict.fromkeys(s for a in unique(split_list(o.attacks)) for s in resolve_attacks(a, task)))
    if not model_specs or not attack_specs:
        raise SpecError("give at least one model (--models) and one attack (--attacks)")
    check_norms(attack_specs)
    if o.batch_size < 1:
        raise SpecError(f"--batch-size {o.batch_size} must be >= 1")
    try:
        device = str(environment.resolve_device(o.device))
    except (ValueError, RuntimeError) as err:
        raise SpecError(str(err)) from None
    from robustbench_lfm.pretrained import resolve_pretrained  # torch-free until a run is built

    model_specs, surrogate, pretrained = resolve_pretrained(o.pretrained, recipe, model_specs, surrogate)
    all_models = model_specs + ((surrogate,) if surrogate else ())
    backbones = tuple(unique([m.backbone for m in all_models]))
    data = resolve_data(o.dataset, o.data_root, backbones)
    data = dataclasses.replace(data, train_fraction=o.train_fraction, train_by=o.train_by)
    if data.train_by == "ids" and task != "reid":
        raise SpecError("--train-by ids draws re-ID identities; a classification run takes --train-by images")
    if o.precision is not None:  # the flag sets training too; without it training follows the recipe
        recipe = dataclasses.replace(recipe, precision=o.precision)  # and features run in fp32
    test = resolve_test_data(o.test_dataset, o.data_root, task, data, backbones)
    evaluation = EvalSpec(
        distance=o.distance, ap=o.ap, flip=o.flip, rerank=o.rerank, n_eval=o.n_eval, precision=o.precision or "fp32",
        attack_precision=o.attack_precision, score_repeats=o.score_repeats, test=test,
    )  # fmt: skip
    _check_repeats(o.score_repeats, attack_specs)
    threat = ThreatSpec(surrogate, o.quantize, _published_corruptions(test or data, attack_specs))
    parts: dict[str, Any] = dict(
        models=model_specs, attacks=attack_specs, eps=parse_eps(o.eps), seeds=parse_seeds(o.seeds),
        data=data, recipe=recipe, evaluation=evaluation, threat=threat,
    )  # fmt: skip
    out, cache_dir = _folders(o, parts)
    return RunSpec(
        **parts,
        out_dir=out,
        cache_dir=cache_dir,
        device=device,
        batch_size=o.batch_size,
        quiet=o.quiet,
        note=o.note or "",
        pretrained=pretrained,
        plugins=loaded,
    )


def _model_specs(o: RunOptions, recipe: TrainRecipe, given: tuple[ModelSpec, ...]) -> tuple[ModelSpec, ...]:
    """The run's models: `--models` resolved, the `plain` baseline first unless `--no-baseline` or
    named, then the `given` ones; each once."""
    names = unique(split_list(o.models, plus_separates=False))
    if not names and not given:  # the baseline alone would run in its place, and say nothing
        raise SpecError(f"--models {o.models!r} names no model; give at least one, e.g. --models lfm,dropout")
    if not o.no_baseline and not any(n.split(":")[0] == "plain" for n in names):
        names.insert(0, "plain")
    return distinct(tuple(resolve_model(n, o.backbone, recipe) for n in names) + given)


def _check_repeats(repeats: int, attack_specs: tuple[AttackSpec, ...]) -> None:
    """SpecError for --score-repeats above 1 beside an ensemble attack (auto-reid)."""
    ensembles = [a.label for a in attack_specs if issubclass(attacks.get_attack_class(a.name), attacks.Ensemble)]
    if repeats > 1 and ensembles:
        raise SpecError(
            f"--score-repeats {repeats} with {ensembles[0]}: an ensemble takes each query's worst case in "
            "one scoring pass; on a model random in eval mode run its members alone with eot (lfm-bench ls)"
        )


def _folders(o: RunOptions, parts: dict[str, Any]) -> tuple[Path, Path]:
    """The run directory (`--out`, else results/ and `--name` or a name made from `parts`) and the
    cache directory, each checked writable; a dry run creates no run directory."""
    name = o.name or _run_name(parts)
    if o.name is not None and (not name.strip() or Path(name).name != name or name in (".", "..")):
        raise SpecError(f"--name {name!r} must be one folder name (no '/', not '..'); use --out DIR for a path")
    out = Path(o.out) if o.out is not None else Path("results") / name
    cache_dir = Path(o.cache_dir) if o.cache_dir is not None else files.default_cache_dir()
    check_writable(out, "output directory", create=not o.dry_run)  # a dry run records nothing there
    check_writable(cache_dir, "cache directory")
    return out, cache_dir


def _published_corruptions(data: DataSpec, attack_specs: tuple[AttackSpec, ...]) -> str:
    """Fingerprint of the published corrupted test sets of the scored dataset `data` that the
    `corrupt:source=published` cells read ("" when none do), after checking the files are there
    in the published layout."""
    names = [str(dict(a.options)["type"]) for a in attack_specs if dict(a.options).get("source") == "published"]
    if not names:
        return ""
    try:
        return datasets.corrupted.fingerprint(data.name, data.root, names)
    except datasets.DatasetFolderError as err:
        raise SpecError(str(err)) from None


def check_norms(attack_specs: tuple) -> None:
    """One --eps grid cannot suit two norms: an L2 budget is the norm of the whole perturbation
    (e.g. 0.5), an L-inf one a per-pixel bound (e.g. 8/255)."""
    by_norm: dict[str, list[str]] = {}
    for a in (a for a in attack_specs if a.budgeted):  # a corruption has no eps
        by_norm.setdefault(a.build(0).norm, []).append(a.name)
    if len(by_norm) > 1:
        listed = "; ".join(f"{norm}: {', '.join(names)}" for norm, names in sorted(by_norm.items()))
        raise SpecError(
            f"the attacks mix norms ({listed}) under one --eps grid; run each norm separately with its own "
            "budgets, e.g. --attacks pgd --eps 8/255 and --attacks pgd-l2 --eps 0.5,1"
        )


def _dataset_task(item: str) -> str:
    try:
        return get_dataset_info(item.partition(":")[0].strip()).task
    except KeyError as err:
        raise SpecError(str(err.args[0])) from None


def _run_name(parts: dict[str, Any]) -> str:
    """Deterministic, so rerunning the same command resumes into the same directory."""
    models_part = "-".join(m.name for m in parts["models"])[:40]
    attacks_part = "-".join(a.name for a in parts["attacks"])[:20]
    return f"{models_part}_{attacks_part}_{content_hash(parts, 6)}"
