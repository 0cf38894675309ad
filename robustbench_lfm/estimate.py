"""`lfm-bench run --dry-run`: the grid a sweep would run, and how long it would take.

The grid: per (model, seed), whether its checkpoint is in the cache (reused) or will be trained;
per table, how many cells the run directory already holds and how many remain. The time: each
stage's work in pixels (training: epochs x images an epoch x pixels an image; a cell: images
scored x the forward-backward passes of its attack x pixels) times that stage's rate for the
model's backbone, in seconds per megapixel-pass.

The rates are measured: every sweep records what its trainings and cells took into
`rates.json` in its cache directory (`record`), and a dry run reads them back, each rate the median
of the last RATE_HISTORY measurements of its backbone. A backbone no sweep of this cache has
measured takes DEFAULT_RATES, measured on a 2-core CPU (synthreid, resnet-mini), and the estimate
says so. A damaged rates.json is ignored (defaults), never an error.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robustbench_lfm import attacks
from robustbench_lfm.files import atomic_write
from robustbench_lfm.spec import AttackSpec, Cell, ModelSpec, RunSpec

Rates = dict[str, dict[str, list[float]]]  # stage ("train", "cell") -> backbone -> seconds per megapixel-pass
RATES_FILE = "rates.json"
RATE_HISTORY = 8
# Seconds per megapixel-pass on a 2-core CPU for resnet-mini (training: one image's forward and
# backward in an epoch; a cell: one forward-backward of an attack step), the medians the README's
# main job recorded cold (`lfm-bench run --models lfm,dropout --attacks pgd`, synthreid 64x32:
# train 0.567-0.600 in fp32, cells 0.364-0.372; the recipe's bf16 training 0.40-0.46, median 0.44).
# Training rates are kept per backbone and training precision (`trained_as`): bf16 runs faster.
DEFAULT_RATES = {"train": 0.59, "train bf16": 0.44, "cell": 0.37}


def trained_as(spec: RunSpec, model: ModelSpec) -> str:
    """The key of a training rate: the backbone, with ` bf16` when the recipe trains in bfloat16."""
    return model.backbone if spec.recipe.precision == "fp32" else f"{model.backbone} {spec.recipe.precision}"


@dataclass(frozen=True)
class Work:
    """What a sweep has left: megapixel-passes of training and of cells, per backbone, and the counts."""

    train: dict[str, float]
    cells: dict[str, float]
    to_train: list[str]
    reused: list[str]
    cells_total: int
    cells_left: int
    probes_total: int
    probes_left: int


def cell_passes(spec: RunSpec, cell: Cell) -> float:
    """Forward(-backward) passes of one cell per scored image: 1 for a clean cell (query and gallery
    embedded), the attack's steps + 1 (times eot) for an attacked one, summed over an ensemble's members."""
    task = spec.recipe.task
    if cell.attack is None:
        return 1.0
    options = dict(cell.attack.options)
    attack = cell.build_attack(task)
    if attack is None:
        return 1.0
    if isinstance(attack, attacks.Ensemble):  # each member runs as it would alone
        return sum(
            cell_passes(spec, Cell(cell.model, AttackSpec.create(n, o), cell.eps, cell.seed, cell.threat))
            for n, o in attack.member_options()
        )
    steps = int(attack.describe(cell.eps, task)["steps"] or 0)
    return float((steps + 1) * int(options.get("eot", 1)))


@dataclass(frozen=True)
class Shape:
    """The sizes the work of a sweep scales with: images scored per cell (queries or test images),
    gallery images (re-ID), pixels an image, images a training epoch."""

    scored: int
    gallery: int
    pixels: int
    epoch_images: int


def cell_work(spec: RunSpec, cell: Cell, shape: Shape) -> float:
    """Megapixel-passes of one cell (a clean cell embeds the gallery too)."""
    images = shape.scored + (shape.gallery if cell.attack is None else 0)
    return images * cell_passes(spec, cell) * shape.pixels / 1e6


def train_work(spec: RunSpec, shape: Shape) -> float:
    """Megapixel-passes of training one model."""
    return spec.recipe.epochs * shape.epoch_images * shape.pixels / 1e6


def pending_work(spec: RunSpec, shape: Shape, done: dict[str, set[str]]) -> Work:
    """The work of `spec` that its run directory and cache do not hold yet (module docstring)."""
    train: dict[str, float] = {}
    to_train, reused = [], []
    for seed in spec.seeds:
        for model in spec.models:
            label = f"{model.label}@seed{seed}"
            if is_cached(spec, model, seed):
                reused.append(label)
            else:
                to_train.append(label)
                key = trained_as(spec, model)
                train[key] = train.get(key, 0.0) + train_work(spec, shape)
    cells: dict[str, float] = {}
    counts = {}
    for dest, grid in (("results", spec.cells()), ("probes", spec.probe_cells())):
        left = [c for c in grid if c.cell_id(spec.data, spec.recipe, spec.evaluation) not in done[dest]]
        counts[dest] = (len(grid), len(left))
        for cell in left:
            cells[cell.model.backbone] = cells.get(cell.model.backbone, 0.0) + cell_work(spec, cell, shape)
    return Work(train, cells, to_train, reused, *counts["results"], *counts["probes"])


def is_cached(spec: RunSpec, model: ModelSpec, seed: int) -> bool:
    """Whether (model, seed) needs no training: a given model, or its checkpoint in the cache."""
    from robustbench_lfm.cache import CheckpointCache

    key = Cell(model, None, 0.0, seed).train_key(spec.data, spec.recipe)
    return model.given or CheckpointCache(spec.cache_dir).paths(key)[0].is_file()


def group_seconds(spec: RunSpec, model: ModelSpec, seed: int, cells: list[Cell], shape: Shape, rates: Rates) -> float:
    """Estimated seconds of one (model, seed) group: its training when not cached, and its cells."""
    trains = not is_cached(spec, model, seed)
    train = train_work(spec, shape) * rate(rates, "train", trained_as(spec, model))[0] if trains else 0.0
    return train + sum(cell_work(spec, c, shape) for c in cells) * rate(rates, "cell", model.backbone)[0]


def read_rates(cache_dir: Path) -> Rates:
    """The measured rates of `cache_dir` ({"train"|"cell": {backbone: [s per megapixel-pass, ...]}});
    empty when none were recorded or the file is damaged."""
    try:
        raw = json.loads((cache_dir / RATES_FILE).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    if not isinstance(raw, dict):
        return {}
    out: Rates = {}
    for stage in ("train", "cell"):
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
    atomic_write(cache_dir / RATES_FILE, json.dumps(rates, indent=1, sort_keys=True))


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
    """The dry run's text and its estimate in seconds."""
    total, assumed = 0.0, set()
    parts: dict[str, float] = {}
    for stage, per in (("train", work.train), ("cell", work.cells)):
        for backbone, mpx in per.items():
            r, measured = rate(rates, stage, backbone)
            if not measured:
                assumed.add(f"{stage} {backbone}")
            parts[stage] = parts.get(stage, 0.0) + mpx * r
            total += mpx * r
    lines = [
        "dry run: nothing is trained, attacked or written",
        f"models: {len(work.to_train)} to train" + (f" ({', '.join(work.to_train)})" if work.to_train else "")
        + f", {len(work.reused)} cached or given" + (f" ({', '.join(work.reused)})" if work.reused else ""),
        f"cells: {work.cells_left} of {work.cells_total} to run ({work.cells_total - work.cells_left} recorded); "
        f"sanity probes: {work.probes_left} of {work.probes_total} to run",
        f"estimate: training {duration(parts.get('train', 0.0))}, cells and probes {duration(parts.get('cell', 0.0))}; "
        f"about {duration(total)} in all",
    ]  # fmt: skip
    if assumed:
        lines.append(
            f"  (no sweep with this cache has measured {', '.join(sorted(assumed))}: rates of a 2-core CPU assumed)"
        )
    return "\n".join(lines), total


def measured_rates(spec: RunSpec, training: dict[str, Any], rows: list[dict[str, str]], shape: Shape) -> Rates:
    """The rates this sweep's trainings and cells measured (seconds per megapixel-pass, per backbone);
    `rows`: the results.csv rows of the cells it ran."""
    by_label = {f"{m.label}@seed{s}": m for m in spec.models for s in spec.seeds}
    out: Rates = {"train": {}, "cell": {}}
    for label, info in training.items():
        model = by_label.get(label)
        if model is not None and not info.get("cached") and info.get("train_s"):
            out["train"].setdefault(trained_as(spec, model), []).append(
                float(info["train_s"]) / train_work(spec, shape)
            )
    # A clean cell scores the embeddings its group computed before any cell: its wall time is not its work.
    cells = {c.cell_id(spec.data, spec.recipe, spec.evaluation): c for c in spec.cells() if c.attack is not None}
    walls = {r["cell_id"]: float(r["wall_s"]) for r in rows if r.get("cell_id") in cells and r.get("wall_s")}
    for cell_id, wall in walls.items():
        cell = cells[cell_id]
        work = cell_work(spec, cell, shape)
        if work > 0 and wall > 0:
            out["cell"].setdefault(cell.model.backbone, []).append(wall / work)
    return out
