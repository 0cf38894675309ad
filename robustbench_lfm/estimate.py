"""`lfm-bench run --dry-run`: the grid a sweep would run, and how long it would take.

The grid: per (model, seed), whether its checkpoint is in the cache (reused) or will be trained;
per table, how many cells the run directory already holds and how many remain. The time: each
stage's work in pixels (training: epochs x images an epoch x pixels an image; a cell: images
scored x the forward-backward passes of its attack x pixels) times that stage's rate for the
model's backbone, in seconds per megapixel-pass. A classification attack that searches only the
test images its model gets right clean (`RunSpec.searches_right_only`) is estimated as if it
searched them all, an upper bound (the accuracy is not known before the run), and its rate is
measured on the images it did search. AutoAttack's work is known only within bounds (`bounded`):
each member runs on what the ones before it left. The dry run gives a range, from its first member
on every image to every member on every image; the progress bar counts the high end; its cells
measure no rate.

The rates are measured: every sweep records what its trainings and cells took into
`rates.json` in its cache directory (`record`), and a dry run reads them back, each rate the median
of the last RATE_HISTORY measurements of its backbone. A backbone no sweep of this cache has
measured takes DEFAULT_RATES, measured on a 2-core CPU (synthreid, resnet-mini), scaled by the
model's multiply-adds per pixel over resnet-mini's (`relative_cost`: a VGG-16 costs 20.5x), and the
estimate says so. A training method's extra passes (pgd-at's PGD steps, MixACM's teacher forward)
count in its work (`train_passes`), so a backbone's rate is one per pass whatever the method. The
checkpoints other models load (a MixACM student's teacher, the transfer surrogate:
`spec.prerequisites`) are trained first and counted as the grid's models are. An attack run two
cells of one model share (an ensemble's member and the same attack alone,
robustbench_lfm/shared_runs.py) counts once, and so do the cells that share one in a measured rate.
A damaged rates.json is ignored (defaults), never an error.
"""

from __future__ import annotations

import functools
import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robustbench_lfm import attacks
from robustbench_lfm.files import UnverifiedFileError, atomic_write, read_sidecar
from robustbench_lfm.shared_runs import attack_runs
from robustbench_lfm.spec import AttackSpec, Cell, ModelSpec, RunSpec, prerequisites, taught_key

Rates = dict[str, dict[str, list[float]]]  # stage ("train", "cell") -> backbone -> seconds per megapixel-pass
RATES_FILE = "rates.json"
RATE_HISTORY = 8
# rates.json's layout, for what its rates are per: 4 since an autoattack cell measures no rate (its
# work is a bound, `bounded`; before, it counted as one pass an image, so its rate read up to
# hundreds of times another cell's of the same backbone); 3 since a PGD step of pgd-at's training
# counts two thirds of a pass (`AdversarialTraining.passes`; 2: a whole pass; no format: per image,
# so a pgd-at training read 11x a plain one's). On reading, a file's cell rates are kept only from
# format 4, its training rates from format 3.
RATES_FORMAT = 4
RATES_FORMATS = {"train": (3, 4), "cell": (4,)}  # the formats whose rates of each stage mean what they mean now
# Seconds per megapixel-pass on a 2-core CPU for resnet-mini (training: one image's forward and
# backward in an epoch; a cell: one forward-backward of an attack step), the medians the README's
# main job recorded cold (`lfm-bench run --models lfm,dropout --attacks pgd`, synthreid 64x32:
# train 0.567-0.600 in fp32, cells 0.364-0.372; the recipe's bf16 training 0.40-0.46, median 0.44).
# Training rates are kept per backbone and training precision (`trained_as`): bf16 runs faster.
DEFAULT_RATES = {"train": 0.59, "train bf16": 0.44, "cell": 0.37}
# The model DEFAULT_RATES were measured on: plain resnet-mini, re-ID, on synthreid's 64x32 images.
# Scaled by multiply-adds, they predicted 12.1 s per megapixel-pass of fp32 training for plain:vgg16
# on digits, where a sweep measured 10.0 (unscaled: 0.59).
REFERENCE = ("plain", "reid", (64, 32))


def trained_as(spec: RunSpec, model: ModelSpec) -> str:
    """The key of a training rate: the backbone, with ` bf16` when the recipe trains in bfloat16."""
    return model.backbone if spec.recipe.precision == "fp32" else f"{model.backbone} {spec.recipe.precision}"


@dataclass(frozen=True)
class Work:
    """What a sweep has left: megapixel-passes of training and of cells, per backbone, and the counts;
    `scaled`: the same work weighted by each model's `relative_cost`, for the rates no sweep measured
    (per stage: "train", "cell"); `unscaled`: the models whose cost could not be counted."""

    train: dict[str, float]
    cells: dict[str, float]
    scaled: dict[str, dict[str, float]]
    unscaled: list[str]
    to_train: list[str]
    reused: list[str]
    cells_total: int
    cells_left: int
    probes_total: int
    probes_left: int
    bounded: list[str]  # attacks whose work is only known within bounds (`bounded`)
    least: dict[str, dict[str, float]]  # cells' work with those at their least: "cell", and "scaled" as `scaled`


def cell_passes(spec: RunSpec, cell: Cell, classes: int, most: bool = True) -> float:
    """Forward(-backward) passes of one cell per scored image: 1 for a clean cell (query and gallery
    embedded) and for a budgeted attack at eps 0 (the 0-ball holds the clean images alone, so no
    search runs: attacks/base.py), the attack's steps + 1 (times eot) for an attacked one, summed over an ensemble's
    members; an attack that counts its own (`passes(classes, most)`: AutoAttack, whose members
    depend on the classes they target) says so, at its most or its least (`bounded`)."""
    task = spec.recipe.task
    if cell.attack is None:
        return 1.0
    options = dict(cell.attack.options)
    attack = cell.build_attack(task)
    if attack is None or (cell.eps == 0 and attack.budgeted):  # the 0-ball holds the clean images: no search
        return 1.0
    bound = (classes, most)
    if isinstance(attack, attacks.Ensemble):  # each member runs as it would alone
        return sum(
            cell_passes(spec, Cell(cell.model, AttackSpec.create(n, o), cell.eps, cell.seed, cell.threat), *bound)
            for n, o in attack.member_options()
        )
    own = getattr(attack, "passes", None)
    if own is not None:
        return float(own(classes, most))
    steps = int(attack.describe(cell.eps, task)["steps"] or 0)
    return float((steps + 1) * int(options.get("eot", 1)))


@dataclass(frozen=True)
class Shape:
    """The sizes the work of a sweep scales with: images scored per cell (queries or test images),
    gallery images (re-ID), an image's (height, width), images a training epoch, and the classes
    (identities) a model is built with."""

    scored: int
    gallery: int
    size: tuple[int, int]
    epoch_images: int
    classes: int

    @property
    def pixels(self) -> int:
        return self.size[0] * self.size[1]


def macs_per_pixel(name: str, overrides: dict[str, Any], task: str, size: tuple[int, int], classes: int) -> float:
    """Multiply-adds of one forward pass of the registered model `name` built with `overrides` (its
    backbone, strides, upsampling and head), in its convolutions and linear layers, per pixel of a
    `size` (height, width) input: counted by hooks on the forward of one blank image on the CPU (the
    meta device, or torch's FlopCounterMode, would import torch._dynamo: a second per process).
    Torch's global random state is left as it was."""
    import torch
    from torch import nn

    from robustbench_lfm import models

    with torch.random.fork_rng(devices=[]):  # the weights' draws leave the run's random state as it was
        net = models.create_model(name, classes, task, **overrides).eval()
    total = 0

    def count(module: nn.Module, _inputs: Any, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            total += out.numel() * module.in_channels // module.groups * kh * kw
        elif isinstance(module, nn.Linear):
            total += out.numel() * module.in_features

    for module in net.modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            module.register_forward_hook(count)
    with torch.no_grad():
        net(torch.zeros(1, 3, *size))
    return total / (size[0] * size[1])


@functools.cache
def _macs(name: str, overrides: tuple[tuple[str, Any], ...], task: str, size: tuple[int, int], classes: int) -> float:
    """`macs_per_pixel`, counted once per process for each model, size and head."""
    return macs_per_pixel(name, dict(overrides), task, size, classes)


def relative_cost(model: ModelSpec, task: str, shape: Shape) -> float | None:
    """`model`'s multiply-adds per pixel at the dataset's image size over REFERENCE's: what scales
    DEFAULT_RATES for a model no sweep has measured. None when it cannot be counted (a model given as
    a module, or a plugin's that fails to build or to run on one blank image)."""
    arch = model.base if model.base is not None else model
    if model.given and model.base is None:
        return None
    try:
        reference = _macs(REFERENCE[0], (), REFERENCE[1], REFERENCE[2], shape.classes)
        return _macs(arch.name, tuple(sorted(arch.overrides().items())), task, shape.size, shape.classes) / reference
    except Exception:  # an estimate never fails a run: unscaled, and the dry run says so
        return None


def cell_work(spec: RunSpec, cell: Cell, shape: Shape, most: bool = True) -> float:
    """Megapixel-passes of one cell (a clean cell embeds the gallery too); `most`: `cell_passes`."""
    images = shape.scored + (shape.gallery if cell.attack is None else 0)
    return images * cell_passes(spec, cell, shape.classes, most) * shape.pixels / 1e6


def cells_work(spec: RunSpec, cells: list[Cell], shape: Shape, most: bool = True) -> float:
    """Megapixel-passes of `cells` of one (model, seed) group, as the group runs them: each cell
    once (a probe the grid holds is its sweep cell) and each attack run two of them share once
    (robustbench_lfm/shared_runs.py); `most`: `cell_passes`."""
    return sum(cell_shares(spec, cells, shape, most).values())


def cell_shares(spec: RunSpec, cells: list[Cell], shape: Shape, most: bool = True) -> dict[Cell, float]:
    """Each of `cells`' megapixel-passes as the group runs them, in their order: an attack run an
    earlier cell crafted counts with that cell (`cells_work` is their sum)."""
    crafted: set[str] = set()
    shares: dict[Cell, float] = {}
    for cell in dict.fromkeys(cells):
        shares[cell] = 0.0
        for run, key in attack_runs(spec, cell):
            if key is None or key not in crafted:
                shares[cell] += cell_work(spec, run, shape, most)
            if key is not None:
                crafted.add(key)
    return shares


def train_passes(model: ModelSpec) -> float:
    """Forward-backward passes per training image: what the model's training method declares
    (`passes(params)` on its class: pgd-at's PGD steps + the update), else 1."""
    from robustbench_lfm import models

    methods = models.registry.METHODS
    passes = getattr(methods[model.method], "passes", None) if model.method in methods else None
    return float(passes(dict(model.resolved))) if passes is not None else 1.0


def train_work(spec: RunSpec, shape: Shape, model: ModelSpec) -> float:
    """Megapixel-passes of training one model."""
    return spec.recipe.epochs * shape.epoch_images * train_passes(model) * shape.pixels / 1e6


def pending_work(spec: RunSpec, shape: Shape, done: dict[str, set[str]]) -> Work:
    """The work of `spec` that its run directory and cache do not hold yet (module docstring)."""
    train: dict[str, float] = {}
    cells: dict[str, float] = {}
    scaled: dict[str, dict[str, float]] = {"train": {}, "cell": {}}
    unscaled: list[str] = []

    def cost(model: ModelSpec) -> float:
        factor = relative_cost(model, spec.recipe.task, shape)
        if factor is None and model.label not in unscaled:
            unscaled.append(model.label)
        return 1.0 if factor is None else factor

    def add(stage: str, per: dict[str, float], key: str, model: ModelSpec, work: float) -> None:
        per[key] = per.get(key, 0.0) + work
        scaled[stage][key] = scaled[stage].get(key, 0.0) + work * cost(model)

    to_train, reused = [], []
    for model, seed, role in trained_models(spec):
        label = f"{model.label}@seed{seed}" + (f" ({role})" if role else "")
        if is_cached(spec, model, seed):
            reused.append(label)
        else:
            to_train.append(label)
            add("train", train, trained_as(spec, model), model, train_work(spec, shape, model))
    counts: dict[str, tuple[int, int]] = {}
    groups: dict[tuple[ModelSpec, int], list[Cell]] = {}  # (model, seed) -> its cells left
    for dest, grid in (("results", spec.cells()), ("probes", spec.probe_cells())):
        left = [c for c in grid if c.cell_id(spec.data, spec.recipe, spec.evaluation) not in done[dest]]
        counts[dest] = (len(grid), len(left))
        for cell in left:
            groups.setdefault((cell.model, cell.seed), []).append(cell)
    bounded_labels = sorted({c.attack.label for g in groups.values() for c in g if c.attack and bounded(spec, c)})
    least: dict[str, dict[str, float]] = {"cell": {}, "scaled": {}}
    for (model, _), group in groups.items():  # as run_group runs them (cells_work)
        high = cells_work(spec, group, shape)
        add("cell", cells, model.backbone, model, high)
        low = cells_work(spec, group, shape, most=False) if bounded_labels else high  # one work, without a bound
        least["cell"][model.backbone] = least["cell"].get(model.backbone, 0.0) + low
        least["scaled"][model.backbone] = least["scaled"].get(model.backbone, 0.0) + low * cost(model)
    return Work(
        train, cells, scaled, unscaled, to_train, reused, *counts["results"], *counts["probes"], bounded_labels, least
    )


def bounded(spec: RunSpec, cell: Cell) -> bool:
    """Whether `cell`'s attack counts its own passes within bounds (`passes(classes, most)`:
    AutoAttack, whose later members run only on the images the earlier ones left): the dry run
    gives its estimate as a range, and its wall time measures no rate."""
    return cell.attack is not None and callable(getattr(attacks.get_attack_class(cell.attack.name), "passes", None))


def trained_models(spec: RunSpec) -> list[tuple[ModelSpec, int, str]]:
    """(model, seed, role) of every checkpoint a sweep of `spec` trains or loads: the grid's models
    (role "") and then the prerequisites no model of the grid trains already (role "teacher" or
    "surrogate"), each checkpoint once."""
    grid = [(m, seed) for seed in spec.seeds for m in spec.models]
    first = prerequisites(spec, [(m, seed, bool(spec.attacks)) for m, seed in grid])
    teachers = {m.teacher for m in spec.models if m.teacher is not None}
    out, keys = [], set()
    for model, seed in [*grid, *first]:
        key = _train_key(spec, model, seed)
        if key not in keys:
            keys.add(key)
            role = "" if (model, seed) in grid else "teacher" if model in teachers else "surrogate"
            out.append((model, seed, role))
    return out


def _train_key(spec: RunSpec, model: ModelSpec, seed: int) -> str:
    return Cell(model, None, 0.0, seed).train_key(spec.data, spec.recipe)


def checkpoint_key(spec: RunSpec, model: ModelSpec, seed: int) -> str | None:
    """The key of (model, seed)'s checkpoint in the cache (robustbench_lfm.group.trained_model): its
    train key, and for a MixACM student its teacher checkpoint's sha256 too, read from the teacher's
    verified sidecar; None while the teacher has no verified checkpoint (the student will be trained)."""
    key = _train_key(spec, model, seed)
    if model.teacher is None:
        return key
    if model.teacher.given:  # evaluated as given: its weights' sha256 is its checkpoint's
        return taught_key(key, model.teacher.weights)
    teacher = checkpoint_key(spec, model.teacher, seed)
    meta = None if teacher is None else _verified(spec, teacher)
    return None if meta is None else taught_key(key, meta["sha256"])


def _verified(spec: RunSpec, key: str) -> dict[str, Any] | None:
    """The sidecar of `key`'s checkpoint once its sha256 matches the file; None when it is absent,
    torn or foreign, which the sweep retrains (robustbench_lfm.cache)."""
    from robustbench_lfm.cache import CheckpointCache

    try:
        return read_sidecar(CheckpointCache(spec.cache_dir).paths(key)[0])
    except UnverifiedFileError:
        return None


def is_cached(spec: RunSpec, model: ModelSpec, seed: int) -> bool:
    """Whether (model, seed) needs no training: a given model, or a verified checkpoint in the cache
    (a torn one is retrained, so it counts as to train)."""
    if model.given:
        return True
    key = checkpoint_key(spec, model, seed)
    return key is not None and _verified(spec, key) is not None


def group_rates(
    spec: RunSpec, model: ModelSpec, seed: int, shape: Shape, rates: Rates, train: bool = True
) -> tuple[float, float]:
    """The estimated seconds of one (model, seed) group's training (0 when cached, or not `train`),
    and its cells' seconds per megapixel-pass of `cells_work`."""
    trains = train and not is_cached(spec, model, seed)
    train_rate, train_measured = rate(rates, "train", trained_as(spec, model))
    cell_rate, cell_measured = rate(rates, "cell", model.backbone)
    cost = 1.0  # a measured rate already carries the model's cost; a default one is resnet-mini's
    if not (train_measured and cell_measured):
        cost = relative_cost(model, spec.recipe.task, shape) or 1.0
    training = train_work(spec, shape, model) * train_rate * (1.0 if train_measured else cost) if trains else 0.0
    return training, cell_rate * (1.0 if cell_measured else cost)


Key = tuple[ModelSpec, int]


@dataclass(frozen=True)
class GroupEstimate:
    """One (model, seed) group's estimate, as the sweep's progress bar counts it (robustbench_lfm/progress.py):
    its training's seconds, its cells' seconds per megapixel-pass, the whole group's seconds and
    each cell's megapixel-passes (`cell_shares`)."""

    training: float
    per_work: float
    seconds: float
    cells: dict[Cell, float]


def phase_seconds(
    spec: RunSpec, first: list[Key], groups: dict[Key, list[Cell]], shape: Shape, rates: Rates
) -> tuple[dict[Key, GroupEstimate], dict[Key, GroupEstimate]]:
    """The estimates of a sweep's two phases, per (model, seed): the prerequisites' trainings
    (`first`, robustbench_lfm.spec.prerequisites), then the groups, whose training counts only where
    no prerequisite trained it; each group's seconds in whole tenths, so a progress bar's updates add
    up to its total."""

    def group(key: Key, cells: list[Cell], train: bool) -> GroupEstimate:
        training, per_work = group_rates(spec, *key, shape, rates, train)
        shares = cell_shares(spec, cells, shape)
        return GroupEstimate(training, per_work, round(training + sum(shares.values()) * per_work, 1), shares)

    trained_first = {_train_key(spec, *key) for key in first}
    before = {key: group(key, [], True) for key in first}
    after = {key: group(key, cells, _train_key(spec, *key) not in trained_first) for key, cells in groups.items()}
    return before, after


def read_rates(cache_dir: Path) -> Rates:
    """The measured rates of `cache_dir` ({"train"|"cell": {backbone: [s per megapixel-pass, ...]}});
    empty when none were recorded or the file is damaged; without a stage's rates from a file of a
    format whose rates of that stage meant something else (RATES_FORMATS)."""
    try:
        raw = json.loads((cache_dir / RATES_FILE).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    if not isinstance(raw, dict):
        return {}
    out: Rates = {}
    for stage in (s for s, formats in RATES_FORMATS.items() if raw.get("format") in formats):
        entries = raw.get(stage)
        if isinstance(entries, dict):
            out[stage] = {
                str(b): [float(v) for v in values if isinstance(v, int | float) and math.isfinite(v) and v > 0]
                for b, values in entries.items()
                if isinstance(values, list)
            }
    return out


def record(cache_dir: Path, measured: Rates) -> None:
    """Add this sweep's measured rates to `cache_dir/rates.json`, keeping the last RATE_HISTORY per backbone."""
    if not any(measured.values()):
        return
    rates = read_rates(cache_dir)
    for stage, per in measured.items():
        for backbone, values in per.items():
            rates.setdefault(stage, {}).setdefault(backbone, [])
            rates[stage][backbone] = (rates[stage][backbone] + values)[-RATE_HISTORY:]
    atomic_write(cache_dir / RATES_FILE, json.dumps({"format": RATES_FORMAT, **rates}, indent=1, sort_keys=True))


def rate(rates: Rates, stage: str, backbone: str) -> tuple[float, bool]:
    """(seconds per megapixel-pass, measured?) of `stage` for `backbone` (for training, `trained_as`)."""
    values = rates.get(stage, {}).get(backbone, [])
    if values:
        return statistics.median(values), True
    return DEFAULT_RATES.get(f"{stage} bf16" if backbone.endswith(" bf16") else stage, DEFAULT_RATES[stage]), False


def duration(seconds: float) -> str:
    """`2 min 05 s`, `45 s`, `1 h 03 min`."""
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def describe(work: Work, rates: Rates) -> tuple[str, float]:
    """The dry run's text and its estimate in seconds (at its most, where `work.bounded`)."""
    assumed: set[str] = set()

    def seconds(stage: str, per: dict[str, float], scaled: dict[str, float]) -> float:
        total = 0.0
        for backbone, mpx in per.items():
            r, measured = rate(rates, stage, backbone)
            if not measured:
                assumed.add(f"{stage} {backbone}")
            total += (mpx if measured else scaled[backbone]) * r
        return total

    train = seconds("train", work.train, work.scaled["train"])
    cells = seconds("cell", work.cells, work.scaled["cell"])
    least = seconds("cell", work.least["cell"], work.least["scaled"])

    def span(low: float, high: float) -> str:
        return f"{duration(low)} to {duration(high)}" if work.bounded else duration(high)

    lines = [
        "dry run: nothing is trained, attacked or recorded",
        f"models: {len(work.to_train)} to train" + (f" ({', '.join(work.to_train)})" if work.to_train else "")
        + f", {len(work.reused)} cached or given" + (f" ({', '.join(work.reused)})" if work.reused else ""),
        f"cells: {work.cells_left} of {work.cells_total} to run ({work.cells_total - work.cells_left} recorded); "
        f"sanity probes: {work.probes_left} of {work.probes_total} to run",
        f"estimate: training {duration(train)}, cells and probes {span(least, cells)}; "
        f"about {span(train + least, train + cells)} in all",
    ]  # fmt: skip
    if work.bounded:
        lines.append(
            f"  ({', '.join(work.bounded)}: its first member on every image at the low end, every member on "
            "every image at the high end; each member runs only on the images the ones before it left, so a "
            "model most images fall on costs near the low end, one that resists near the high end)"
        )
    if assumed:
        unscaled = f"; not counted, so unscaled: {', '.join(work.unscaled)}" if work.unscaled else ""
        lines.append(
            f"  (no sweep with this cache has measured {', '.join(sorted(assumed))}: rates of a 2-core CPU "
            f"assumed, resnet-mini's scaled by each model's multiply-adds per pixel{unscaled})"
        )
    return "\n".join(lines), train + cells


def measured_rates(spec: RunSpec, training: dict[str, Any], rows: list[dict[str, str]], shape: Shape) -> Rates:
    """The rates this sweep's trainings and cells measured (seconds per megapixel-pass, per backbone);
    `rows`: the results.csv rows of the cells it ran."""
    by_label = {f"{m.label}@seed{s}": m for m, s, _ in trained_models(spec)}
    out: Rates = {"train": {}, "cell": {}}
    for label, info in training.items():
        model = by_label.get(label)
        if model is not None and not info.get("cached") and info.get("train_s"):
            out["train"].setdefault(trained_as(spec, model), []).append(
                float(info["train_s"]) / train_work(spec, shape, model)
            )
    # A clean cell scores the embeddings its group computed before any cell: its wall time is not its work.
    cells = {c.cell_id(spec.data, spec.recipe, spec.evaluation): c for c in spec.cells() if c.attack is not None}
    walls = {r["cell_id"]: float(r["wall_s"]) for r in rows if r.get("cell_id") in cells and r.get("wall_s")}
    right = _clean_accuracy(rows)
    for unit in _sharing_units(spec, [cells[cell_id] for cell_id in walls]):
        if any(bounded(spec, c) for c in unit):  # its work is a bound, not what it ran
            continue
        wall = sum(walls[c.cell_id(spec.data, spec.recipe, spec.evaluation)] for c in unit)
        work = cells_work(spec, unit, shape)  # one cell, or cells that shared attack runs: their walls together
        cell = unit[0]
        if spec.searches_right_only(cell):  # the search ran on the images the model got right (one cell)
            share = right.get((cell.model.label, str(cell.seed)))
            if share is None:
                continue
            work = work * share + shape.scored * shape.pixels / 1e6  # and a forward chose them
        if work > 0 and wall > 0:
            out["cell"].setdefault(cell.model.backbone, []).append(wall / work)
    return out


def _sharing_units(spec: RunSpec, cells: list[Cell]) -> list[list[Cell]]:
    """`cells` in units that share no attack run with one another (robustbench_lfm/shared_runs.py):
    a cell alone, or cells linked by the runs they share, whose wall times are measured together
    (the cell that took a run crafted elsewhere recorded only its scoring)."""
    keys = {c: {k for _, k in attack_runs(spec, c) if k is not None} for c in cells}
    units: list[list[Cell]] = []
    placed: set[Cell] = set()
    for cell in cells:
        if cell in placed:
            continue
        unit, reach = [cell], set(keys[cell])
        placed.add(cell)
        grown = True
        while grown:  # add every cell that shares a run with the unit, until none is left
            grown = False
            for other in cells:
                if other not in placed and keys[other] & reach:
                    unit.append(other)
                    placed.add(other)
                    reach |= keys[other]
                    grown = True
        units.append(unit)
    return units


def _clean_accuracy(rows: list[dict[str, str]]) -> dict[tuple[str, str], float]:
    """(model label, train seed) -> clean accuracy, from the clean classification rows among `rows`:
    the share of the test images a cell that searches only the right ones searched. A model whose
    clean cell this sweep did not run has none, and its attacked cells measure no rate."""
    out = {}
    for r in rows:
        if r.get("attack") == "none" and r.get("metric") == "accuracy":  # classification's one clean row
            try:
                out[(r["model"], r["train_seed"])] = float(r["value"])
            except (KeyError, ValueError):
                continue
    return out
