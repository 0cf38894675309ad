"""One (model, seed) group of a sweep, as a worker runs it: train or load the checkpoint, compute
clean features once, evaluate every cell of the group and build its rows.

Nothing here writes the run's CSVs: `run_group` returns the rows and the coordinator
(robustbench_lfm/runner.py) writes them, whichever executor ran the group. The only files written
are the checkpoint cache's (atomic). A MixACM student's teacher is trained or loaded first; the
student's checkpoint key is its train key plus the teacher checkpoint's sha256.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import traceback
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from robustbench_lfm import attacks, columns, metric_table, models, precision, progress
from robustbench_lfm.attacking import (
    Attacker,
    CleanFeatures,
    EvalContext,
    attacked_accuracy,
    attacked_side,
    batches,
    embed_images,
    to_model_input,
)
from robustbench_lfm.cache import CheckpointCache
from robustbench_lfm.checkpoints import external_notes, load_given
from robustbench_lfm.datasets import (
    ClassificationDataset,
    Dataset,
    ReIDDataset,
    evaluated_subset,
    get_dataset_info,
    load_dataset,
    subset_index,
    training_subset,
)
from robustbench_lfm.environment import configure_determinism, git_sha, now
from robustbench_lfm.faults import MACHINE_ERRORS, ModelError, describe, outside
from robustbench_lfm.files import atomic_write
from robustbench_lfm.hashing import content_hash
from robustbench_lfm.identity import format_eps
from robustbench_lfm.methods import build_method
from robustbench_lfm.metrics import (
    AP_FORMULAS,
    AccuracyResult,
    APFormula,
    RankResult,
    Repeated,
    evaluate_rank,
    pairwise_distance,
    worst_case,
)
from robustbench_lfm.plugins import load_plugins
from robustbench_lfm.pretrained import initialise
from robustbench_lfm.rerank import RerankParams, rerank
from robustbench_lfm.shared_runs import SharedRuns, member_cells
from robustbench_lfm.spec import Cell, ModelSpec, RunSpec, SpecError, taught_key, train_code
from robustbench_lfm.training import TrainingError, train_model
from robustbench_lfm.version import __version__


@dataclass(frozen=True)
class TrainedModel:
    """A trained (or verified cached) model, its checkpoint's sha256, and what training did:
    `training` maps `model@seedN` to its key, whether it was cached and its timings, for this
    model and every model trained on the way (a MixACM teacher)."""

    net: nn.Module
    sha256: str
    training: dict[str, dict[str, Any]]


@dataclass
class GroupResult:
    """What a worker sends back for one (model, seed) group: rows per table and training info."""

    label: str
    rows: dict[str, list[dict[str, Any]]]
    training: dict[str, Any]
    failed: str | None = None
    failed_cells: dict[str, str] = dataclasses.field(default_factory=dict)  # cell -> why (and the traceback file)
    cells_run: int = 0
    probes_run: int = 0
    skipped: int = 0


@dataclass(frozen=True)
class Scored:
    """The run's dataset as scored: the --n-eval subset, and where its queries or test images sit
    in the whole split (`index` among `n_split`)."""

    data: Dataset
    index: Tensor
    n_split: int

    @property
    def subset(self) -> str:
        """The CSV `eval_subset`: "" when every query (test image) is scored, else "N/M"."""
        return "" if len(self.index) == self.n_split else f"{len(self.index)}/{self.n_split}"


_DATASETS: dict[str, Scored] = {}  # per process: a worker loads the dataset once
RESCORE_SEED = 104729  # seeds the clean embeddings of the scoring passes (scoring_features)
_SURROGATES: dict[tuple[str, int], tuple[Attacker, dict[str, dict[str, Any]]]] = {}


def run_dataset(spec: RunSpec) -> Dataset:
    """The run's dataset, loaded once per process, with only the --n-eval subset of queries or test images."""
    return scored_dataset(spec).data


def eval_subset(spec: RunSpec) -> str:
    """The CSV `eval_subset`: "" when every query (test image) is scored, else "N/M" (--n-eval)."""
    return scored_dataset(spec).subset


def scored_dataset(spec: RunSpec) -> Scored:
    """The run's dataset as scored (`Scored`), loaded once per process."""
    key = content_hash({"data": spec.data.key(), "eval": spec.evaluation.key()})  # the subset and the test data
    if key not in _DATASETS:
        _DATASETS.clear()
        full = load_dataset(spec.data.name, dict(spec.data.options), spec.cache_dir, spec.data.root, spec.quiet)
        full = training_subset(full, spec.data.train_fraction, spec.data.train_by)
        test = spec.evaluation.test
        if test is not None:
            scored_on = load_dataset(test.name, dict(test.options), spec.cache_dir, test.root, spec.quiet)
            full = across_domains(full, scored_on)
        try:
            scored = evaluated_subset(full, spec.evaluation.n_eval)
        except ValueError as err:
            raise SpecError(str(err)) from None
        _DATASETS[key] = Scored(scored, subset_index(n_eval(full), spec.evaluation.n_eval), n_eval(full))
    return _DATASETS[key]


def across_domains(train: Dataset, test: Dataset) -> Dataset:
    """`train`'s training split with `test`'s query and gallery (re-ID) or test split
    (classification): trained on one domain, scored on another (--test-dataset).

    Raises:
        SpecError: the images differ in size, or the classes differ (a classifier scores its own).
    """
    if train.image_size != test.image_size:
        raise SpecError(
            f"--test-dataset {test.name} has {test.image_size[0]}x{test.image_size[1]} images and --dataset "
            f"{train.name} {train.image_size[0]}x{train.image_size[1]}; give both one size (height=,width= options)"
        )
    if isinstance(train, ReIDDataset) and isinstance(test, ReIDDataset):
        return dataclasses.replace(train, query=test.query, gallery=test.gallery)
    assert isinstance(train, ClassificationDataset) and isinstance(test, ClassificationDataset)
    if train.classes != test.classes:
        raise SpecError(
            f"--test-dataset {test.name} has classes {', '.join(test.classes)}; {train.name} has "
            f"{', '.join(train.classes)}: a classifier is scored on its own classes"
        )
    return dataclasses.replace(train, test=test.test)


def run_group(spec: RunSpec, model_spec: ModelSpec, seed: int, cells: list[tuple[str, Cell]]) -> GroupResult:
    """Worker: train or load one model and evaluate its cells; writes only the checkpoint cache and,
    for what failed, RUN/failed/.

    A failure of the model (its training, its clean outputs, the surrogate's) fails the group's
    cells; a failure inside one cell (its attack, corruption or the model's outputs on its images)
    fails that cell; both are recorded and the rest goes on (robustbench_lfm/faults.py). The
    harness's own errors and OS errors on its files propagate."""
    load_plugins([p.ref for p in spec.plugins if p.kind != "entry-point"])  # a fresh worker process registers them
    device = torch.device(spec.device)
    configure_determinism(device)
    dataset = run_dataset(spec)
    label = f"{model_spec.label}@seed{seed}"
    own = Cell(model_spec, None, 0.0, seed)
    try:
        trained = trained_model(spec, model_spec, seed, dataset, device)
        net = models.FlipAveraged(trained.net).eval() if spec.evaluation.flip else trained.net
        clean, rescored = scoring_features(spec, net, dataset, device)
        attacker, surrogate_training = attacker_for(spec, seed, net, clean, dataset, device)
    except Exception as err:
        foreign = own.foreign(spec.data) + [f for _, c in cells for f in c.foreign(spec.data)]
        if not fails_alone(err, foreign):
            raise
        why = describe(err)
        if not isinstance(err, TrainingError):
            why += f" (traceback: {_traceback(spec, own, err, whole_model=True)})"
        return GroupResult(label, {}, {}, why, skipped=len(cells))
    scored = scored_dataset(spec)
    ctx = EvalContext(spec, dataset, device, net, attacker, clean, scored.index, scored.n_split, rescored, label)
    training = {**trained.training, **surrogate_training}
    out = GroupResult(label, {"queries": [], "members": [], "curves": [], "probes": [], "results": []}, training)
    sha = trained.sha256
    tables: dict[Cell, list[str]] = {}  # a probe the grid holds (RunSpec.probe_cells) is one cell for both tables
    for dest, cell in cells:
        tables.setdefault(cell, []).append(dest)
    shared = SharedRuns(spec, tables)  # an ensemble's member and the same attack alone: crafted once
    for cell, dests in tables.items():
        t0 = time.perf_counter()
        try:
            results, extra = _evaluate_cell(ctx, cell, shared)
        except Exception as err:  # this cell fails when the code that failed is not the harness's
            if not fails_alone(err, cell.foreign(spec.data)):
                raise
            where = _traceback(spec, cell, err)
            for dest in dests:
                out.failed_cells[_cell_label(cell, model_spec, dest)] = f"{describe(err)} (traceback: {where})"
            continue
        finally:
            progress.report(progress.CellDone(label, cell))  # the sweep's bar (robustbench_lfm/progress.py)
        members = extra.pop("members", {})
        if "results" in dests:
            out.rows["queries"] += _query_rows(spec, cell, results)
            out.rows["members"] += _member_rows(spec, cell, members)
            if isinstance(dataset, ReIDDataset):
                ranked = {k: v for k, v in results.items() if isinstance(v, RankResult | Repeated)}
                out.rows["curves"] += _curve_rows(spec, cell, ranked, extra)
            out.cells_run += 1
        out.probes_run += "probes" in dests
        wall = time.perf_counter() - t0
        for dest in dests:
            out.rows[dest] += result_rows(spec, cell, results, extra, sha, wall, n_eval(dataset))
    return out


def fails_alone(err: Exception, foreign: list[str]) -> bool:
    """Whether `err` costs only the cells it hit: a training failure (a NaN loss), an error from
    code outside the harness, or any error in a cell that runs such code (`Cell.foreign`); not a
    full disk or a path that cannot be written (faults.MACHINE_ERRORS: the CLI names the path, exit
    2), another OS error on the harness's own files, nor the harness's own bug."""
    if isinstance(err, OSError) and (err.errno in MACHINE_ERRORS or not outside(err)):
        return False
    return isinstance(err, TrainingError) or outside(err) or bool(foreign)


def _traceback(spec: RunSpec, cell: Cell, err: BaseException, whole_model: bool = False) -> str:
    """RUN/failed/<id>.txt holding `err`'s traceback: the cell's id, or for a failure of the whole
    model its checkpoint key."""
    if whole_model:
        name = cell.train_key(spec.data, spec.recipe)
    else:
        name = cell.cell_id(spec.data, spec.recipe, spec.evaluation)
    return traceback_file(err, spec.out_dir / "failed" / f"{name}.txt")


def _cell_label(cell: Cell, model: ModelSpec, dest: str) -> str:
    """`lfm@seed0 pgd 8/255` (`... probe` for a sanity probe): a failed cell in the manifest."""
    if cell.attack is None:
        attack = "clean"
    else:  # a corruption (no budget) is named by its label alone: `corrupt:type=fog,severity=3`
        attack = cell.attack.label + (f" {format_eps(cell.eps)}" if cell.attack.budgeted else "")
    return f"{model.label}@seed{cell.seed} {attack}" + (" probe" if dest == "probes" else "")


def traceback_file(err: BaseException, path: Path) -> str:
    """Write `err`'s traceback to `path` (RUN/failed/<id>.txt); the path, or why it could not."""
    try:
        atomic_write(path, "".join(traceback.format_exception(err)))
    except OSError as failed:
        return f"not written: {failed.strerror}"
    return str(path)


def n_eval(data: Dataset) -> int:
    """Images scored per cell: queries (re-ID) or test images (classification)."""
    return len(data.test) if isinstance(data, ClassificationDataset) else len(data.query)


def attacker_for(
    spec: RunSpec, seed: int, net: nn.Module, clean: CleanFeatures | None, data: Dataset, device: torch.device
) -> tuple[Attacker, dict[str, dict[str, Any]]]:
    """The target itself (white-box) or the seed's surrogate, loaded once per seed and process,
    with the surrogate's training record."""
    surrogate = spec.threat.surrogate
    if surrogate is None:
        return Attacker(net, clean.query if clean is not None else torch.empty(0)), {}
    key = Cell(surrogate, None, 0.0, seed).train_key(spec.data, spec.recipe)
    if (key, seed) not in _SURROGATES:
        trained = trained_model(spec, surrogate, seed, data, device)
        s_net = models.FlipAveraged(trained.net).eval() if spec.evaluation.flip else trained.net
        guides = torch.empty(0)
        if isinstance(data, ReIDDataset):
            guides = _embed(spec, s_net, data.query.images, device)
        _SURROGATES[(key, seed)] = (Attacker(s_net, guides, key), trained.training)
    return _SURROGATES[(key, seed)]


def trained_model(spec: RunSpec, model_spec: ModelSpec, seed: int, data: Dataset, device: torch.device) -> TrainedModel:
    """The model trained on `data` with `seed`, from the cache when a verified checkpoint exists.

    A MixACM student's teacher is trained (or loaded) first; the student's checkpoint key is the
    cell's train key plus the teacher checkpoint's sha256, so a retrained teacher retrains it. A
    given model (`ckpt:`, `evaluate`) is loaded as it is; its weights' sha256 is its checkpoint's.
    """
    key = Cell(model_spec, None, 0.0, seed).train_key(spec.data, spec.recipe)
    if model_spec.given:  # a checkpoint file or evaluate()'s module: evaluated as it is
        info = {"key": key, "cached": True, "given": model_spec.method, "path": model_spec.path}
        info.update(external_notes(model_spec))
        return TrainedModel(
            load_given(model_spec, device), model_spec.weights, {f"{model_spec.label}@seed{seed}": info}
        )
    teacher, training = None, {}
    if model_spec.teacher is not None:
        taught_by = trained_model(spec, model_spec.teacher, seed, data, device)
        teacher, training = taught_by.net, dict(taught_by.training)
        key = taught_key(key, taught_by.sha256)
    cache = CheckpointCache(spec.cache_dir)
    net = _new_model(spec, model_spec, seed, data)
    meta = cache.load(key, net)
    label = f"{model_spec.label}@seed{seed}"
    code = train_code(model_spec, spec.data)  # the identity of the code that trains it, in its key
    if meta is not None:
        training[label] = {"key": key, "code": code, "cached": True, "train_s": meta.get("train_s")}
        net = net.to(device).to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # not in torch's stub
        return TrainedModel(net.eval(), meta["sha256"], training)
    info = _train(spec, model_spec, seed, data, device, net, teacher)
    meta = {**info, "key": key, "model": asdict(model_spec), "data": asdict(spec.data),
            "recipe": asdict(spec.recipe), "seed": seed}  # fmt: skip
    sha = cache.save(key, net, meta)
    training[label] = {"key": key, "code": code, **info}
    return TrainedModel(net.eval(), sha, training)


def _train(
    spec: RunSpec,
    model_spec: ModelSpec,
    seed: int,
    data: Dataset,
    device: torch.device,
    net: nn.Module,
    teacher: nn.Module | None,
) -> dict[str, Any]:
    """Train `net` in place with the model's method; what the manifest records of it."""
    label = f"{model_spec.label}@seed{seed}"
    bar = tqdm(total=spec.recipe.epochs, desc=f"train {label}", disable=spec.quiet, leave=False, unit="epoch")

    def on_epoch(epoch: int, loss: float) -> None:
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}")
        progress.report(progress.Epoch(label, epoch + 1, spec.recipe.epochs))

    method = build_method(model_spec.method, dict(model_spec.resolved), spec.recipe, seed, device, teacher)
    if spec.recipe.precision == "bf16" and precision.slow_bf16(device):
        warnings.warn(
            f"training {label} under bf16 autocast as the recipe says, on a CPU without fast bf16 convolutions "
            "(AVX-512 or AMX): slower than fp32 here; --precision fp32 trains in float32 (another recipe_key)",
            stacklevel=2,
        )
    try:
        stats = train_model(net, data, spec.recipe, seed, device, method, on_epoch=on_epoch)
    finally:  # cleared before an error's line (Ctrl-C, a NaN loss), not after it at exit
        bar.close()
    return {
        "cached": False,
        "train_s": round(stats.total_seconds, 2),
        "epoch_s": [round(t, 3) for t in stats.epoch_seconds],
        "final_loss": stats.final_loss,
    }


def _new_model(spec: RunSpec, model_spec: ModelSpec, seed: int, data: Dataset) -> nn.Module:
    """A freshly initialised network for `data`'s task, seeded by the training seed."""
    torch.manual_seed(seed)  # weight initialisation
    if isinstance(data, ClassificationDataset):
        mean, std = data.normalization()
        net = models.create_model(
            model_spec.name, data.num_classes, "classification", mean, std, seed=seed, **model_spec.overrides()
        )
        return _initialised(spec, model_spec, net)
    net = models.create_model(model_spec.name, data.num_train_ids, "reid", seed=seed, **model_spec.overrides())
    return _initialised(spec, model_spec, net)


def _initialised(spec: RunSpec, model_spec: ModelSpec, net: models.SiteNet) -> models.SiteNet:
    """`net` with its backbone loaded from --pretrained when the model starts from it."""
    if model_spec.pretrained and spec.pretrained is not None:
        initialise(net.backbone, spec.pretrained, model_spec.pretrained)
    return net


def _embed(spec: RunSpec, net: nn.Module, images: Tensor, device: torch.device) -> Tensor:
    """Embeddings of uint8 images, in batches of the run's size and its precision, under inference mode."""
    net.eval()
    return torch.cat(
        [
            embed_images(net, to_model_input(chunk, device), spec.evaluation.precision)
            for chunk in batches(images, spec.batch_size)
        ]
    )


def clean_features(spec: RunSpec, net: nn.Module, data: Dataset, device: torch.device) -> CleanFeatures | None:
    """Clean query and gallery embeddings (re-ID); None for classification."""
    if isinstance(data, ClassificationDataset):
        return None
    return CleanFeatures(
        _embed(spec, net, data.query.images, device),
        _embed(spec, net, data.gallery.images, device),
    )


Result = RankResult | AccuracyResult | Repeated


def scoring_features(
    spec: RunSpec, net: nn.Module, data: Dataset, device: torch.device
) -> tuple[CleanFeatures | None, tuple[CleanFeatures, ...]]:
    """The clean embeddings of the first scoring pass, and of each further one (--score-repeats;
    re-ID): each pass embeds the clean images afresh, as a model random in eval mode draws anew,
    under torch's global generator seeded with RESCORE_SEED (and restored after), so a rerun
    draws the same passes. One pass: `clean_features` as it is."""
    repeats = spec.evaluation.score_repeats
    if repeats == 1 or isinstance(data, ClassificationDataset):
        return clean_features(spec, net, data, device), ()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(RESCORE_SEED)
        first, *rest = (clean_features(spec, net, data, device) for _ in range(repeats))
    return first, tuple(p for p in rest if p is not None)


def _evaluate_cell(ctx: EvalContext, cell: Cell, shared: SharedRuns) -> tuple[dict[str, Result], dict[str, Any]]:
    """`_scored_cell`; with --score-repeats above 1, under torch's global generator seeded from the
    cell id (and restored after), so a model random in eval mode draws the same randomness when
    the cell is run again, alone or beside other cells."""
    if ctx.passes == 1:
        return _scored_cell(ctx, cell, shared)
    with torch.random.fork_rng(devices=[ctx.device] if ctx.device.type == "cuda" else []):
        torch.manual_seed(int(cell.cell_id(ctx.spec.data, ctx.spec.recipe, ctx.spec.evaluation)[:12], 16))
        return _scored_cell(ctx, cell, shared)


def _scored_cell(ctx: EvalContext, cell: Cell, shared: SharedRuns) -> tuple[dict[str, Result], dict[str, Any]]:
    """Results of one cell keyed by the CSV `rerank` value ("" = off), and the cell's attack fields.

    Re-ID: rank results of the attacked side against the clean other side. Classification:
    accuracy on the (attacked) test images. With --score-repeats above 1 each result is the
    `Repeated` of its passes."""
    data, clean = ctx.data, ctx.clean
    task = "classification" if isinstance(data, ClassificationDataset) else "reid"
    attack = cell.build_attack(task)
    extra = attack_fields(cell, attack, task)
    if isinstance(data, ClassificationDataset) or clean is None:
        accuracy = attacked_accuracy(ctx, cell, attack)
        return {"": _averaged(accuracy)}, {**extra, "projected": _projected(attack)}
    if isinstance(attack, attacks.Ensemble):  # each query at its worst over the members
        worst, members = _ensemble_results(ctx, cell, attack, shared)
        projected = max((m.attack.projected or 0.0 for m in members.values()), default=0.0)
        return dict(worst), {**extra, "projected": projected, "members": members}
    passes = [{"query": c.query, "gallery": c.gallery} for c in (clean, *ctx.rescored)]
    if attack is not None:  # the attacked (or corrupted) side(s) against the clean other
        for side in attack.sides():
            for features, embedded in zip(passes, _attacked_embeddings(ctx, cell, attack, side, shared), strict=True):
                if not torch.isfinite(embedded).all():
                    raise ModelError(f"the model's embeddings of the attacked {side} images are not finite")
                features[side] = embedded
    ranked = [rank_results(ctx.spec, data, f["query"], f["gallery"]) for f in passes]
    modes = ranked[0]
    return {mode: _averaged([r[mode] for r in ranked]) for mode in modes}, {**extra, "projected": _projected(attack)}


def _averaged(passes: Sequence[RankResult] | Sequence[AccuracyResult]) -> Result:
    """One pass as it is; several as their `Repeated` (mean and spread over the passes)."""
    return passes[0] if len(passes) == 1 else Repeated(tuple(passes))  # type: ignore[arg-type]  # one kind per cell


@dataclass
class _Member:
    """One ensemble member's run in a cell: its attack object and its rank results per re-ranking mode."""

    attack: attacks.Attack
    results: dict[str, RankResult]


def _ensemble_results(
    ctx: EvalContext, cell: Cell, ensemble: attacks.Ensemble, shared: SharedRuns
) -> tuple[dict[str, RankResult], dict[str, _Member]]:
    """Each query at its worst over the ensemble's members (robustbench_lfm/attacks/ensemble.py).

    Each member runs as the same attack alone in this cell (its spec, the cell's seed, eps, threat
    and probe schedule: `dataclasses.replace(cell, attack=member)`), its attacked queries scored
    against the clean gallery; `metrics.worst_case` keeps each query's worst outcome."""
    assert isinstance(ctx.data, ReIDDataset) and ctx.clean is not None
    members: dict[str, _Member] = {}
    for member_cell in member_cells(cell, ensemble):
        member = member_cell.build_attack("reid")
        assert member is not None and member_cell.attack is not None
        (features,) = _attacked_embeddings(ctx, member_cell, member, "query", shared)  # one pass: spec.py refuses more
        if not torch.isfinite(features).all():
            raise ModelError(
                f"the model's embeddings of the query images attacked by {member_cell.attack.name} are not finite"
            )
        ranked = rank_results(ctx.spec, ctx.data, features, ctx.clean.gallery)
        members[member_cell.attack.label_on("reid")] = _Member(member, ranked)
    modes = next(iter(members.values())).results
    return {mode: worst_case([m.results[mode] for m in members.values()]) for mode in modes}, members


def _attacked_embeddings(
    ctx: EvalContext, cell: Cell, attack: attacks.Attack, side: str, shared: SharedRuns
) -> list[Tensor]:
    """`attacked_side`, or the query embeddings of the same run an earlier cell of the group crafted
    (an ensemble's member and that attack alone: robustbench_lfm/shared_runs.py), with the largest
    change its projection made."""
    key = shared.key(cell) if side == "query" else None
    if key is None:
        return attacked_side(ctx, cell, attack, side)
    kept = shared.take(key)
    if kept is not None:
        embedded, attack.projected = kept
        return [embedded]
    (embedded,) = attacked_side(ctx, cell, attack, side)  # one scoring pass: runs are shared only then
    shared.keep(key, embedded, attack.projected)
    return [embedded]


def _member_rows(spec: RunSpec, cell: Cell, members: dict[str, _Member]) -> list[dict[str, Any]]:
    """members.csv rows: each member's first-match rank and AP for every scored query."""
    cell_id = cell.cell_id(spec.data, spec.recipe, spec.evaluation)
    rows = []
    for label, member in members.items():
        for mode, r in member.results.items():
            for i, rank, ap in zip(r.query_index(), r.first_match.tolist(), r.ap.tolist(), strict=True):
                values = {"cell_id": cell_id, "rerank": mode, "member": label, "query": i,
                          "first_match": int(rank), "ap": round(float(ap), 6)}  # fmt: skip
                rows.append(columns.row(columns.MEMBERS, values))
    return rows


def _projected(attack: attacks.Attack | None) -> float | str:
    """The CSV `projected` of a cell: the largest change the final projection made ("" unmeasured)."""
    return "" if attack is None or attack.projected is None else attack.projected


def rank_results(spec: RunSpec, data: ReIDDataset, qf: Tensor, gf: Tensor) -> dict[str, RankResult]:
    """Market-1501 scores of query features `qf` against gallery features `gf`, per re-ranking mode
    of the run (keyed by the CSV `rerank` value, "" = off)."""
    q, g = data.query, data.gallery
    return {
        label: evaluate_rank(dist, q.pids, g.pids, q.camids, g.camids, ap=_ap_formula(spec.evaluation.ap))
        for label, dist in _distances(spec, qf, gf)
    }


def _ap_formula(name: str) -> APFormula:
    """The run's AP formula as the evaluator types it (the spec has checked the name)."""
    if name not in AP_FORMULAS:
        raise ValueError(f"unknown AP formula {name!r} (known: {', '.join(AP_FORMULAS)})")
    return "plain" if name == "plain" else "trapezoid"


def attack_fields(cell: Cell, attack: attacks.Attack | None, task: str) -> dict[str, Any]:
    """The CSV fields of the cell's attack: its name, label, resolved options and the schedule run."""
    if attack is None or cell.attack is None:
        return {"attack": "none", "attack_label": "none", "attack_params": "{}", "objective": "", "norm": "",
                "steps": 0, "step_size": 0.0, "perturbed": "", "severity": 0}  # fmt: skip
    return {"attack": cell.attack.name, "attack_label": cell.attack.label_on(task),
            "attack_params": cell.attack.params_json(), "severity": 0, **attack.describe(cell.eps, task)}  # fmt: skip


def _distances(spec: RunSpec, qf: Tensor, gf: Tensor) -> list[tuple[str, Tensor]]:
    """(rerank label, query x gallery distances) for each re-ranking mode of the run. Re-ranking
    computes the gallery x gallery distances chunk by chunk into its own buffer (no copy kept)."""
    metric = spec.evaluation.distance
    q_g = pairwise_distance(qf, gf, metric)
    out = []

    def gallery_rows(start: int, stop: int) -> Tensor:
        return pairwise_distance(gf[start:stop], gf, metric)

    for on in spec.evaluation.rerank_modes():
        if on:
            params = RerankParams()
            reranked = rerank(q_g, pairwise_distance(qf, qf, metric), gallery_rows, params)
            out.append((params.label(), reranked))
        else:
            out.append(("", q_g))
    return out


def _curve_rows(
    spec: RunSpec, cell: Cell, results: dict[str, RankResult | Repeated], extra: dict[str, Any]
) -> list[dict[str, Any]]:
    """cmc.csv rows: the CMC curve of each re-ranking mode of the cell (averaged over scoring passes)."""
    base = {
        "cell_id": cell.cell_id(spec.data, spec.recipe, spec.evaluation),
        "model": cell.model.label,
        "attack": extra["attack"],
        "eps": cell.eps,
        "train_seed": cell.seed,
    }
    return [
        {**base, "rerank": label, "rank": k, "cmc": float(v)}
        for label, result in results.items()
        for k, v in enumerate(result.cmc.tolist(), start=1)
    ]


def _query_rows(spec: RunSpec, cell: Cell, results: dict[str, Result]) -> list[dict[str, Any]]:
    """queries.csv rows: each scored query's (or test image's) outcome in every per-query column of
    the metric table, per re-ranking mode; a column no metric of the task fills stays empty."""
    cell_id = cell.cell_id(spec.data, spec.recipe, spec.evaluation)
    task = get_dataset_info(spec.data.name).task
    empty = dict.fromkeys(metric_table.query_columns(), "")
    rows = []
    for label, result in results.items():
        columns = result.per_query() if isinstance(result, Repeated) else metric_table.per_query_all(task, result)
        for j, i in enumerate(result.query_index()):
            outcomes = {c: _outcome(v[j]) for c, v in columns.items()}
            rows.append({"cell_id": cell_id, "rerank": label, "query": i, **empty, **outcomes})
    return rows


def _outcome(value: float) -> int | float | str:
    """A per-query outcome as queries.csv writes it: 0/1 as an int, a score to 6 digits, NaN empty."""
    if isinstance(value, int):
        return value
    return "" if math.isnan(value) else round(float(value), 6)


def result_rows(
    spec: RunSpec,
    cell: Cell,
    results: dict[str, Result],
    extra: dict[str, Any],
    sha: str,
    wall: float,
    n_eval: int,
) -> list[dict[str, Any]]:
    base = {
        "run_id": spec.out_dir.name,
        "cell_id": cell.cell_id(spec.data, spec.recipe, spec.evaluation),
        "task": get_dataset_info(spec.data.name).task,
        "dataset": spec.data.name,
        "data_params": spec.data.params_json(),
        "test_dataset": (spec.evaluation.test or spec.data).name,
        "test_data_params": (spec.evaluation.test or spec.data).params_json(),
        "train_fraction": spec.data.train_subset(),
        "recipe_key": spec.recipe.fingerprint(),
        "model": cell.model.label,
        "backbone": cell.model.backbone,
        "regularizer": cell.model.regularizer,
        "model_params": json.dumps(dict(cell.model.resolved), sort_keys=True),
        "pretrained_sha256": cell.model.pretrained,
        "train_seed": cell.seed,
        "eps": cell.eps,
        "surrogate": "" if cell.attack is None or cell.threat.surrogate is None else cell.threat.surrogate.label,
        "quantize": cell.attack is not None and cell.threat.quantize,
        "distance": spec.evaluation.distance,
        "ap": spec.evaluation.ap,
        "flip": spec.evaluation.flip,
        "precision": spec.evaluation.precision,
        "attack_precision": spec.evaluation.attack_precision if cell.attack is not None else "",
        "n_eval": n_eval,
        "eval_subset": eval_subset(spec),
        "score_repeats": spec.evaluation.score_repeats,
        "wall_s": round(wall, 3),
        "checkpoint_sha256": sha,
        "code": cell.code(spec.data),
        "lfm_bench_version": __version__,
        "torch_version": torch.__version__,
        "git_sha": git_sha(),
        "created_at": now(),
        "schema": columns.SCHEMA,
        **extra,
    }
    return [
        columns.row(
            columns.RESULTS,
            {**base, "rerank": label, "metric": name, "value": value, "score_sd": _spread(result).get(name, "")},
        )
        for label, result in results.items()
        for name, value in result.as_metrics().items()
    ]


def _spread(result: Result) -> dict[str, float]:
    """Each metric's standard deviation over the scoring passes (none for one pass)."""
    return result.spread() if isinstance(result, Repeated) else {}
