"""`lfm-bench run --dry-run` and the rates behind its estimate (robustbench_lfm/estimate.py)."""

from __future__ import annotations

import json
import re

import pytest
import torch
from click.testing import CliRunner

from robustbench_lfm import estimate, models, progress
from robustbench_lfm.cli import main
from robustbench_lfm.options import RunOptions
from robustbench_lfm.spec import build_spec
from tests.conftest import TINY_CLI, cap_square_queries

FAST = ["--dataset", TINY_CLI, "--epochs", "1", "--eps", "8/255", "--models", "lfm", "--attacks", "pgd:steps=2"]


def _run(out, cache, *extra):
    return CliRunner().invoke(main, ["run", *FAST, "--out", str(out), "--cache-dir", str(cache), "-q", *extra])


def test_a_dry_run_writes_nothing_and_counts_what_a_real_run_then_does(tmp_path):
    out, cache = tmp_path / "run", tmp_path / "cache"
    first = _run(out, cache, "--dry-run")
    assert first.exit_code == 0, first.output
    assert "models: 2 to train (plain@seed0, lfm@seed0)" in first.output
    assert "cells: 4 of 4 to run (0 recorded)" in first.output and "rates of a 2-core CPU assumed" in first.output
    assert not out.exists() and not (cache / "checkpoints").exists()  # nothing trained, nothing recorded, no folder
    (tmp_path / "file").write_text("")  # no folder can be made under a file
    blocked = _run(tmp_path / "file" / "run", cache, "--dry-run")
    assert blocked.exit_code == 2 and "output directory" in blocked.output and "not writable" in blocked.output
    a_file = _run(tmp_path / "file", cache, "--dry-run")  # --out naming a file: said as such
    assert a_file.exit_code == 2 and "not writable (Not a directory)" in a_file.output, a_file.output
    assert _run(out, cache).exit_code == 0
    rates = json.loads((cache / estimate.RATES_FILE).read_text())  # the real run measured its stages
    assert set(rates["train"]) == {"resnet-mini bf16"}  # the re-ID recipe trains in bf16: its own rate
    assert rates["train"]["resnet-mini bf16"] and all(v > 0 for v in rates["cell"]["resnet-mini"])
    cell = rates["cell"]["resnet-mini"]  # one attacked cell per model; a clean cell times no embedding
    assert len(cell) == 2 and max(cell) < 3 * min(cell)
    again = _run(out, cache, "--dry-run", "--eps", "4/255,8/255")
    assert "models: 0 to train, 2 cached or given" in again.output
    assert "cells: 2 of 6 to run (4 recorded)" in again.output and "assumed" not in again.output


def test_a_damaged_rates_file_falls_back_to_the_defaults(tmp_path):
    (tmp_path / estimate.RATES_FILE).write_text('{"train": {"resnet-mini": [0.1, "x", -1, NaN]}, "cell": 3')
    assert estimate.read_rates(tmp_path) == {}
    (tmp_path / estimate.RATES_FILE).write_text('{"format": 3, "train": {"resnet-mini": [0.1, "x", -1, 0.3]}}')
    assert estimate.rate(estimate.read_rates(tmp_path), "train", "resnet-mini") == (0.2, True)  # median of the valid
    assert estimate.rate({}, "cell", "vgg16") == (estimate.DEFAULT_RATES["cell"], False)
    assert estimate.rate({}, "train", "resnet-mini bf16") == (estimate.DEFAULT_RATES["train bf16"], False)
    assert estimate.DEFAULT_RATES["train bf16"] < estimate.rate({}, "train", "resnet-mini")[0]


def test_an_attack_s_work_counts_its_steps_eot_and_an_ensemble_s_members(tmp_path):
    spec = build_spec(RunOptions(dataset=TINY_CLI, attacks="pgd:steps=3,pgd:steps=3,eot=4,auto-reid,corrupt",
                                 eps="8/255", out=tmp_path / "r", cache_dir=tmp_path / "c"))  # fmt: skip
    passes = {c.attack.label if c.attack else "clean": estimate.cell_passes(spec, c, 12) for c in spec.cells()}
    assert passes["clean"] == 1 and passes["pgd:steps=3"] == 4 and passes["pgd:eot=4,steps=3"] == 16
    members = [estimate.cell_passes(spec, c, 12) for c in spec.cells() if c.attack and c.attack.name == "auto-reid"]
    assert members[0] > 6 * 4  # six members of several steps each, run as they run alone
    grid = {"attacks": "autoattack,autoattack:steps=10,autoattack:version=rand", "eps": "8/255"}
    spec = build_spec(RunOptions(dataset="digits", **grid, out=tmp_path / "d", cache_dir=tmp_path / "c"))
    passes = {c.attack.label: estimate.cell_passes(spec, c, 10) for c in spec.cells() if c.attack}
    # APGD-CE 100, APGD-T and FAB-T 100 for each of 9 targets, Square 5000: each image through every member
    assert passes == {"autoattack": 6900, "autoattack:steps=10": 5190, "autoattack:version=rand": 2 * 100 * 20}
    standard = next(c for c in spec.cells() if c.attack and c.attack.label == "autoattack")
    assert estimate.cell_passes(spec, standard, 3) == 100 + 2 * 100 * 2 + 5000  # 3 classes: 2 targets
    assert estimate.cell_passes(spec, standard, 10, most=False) == 100  # APGD-CE, which every image runs
    at_zero = {c.attack.label: estimate.cell_passes(spec, c, 10) for c in spec.probe_cells() if c.eps == 0}
    assert at_zero == {"autoattack": 1, "autoattack:steps=10": 1, "autoattack:version=rand": 1}  # no search at eps 0
    assert estimate.duration(59) == "59 s" and estimate.duration(125) == "2 min 05 s"


def _flops_counted_by_torch(name: str, task: str, size: tuple[int, int], **overrides) -> float:
    """Multiply-adds per pixel as torch's own FlopCounterMode counts them (half its FLOPs)."""
    from torch.utils.flop_counter import FlopCounterMode

    net = models.create_model(name, 10, task, **overrides).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(torch.zeros(1, 3, *size))
    return counter.get_total_flops() / 2 / (size[0] * size[1])


ARCHITECTURES = [("plain", {"backbone": b}) for b in models.registry.BACKBONES] + [
    ("rcm-up", {"backbone": "vgg16"}),  # RCM's upsampled and stride-1 trunks cost 4x and 12x their plain one
    ("rcm-stride", {"backbone": "vgg16"}),
]


@pytest.mark.parametrize(("name", "overrides"), ARCHITECTURES, ids=lambda v: v if isinstance(v, str) else v["backbone"])
@pytest.mark.parametrize(("task", "size"), [("reid", (64, 32)), ("classification", (32, 32))])
def test_every_architecture_s_multiply_adds_are_what_torch_s_flop_counter_counts(name, overrides, task, size):
    ours = estimate.macs_per_pixel(name, overrides, task, size, 10)
    assert ours == pytest.approx(_flops_counted_by_torch(name, task, size, **overrides), rel=1e-9)


SHAPE = estimate.Shape(scored=20, gallery=0, size=(32, 32), epoch_images=100, classes=10)


def _spec(tmp_path, models_: str, **changes):
    options = {"dataset": "digits", "attacks": "pgd:steps=5", "eps": "8/255", "epochs": 2, "no_baseline": True}
    options.update(changes)
    return build_spec(RunOptions(models=models_, out=tmp_path / "r", cache_dir=tmp_path / "c", **options))


def _work(tmp_path, models_: str) -> estimate.Work:
    return estimate.pending_work(_spec(tmp_path, models_), SHAPE, {"results": set(), "probes": set()})


def _estimate(tmp_path, models_: str, rates: dict) -> tuple[str, float]:
    return estimate.describe(_work(tmp_path, models_), rates)


def test_an_unmeasured_backbone_s_estimate_scales_with_its_multiply_adds_and_a_measured_one_does_not(tmp_path):
    """The default rates are resnet-mini's: a VGG-16 no sweep has measured costs what its multiply-adds
    say (torch's counter), not resnet-mini's price (a tiny rcm-cifar once read `about 1 s` for two minutes)."""
    ratio = _flops_counted_by_torch("plain", "classification", (32, 32), backbone="vgg16") / _flops_counted_by_torch(
        "plain", "classification", (32, 32), backbone="resnet-mini"
    )
    assert ratio > 15
    text, vgg = _estimate(tmp_path, "plain:backbone=vgg16", {})
    _, mini = _estimate(tmp_path, "plain:backbone=resnet-mini", {})
    assert vgg / mini == pytest.approx(ratio, rel=1e-6)
    assert "scaled by each model's multiply-adds per pixel" in text and "unscaled" not in text
    measured = {"train": {"vgg16": [1.0]}, "cell": {"vgg16": [1.0]}}  # a sweep of this cache timed vgg16
    text, vgg = _estimate(tmp_path, "plain:backbone=vgg16", measured)
    _, mini = _estimate(
        tmp_path, "plain:backbone=resnet-mini", {"train": {"resnet-mini": [1.0]}, "cell": {"resnet-mini": [1.0]}}
    )
    assert vgg == pytest.approx(mini) and "assumed" not in text  # measured rates carry the cost already


def test_a_model_that_cannot_be_counted_is_estimated_unscaled_and_named(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("a plugin's forward that needs real data")

    monkeypatch.setattr(estimate, "macs_per_pixel", broken)
    estimate._macs.cache_clear()
    text, seconds = _estimate(tmp_path, "plain:backbone=vgg16", {})
    estimate._macs.cache_clear()
    assert "not counted, so unscaled: plain:backbone=vgg16" in text and seconds > 0


def test_counting_a_model_leaves_torch_s_random_state_as_it_was():
    state = torch.random.get_rng_state()
    estimate.macs_per_pixel("plain", {"backbone": "resnet-mini"}, "reid", (32, 16), 12)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_adversarial_training_counts_its_pgd_steps_as_passes(tmp_path):
    """pgd-at:steps=3 runs three PGD steps (each a forward and a backward to the input: two thirds of a
    training pass) and the update per image: 3x plain's training work, PGD-10 7.7x (measured on the
    2-core machine: 3.0x and 7.4-8.2x), so a rate measured on either prices the other."""
    plain, pgd = _work(tmp_path, "plain").train, _work(tmp_path, "pgd-at:steps=3").train
    assert set(plain) == set(pgd) and sum(pgd.values()) == pytest.approx(3 * sum(plain.values()))
    assert sum(_work(tmp_path, "pgd-at").train.values()) == pytest.approx((1 + 20 / 3) * sum(plain.values()))


def test_a_teacher_and_a_surrogate_are_counted_once_and_mixacm_its_teachers_forward(tmp_path):
    """A MixACM student's teacher (pgd-at) is trained before it: the dry run lists it and counts its
    training, once where the grid trains it too; the transfer surrogate likewise. The student's own
    step adds the teacher's forward, a third of a forward-backward pass."""
    plain, teacher = _work(tmp_path, "plain"), _work(tmp_path, "pgd-at")
    student = _work(tmp_path, "mixacm")
    assert student.to_train == ["mixacm@seed0", "pgd-at@seed0 (teacher)"]
    expected = sum(plain.train.values()) * 4 / 3 + sum(teacher.train.values())
    assert sum(student.train.values()) == pytest.approx(expected)
    both = _work(tmp_path, "pgd-at,mixacm")
    assert both.to_train == ["pgd-at@seed0", "mixacm@seed0"]
    assert sum(both.train.values()) == pytest.approx(expected)  # the teacher once
    spec = _spec(tmp_path, "lfm", surrogate="dropout")
    assert [label for *_, label in estimate.trained_models(spec)] == ["", "surrogate"]


def test_the_progress_bar_counts_a_teacher_s_training_once(tmp_path):
    """The sweep's bar (runner._run_groups) adds the prerequisites' trainings to its total: the
    teacher's in the first phase; a grid model that a prerequisite trained counts only its cells."""
    spec = _spec(tmp_path, "pgd-at,mixacm")
    pgd_at, mixacm = spec.models
    first = [(mixacm.teacher, 0)]
    before, after = estimate.phase_seconds(spec, first, {(pgd_at, 0): [], (mixacm, 0): []}, SHAPE, {})
    alone, _ = estimate.group_rates(spec, pgd_at, 0, SHAPE, {})  # its training: the group without cells
    assert list(before) == [(mixacm.teacher, 0)] and alone > 0
    assert before[(mixacm.teacher, 0)].seconds == pytest.approx(alone, abs=0.05)
    assert after[(pgd_at, 0)].seconds == 0 and after[(mixacm, 0)].seconds > 0  # pgd-at: the teacher, trained first


class _Bar:
    def __init__(self, total: float = 100.0) -> None:
        self.total, self.n = total, 0.0

    def update(self, step: float) -> None:
        self.n += step


def test_the_sweep_bar_counts_each_epoch_batch_and_cell_of_a_group_and_the_rest_when_it_comes_back():
    """A group of 10 s training and cells at 2 s per unit of work (30 s estimated): each of its two
    epochs counts half the training; the finished cells their work so far (5 units: 20 s), the cell
    under way its share of the 10 scored images crafted, never past the group's estimate; the result
    coming back, what is left. Another group's events move nothing."""
    bar = _Bar()
    units = {"clean": 5.0, "pgd": 7.0}
    moved = progress.SweepBar(bar, lambda cells: sum(units[c] for c in cells), scored=10)
    moved.expect("lfm@seed0", training=10.0, per_work=2.0, seconds=30.0)
    readings = []
    for event in [progress.Epoch("lfm@seed0", 1, 2), progress.Epoch("lfm@seed0", 2, 2),
                  progress.Epoch("plain@seed0", 1, 2), progress.CellDone("lfm@seed0", "clean"),
                  progress.Images("lfm@seed0", "pgd", 4), progress.Images("lfm@seed0", "pgd", 4),
                  progress.CellDone("lfm@seed0", "pgd")]:  # fmt: skip
        moved(event)
        readings.append(bar.n)
    # pgd's 7 units, 4 and then 8 of its 10 images crafted: 10 + (5 + 2.8) x 2 = 25.6 s, then 31.2 s and
    # when it ends 10 + 12 x 2 = 34 s, each held at the group's 30
    assert readings == pytest.approx([5.0, 10.0, 10.0, 20.0, 25.6, 30.0, 30.0])
    moved.expect("plain@seed0", training=0.0, per_work=1.0, seconds=4.0)
    moved(progress.CellDone("plain@seed0", "clean"))
    moved.finished("lfm@seed0")
    assert bar.n == 30.0 + 4.0  # plain's clean cell: 5 units at 1 s, held at its 4 s
    moved.finished("plain@seed0")
    moved(progress.Epoch("plain@seed0", 2, 2))  # an event after its group came back
    assert bar.n == 34.0


def test_a_batch_under_way_counts_its_passes_and_its_images_replace_them():
    """`Crafting` (the passes of a batch under way, as images' worth) moves the bar within a batch;
    the batch's `Images` replace it, so nothing is counted twice, and the bar never goes back."""
    bar = _Bar()
    moved = progress.SweepBar(bar, lambda cells: {"pgd": 10.0}[cells[0]], scored=10)
    moved.expect("lfm@seed0", training=0.0, per_work=1.0, seconds=10.0)
    readings = []
    for event in [progress.Crafting("lfm@seed0", "pgd", 1.0), progress.Crafting("lfm@seed0", "pgd", 2.5),
                  progress.Images("lfm@seed0", "pgd", 5), progress.Crafting("lfm@seed0", "pgd", 2.0),
                  progress.Crafting("lfm@seed0", "pgd", 0.5), progress.Images("lfm@seed0", "pgd", 5)]:  # fmt: skip
        moved(event)
        readings.append(bar.n)
    # pgd's 10 units over 10 images, 1 s a unit: 1 then 2.5 images' worth, the first batch's 5 images,
    # then 5 + 2 of the second batch's, a smaller count holding the bar where it was, and all 10
    assert readings == pytest.approx([1.0, 2.5, 5.0, 7.0, 7.0, 10.0])


def test_autoattack_s_batches_shrink_the_bar_s_total_to_what_they_ran():
    """A cell whose attack is known only within bounds (AutoAttack): each batch's `Images` share of
    its most passes sets what the cell is expected to cost, the running mean over its batches, and
    the group's estimate and the bar's total follow; the passes of a batch under way count against
    that mean, and the bar never goes back."""
    bar = _Bar(total=10.0)
    moved = progress.SweepBar(bar, lambda cells: {"aa": 10.0}[cells[0]], scored=10)
    moved.expect("m@seed0", training=0.0, per_work=1.0, seconds=10.0)
    readings = []
    for event in [progress.Crafting("m@seed0", "aa", 1.0), progress.Images("m@seed0", "aa", 5, 0.2),
                  progress.Crafting("m@seed0", "aa", 0.5), progress.Images("m@seed0", "aa", 5, 0.4),
                  progress.CellDone("m@seed0", "aa")]:  # fmt: skip
        moved(event)
        readings.append((bar.n, bar.total))
    moved.finished("m@seed0")
    # 1 image's worth of 10 units: 1 s. The first batch ran a fifth of its most passes: the cell is
    # expected to cost 2 units, the total 2 s, and its 5 images count 1 s (the bar holds at 1). The
    # second batch's 0.5 images' worth of passes against that fifth is 2.5 images: 2 x 7.5/10. It ran
    # 0.4: the mean 0.3, the cell 3 units, the total back up to 3 s, its 10 images all of it.
    assert readings == pytest.approx([(1.0, 10.0), (1.0, 2.0), (1.5, 2.0), (3.0, 3.0), (3.0, 3.0)])
    assert (bar.n, bar.total) == pytest.approx((3.0, 3.0))
    bar.total += 10.0  # a second group whose cell runs no pass at all (AutoAttack at eps 0): it costs nothing
    moved.expect("z@seed0", training=0.0, per_work=1.0, seconds=10.0)
    moved(progress.Images("z@seed0", "aa", 10, 0.0))
    assert (bar.n, bar.total) == pytest.approx((3.0, 3.0))


def test_a_bounded_cell_yet_to_run_is_expected_to_cost_what_the_group_s_others_ran():
    """Before its own batches say, a cell of the same bounded attack (AutoAttack at another eps, the
    large-eps probe) is expected to run the share its group's others ran, not its most; a cell at
    eps 0, which runs no pass, does not count toward that share."""
    from collections import namedtuple

    cell = namedtuple("cell", "name eps")
    a, b, zero = cell("aa", 8 / 255), cell("aa", 64 / 255), cell("aa", 0.0)
    bar = _Bar(total=21.0)
    moved = progress.SweepBar(bar, lambda cells: 1.0, scored=10)
    moved.expect("m@seed0", 0.0, 1.0, 21.0, {a: 10.0, b: 10.0, zero: 1.0}, frozenset({a, b, zero}))
    readings = []
    for event in [progress.Images("m@seed0", zero, 10, 0.0), progress.CellDone("m@seed0", zero),
                  progress.Images("m@seed0", a, 10, 0.5), progress.CellDone("m@seed0", a),
                  progress.Images("m@seed0", b, 10, 0.1), progress.CellDone("m@seed0", b)]:  # fmt: skip
        moved(event)
        readings.append((bar.n, bar.total))
    # eps 0 ran nothing: its unit goes, the others keep their most (20 s). a ran half: a and b are
    # expected at 5 units each (10 s in all, 5 of them counted); b then ran a tenth: 1 unit, 6 s.
    assert readings == pytest.approx([(0.0, 20.0), (0.0, 20.0), (5.0, 10.0), (5.0, 10.0), (6.0, 6.0), (6.0, 6.0)])


def test_an_attack_reports_its_batch_as_its_passes_go_ours_and_torchattacks_through_the_models_hook(
    tmp_path, monkeypatch
):
    """`progress.crafting` counts every forward pass of the model an attack runs on: our PGD's steps
    and torchattacks' AutoAttack members (through the contiguous-gradient wrapper). Each report is the
    batch's images times the share of the attack's most passes (estimate.cell_passes) run so far,
    rising, within the batch; nothing is hooked when no one listens."""
    from robustbench_lfm import attacks

    monkeypatch.setattr(progress, "CRAFTING_EVERY_S", 0.0)  # every pass reports
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4)).eval()
    x, y = torch.rand(6, 3, 8, 8), torch.tensor([0, 1, 2, 3, 0, 1])
    context = attacks.AttackContext("classification", labels=y)
    spec = _spec(tmp_path, "plain", attacks="pgd:steps=5,autoattack:steps=2")
    for cell in [c for c in spec.cells() if c.attack is not None]:
        name, attack = cell.attack.name, cell.build_attack("classification")
        most = estimate.cell_passes(spec, cell, 4)
        heard: list = []
        with progress.listening(heard.append), progress.crafting(net, "m@seed0", cell, len(x), lambda m=most: m):
            attack(net, x, context, eps=8 / 255, generator=torch.Generator().manual_seed(0))
        reports = [e.images for e in heard if isinstance(e, progress.Crafting) and e.cell == cell]
        assert len(reports) >= 3, (name, heard)
        assert reports == sorted(reports) and reports[0] > 0 and reports[-1] <= len(x), (name, reports)
        if name == "pgd":  # its 5 steps of the 6 images, a pass each, of 6 passes an image at most
            assert reports[-1] == pytest.approx(len(x) * 5 / most) and most == 6
    assert not net._forward_pre_hooks  # removed on the way out
    with progress.crafting(net, "m@seed0", cell, len(x), lambda: most):  # no listener: no hook, no count
        assert not net._forward_pre_hooks


def test_two_sweeps_in_two_threads_hear_only_their_own_progress():
    """A library user's two run_sweep calls in two threads: each bar hears its own groups' events."""
    import threading

    heard: dict[str, list] = {"a": [], "b": []}
    both = threading.Barrier(2)  # both listen before either reports, and until both have

    def sweep(name: str) -> None:
        with progress.listening(heard[name].append):
            both.wait()
            for done in (1, 2):
                progress.report(progress.Epoch(f"{name}@seed0", done, 2))
            both.wait()

    threads = [threading.Thread(target=sweep, args=(name,)) for name in heard]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {name: [e.label for e in events] for name, events in heard.items()} == {
        "a": ["a@seed0"] * 2, "b": ["b@seed0"] * 2,
    }  # fmt: skip
    progress.report(progress.Epoch("c@seed0", 1, 2))  # this thread listens to nothing: no error, no one hears


def test_a_cached_mixacm_student_is_found_through_its_teacher_s_checkpoint(tmp_path):
    """The student's checkpoint key carries its teacher checkpoint's sha256 (group.trained_model): after
    a sweep, a dry run finds both cached, where it once counted the student to train on every run."""
    out, cache = tmp_path / "run", tmp_path / "cache"
    args = ["--models", "mixacm", "--no-baseline", "--attacks", "fgsm"]
    dry = _run(out, cache, *args, "--dry-run")
    assert "models: 2 to train (mixacm@seed0, pgd-at@seed0 (teacher))" in dry.output, dry.output
    assert _run(out, cache, *args).exit_code == 0
    again = _run(out, cache, *args, "--dry-run")
    assert "models: 0 to train, 2 cached or given (mixacm@seed0, pgd-at@seed0 (teacher))" in again.output, again.output
    sidecars = (cache / "checkpoints").glob("*.json")
    teacher = next(p for p in sidecars if json.loads(p.read_text())["model"]["method"] == "pgd-at")
    weights = teacher.with_suffix(".safetensors")
    weights.write_bytes(weights.read_bytes()[:100])  # torn: the sweep would retrain the teacher, so the student
    torn = _run(out, cache, *args, "--dry-run")
    assert "models: 2 to train (mixacm@seed0, pgd-at@seed0 (teacher))" in torn.output, torn.output


def test_the_rates_of_a_rates_file_written_before_they_meant_what_they_mean_now_are_dropped(tmp_path):
    """Before training rates were per pass, a pgd-at training recorded its seconds per image: 11x a
    plain one's on the same backbone; format 2 counted a PGD step as a whole pass. Before format 4, an
    autoattack cell counted as one pass an image, so its cell rate read up to hundreds of times
    another's. A stage's rates from such a file are dropped; the next sweep writes the current format."""
    older = {"train": {"resnet18": [0.5, 5.5]}, "cell": {"resnet18": [0.3, 90.0]}}  # the 90: an autoattack cell
    for layout, kept in (({}, {}), ({"format": 2}, {}), ({"format": 3}, {"train": {"resnet18": [0.5, 5.5]}})):
        (tmp_path / estimate.RATES_FILE).write_text(json.dumps({**layout, **older}))
        assert estimate.read_rates(tmp_path) == kept, layout
    estimate.record(tmp_path, {"train": {"resnet18": [0.6]}, "cell": {"resnet18": [0.4]}})
    assert json.loads((tmp_path / estimate.RATES_FILE).read_text())["format"] == estimate.RATES_FORMAT
    assert estimate.read_rates(tmp_path) == {"train": {"resnet18": [0.5, 5.5, 0.6]}, "cell": {"resnet18": [0.4]}}


def test_an_autoattack_cell_is_estimated_as_a_range_and_measures_no_rate(tmp_path):
    """AutoAttack's later members run only on the images the earlier ones left: its work is not known
    before the run, so the dry run gives a range, from its first member on every image to every
    member on every image, and says so; its wall time is recorded as no rate."""
    out, cache = tmp_path / "run", tmp_path / "cache"
    grid = ["--dataset", "digits", "--models", "plain", "--no-baseline", "--epochs", "1", "--train-fraction", "0.05",
            "--attacks", "autoattack:steps=2,pgd:steps=2", "--eps", "8/255", "--n-eval", "8"]  # fmt: skip
    dry = CliRunner().invoke(main, ["run", *grid, "--out", str(out), "--cache-dir", str(cache), "--dry-run"])
    assert dry.exit_code == 0 and "autoattack:steps=2: its first member on every image at the low end" in dry.output
    low, high = re.search(r"about (.+) to (.+) in all", dry.output).groups()  # type: ignore[union-attr]
    assert low != high, dry.output
    with pytest.MonkeyPatch.context() as monkeypatch:
        cap_square_queries(monkeypatch)
        assert (
            CliRunner().invoke(main, ["run", *grid, "--out", str(out), "--cache-dir", str(cache), "-q"]).exit_code == 0
        )
    rates = json.loads((cache / estimate.RATES_FILE).read_text())
    assert len(rates["cell"]["resnet-mini"]) == 1  # pgd's cell alone


def test_a_cell_that_searches_only_the_right_images_measures_its_rate_on_them(tmp_path):
    """A white-box classification attack searches only the test images its model gets right clean:
    its wall time is measured against that share of the work (and the forward that chose them), so a
    weak model does not record a rate that a strong one would beat 4x. Without the model's clean row
    the share is unknown and no rate is recorded; a cell that searches every image (--score-repeats
    2) divides by its whole work."""

    def rows(spec, clean: str | None) -> list[dict[str, str]]:
        key = (spec.data, spec.recipe, spec.evaluation)
        row = {"attack": "pgd", "metric": "accuracy", "rerank": "", "model": "plain", "train_seed": "0", "value": "0.1"}
        out = [{**row, "cell_id": c.cell_id(*key), "wall_s": "2.0"} for c in spec.cells() if c.attack is not None]
        clean_ids = [c.cell_id(*key) for c in spec.cells() if c.attack is None]
        if clean is not None:
            out.append({**out[0], "cell_id": clean_ids[0], "attack": "none", "value": clean})
        return out

    spec = _spec(tmp_path, "plain")
    attacked = next(c for c in spec.cells() if c.attack is not None)
    assert spec.searches_right_only(attacked)
    work = estimate.cell_work(spec, attacked, SHAPE)
    choose = SHAPE.scored * SHAPE.pixels / 1e6
    rate = estimate.measured_rates(spec, {}, rows(spec, "0.25"), SHAPE)["cell"]["resnet-mini"]
    assert rate == [pytest.approx(2.0 / (0.25 * work + choose))]
    assert estimate.measured_rates(spec, {}, rows(spec, None), SHAPE)["cell"] == {}
    repeated = _spec(tmp_path, "plain", score_repeats=2)
    assert not repeated.searches_right_only(next(c for c in repeated.cells() if c.attack is not None))
    rate = estimate.measured_rates(repeated, {}, rows(repeated, "0.25"), SHAPE)["cell"]["resnet-mini"]
    assert rate == [pytest.approx(2.0 / estimate.cell_work(repeated, attacked, SHAPE))]


def test_a_probe_the_grid_holds_is_computed_once_and_alone_gives_the_same_numbers(tmp_path, monkeypatch):
    """With 64/255 the sweep's largest eps, the large-eps probe is the sweep's own cell there: the
    attack runs once for both tables (and the estimate counts it once); a probe computed alone, its
    twin recorded by an earlier run, gives the twin's numbers. At 32/255 the probe scales the
    schedule and runs apart; so it does when the grid grows to 128/255, and the probe scaled from
    there replaces the twin in probes.csv only (results.csv once lost the sweep cell with it)."""
    from collections import Counter

    import pandas as pd

    from robustbench_lfm import attacks

    searches: Counter = Counter()
    call = attacks.Attack.__call__

    def spied(self, model, x, context, *, eps, generator=None):
        searches[self.name, round(eps * 255)] += 1
        return call(self, model, x, context, eps=eps, generator=generator)

    monkeypatch.setattr(attacks.Attack, "__call__", spied)
    grid = [*FAST[:4], "--models", "plain", "--no-baseline", "--attacks", "pgd:steps=2", "--n-eval", "6"]
    out, cache = tmp_path / "run", tmp_path / "cache"

    def run(eps: str, out=out) -> None:
        args = ["run", *grid, "--eps", eps, "--out", str(out), "--cache-dir", str(cache), "-q"]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output

    key = ["cell_id", "metric", "rerank", "value", "steps", "step_size", "wall_s"]
    pgd_at_64 = lambda df: df[(df["eps"] == 64 / 255) & (df["attack"] == "pgd")]  # noqa: E731
    run("8/255,64/255")
    assert searches["pgd", 64] == searches["pgd", 8] > 0  # PGD-2 at 64/255 once, for both tables
    results = pd.read_csv(out / "results.csv", keep_default_na=False)
    probes = pd.read_csv(out / "probes.csv", keep_default_na=False)
    shared = pgd_at_64(results)[key].sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(pgd_at_64(probes)[key].sort_values(key).reset_index(drop=True), shared)
    (out / "probes.csv").unlink()
    before = searches["pgd", 64]
    run("8/255,64/255")  # the results are recorded: only the probes run, PGD's at 64/255 alone
    assert searches["pgd", 64] == 2 * before and searches["pgd", 8] == before
    alone = pgd_at_64(pd.read_csv(out / "probes.csv", keep_default_na=False))
    alone = alone.sort_values(key[:3]).reset_index(drop=True)
    shared = shared.sort_values(key[:3]).reset_index(drop=True)
    pd.testing.assert_frame_equal(alone[key[:6]], shared[key[:6]])

    spec = build_spec(RunOptions(dataset=TINY_CLI, models="plain", no_baseline=True, attacks="pgd:steps=2",
                                 eps="8/255,64/255", out=tmp_path / "r2", cache_dir=cache))  # fmt: skip
    shape = estimate.Shape(6, 40, (32, 16), 100, 12)
    unique = dict.fromkeys([*spec.cells(), *spec.probe_cells()])
    assert len(unique) == len(spec.cells()) + len(spec.probe_cells()) - 1  # the one twin
    work = estimate.pending_work(spec, shape, {"results": set(), "probes": set()})
    assert sum(work.cells.values()) == pytest.approx(sum(estimate.cell_work(spec, c, shape) for c in unique))
    searches.clear()
    run("8/255,32/255", tmp_path / "run32")
    assert searches["pgd", 64] == searches["pgd", 32] == searches["pgd", 8] > 0  # the probe scales 32/255's schedule

    searches.clear()
    run("8/255,64/255,128/255")  # a larger grid: the probe now scales 128/255's schedule, in probes.csv only
    assert searches["pgd", 64] == searches["pgd", 128] > 0 and searches["pgd", 8] == 0
    kept = pgd_at_64(pd.read_csv(out / "results.csv", keep_default_na=False))  # the sweep cell stays recorded
    pd.testing.assert_frame_equal(kept[key[:6]].sort_values(key[:3]).reset_index(drop=True), shared[key[:6]])
