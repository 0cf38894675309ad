"""Every preset runs end to end, in a tiny form: its models, attacks, recipe and evaluation as
shipped, with the dataset, epochs and scored images overridden and the attacks' iterations capped
(Square's queries, the iterative attacks' steps: tests/conftest.py) so it fits the test suite. A
preset whose attack or model cannot run on its own protocol fails here, not in a user's first
real run (AutoAttack's FAB-T once did)."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from robustbench_lfm.cli import main
from robustbench_lfm.cli_options import PRESET_DIR, presets
from robustbench_lfm.datasets import get_dataset_info
from tests import outside
from tests.conftest import TINY_CLI, cap_iterative_steps, cap_square_queries

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

# Per task: the generated dataset the preset is pointed at and what shrinks the run. A model
# trained for one epoch on 5% of digits is nearly constant: at 8/255 the images it gets right
# resist every stage of AutoAttack (gradient masking), and FAB-T and Square then cost minutes per
# image on a CPU. The large budget lets APGD-CE end most of it, and Square's queries are capped
# (tests/conftest.py cap_square_queries): this tests the path, not the attack's strength.
TINY = {
    "reid": ["--dataset", TINY_CLI, "--epochs", "1", "--n-eval", "6"],
    "classification": ["--dataset", "digits", "--epochs", "1", "--n-eval", "4", "--train-fraction", "0.05",
                       "--eps", "64/255"],
}  # fmt: skip
# The CIFAR presets train the paper recipe's networks on 32x32 inputs: pgd-at's PGD-10 step on 5% of
# digits took 16 of robustbench-linf's 28 s in a one-thread profile, and rcm-cifar's twelve one-step
# trainings 49 of its 148 s. One batch of 1% (13 images) or 2% (27) is the same path (the last
# --train-fraction given counts), as long as each network still gets one of its four test images right:
# an attack searches only those, and the test asserts there is one. The VGG-16s and AlexNets get none
# right after 13 images (and the ResNets one, 2-core development machine), so their parts keep 2%.
SMALLER = {"robustbench-linf": "0.01", "rcm-cifar": "0.02", ("rcm-cifar", "resnet18"): "0.01",
           ("rcm-cifar", "preact-resnet18"): "0.01"}  # fmt: skip


@pytest.fixture(scope="module")
def imagenet_like(tmp_path_factory) -> str:
    """A torchvision ResNet-50 state dict (its own code, random init) for recipes that start from ImageNet."""
    path = tmp_path_factory.mktemp("weights") / "resnet50-torchvision.pth"
    torch.save(outside.torchvision_resnet().resnet50().state_dict(), path)
    return str(path)


# A VGG-16 trained one step on a few dozen digits saturates: the one test image it gets right resists every
# stage of AutoAttack, so FAB-T runs its full budget too, and the RCM variants' stride-1 or upsampled
# trunk costs 4x per query (measured on the 2-core machine). Those two run the preset's other attacks
# only; plain:vgg16 runs AutoAttack through the same network code and the same attack code.
APART = {"rcm-cifar": ["rcm-up:backbone=vgg16", "rcm-stride:backbone=vgg16"]}

# The long presets' tiny forms run in parts, each its own sweep and its own test, so the suite's two
# pytest-xdist workers share them: rcm-cifar's twelve models took 113 s as one test, which left one
# worker idle for most of the tier. The first part of a preset runs as shipped, the plain baseline
# included; the others leave it out (--no-baseline), as it would only be computed again. A preset not
# named here runs whole, as one part. `test_the_parts_of_a_preset_run_every_model_under_every_attack`
# checks that the parts together are the preset.
PARTS = {
    "rcm-cifar": {
        "resnet18": ["rcm-up", "rcm-stride", "pgd-at"],
        "preact-resnet18": [
            "plain:backbone=preact-resnet18", "rcm-up:backbone=preact-resnet18", "rcm-stride:backbone=preact-resnet18",
        ],
        "vgg16-alexnet": [
            "plain:backbone=vgg16", "plain:backbone=alexnet", "rcm-up:backbone=alexnet", "rcm-stride:backbone=alexnet",
        ],
        "rcm-vgg16": APART["rcm-cifar"],
    },
    "lfm-paper": {"lfm": ["lfm"], "dropout-cutout": ["dropout", "cutout"]},
}  # fmt: skip


def _shipped(preset: str) -> dict:
    return tomllib.loads((PRESET_DIR / f"{preset}.toml").read_text())


def _parts(preset: str, shipped: dict) -> dict[str, tuple[list[str], list[str]]]:
    """The (models, attacks) of each part of a preset's tiny form, by name."""
    apart = APART.get(preset, [])
    out = {}
    for name, models in PARTS.get(preset, {"all": list(shipped["models"])}).items():
        attacks = [a for a in shipped["attacks"] if not (set(models) <= set(apart) and a.split(":")[0] == "autoattack")]
        out[name] = (models, attacks)
    return out


# The long presets' parts first: pytest-xdist hands the tests out in this order, and a long part
# started last would leave one worker running it alone.
ORDER = [*PARTS, *(p for p in presets() if p not in PARTS)]
PRESET_PARTS = [(preset, part) for preset in ORDER for part in _parts(preset, _shipped(preset))]


def test_the_parts_of_a_preset_run_every_model_under_every_attack():
    """The parts of each preset's tiny form (PARTS) are the preset: every model under every attack,
    once, but for the pairs APART names."""
    for preset in presets():
        shipped = _shipped(preset)
        pairs = [(m, a) for models, attacks in _parts(preset, shipped).values() for m in models for a in attacks]
        expected = [
            (m, a)
            for m in shipped["models"]
            for a in shipped["attacks"]
            if not (m in APART.get(preset, []) and a.split(":")[0] == "autoattack")
        ]
        assert sorted(pairs) == sorted(expected), preset


@pytest.mark.slow
def test_the_smoke_preset_as_shipped_prints_a_labelled_table(tmp_path):
    """`lfm-bench run --preset smoke` as a newcomer types it: the line saying it is a smoke test, then
    a table with clean and attacked Rank-1 and mAP of plain and lfm, and the note in the manifest."""
    result = CliRunner().invoke(main, ["run", "--preset", "smoke", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()  # the progress bars (stderr) come first, mixed in by the runner
    note = next(i for i, line in enumerate(lines) if "SMOKE TEST (--preset smoke)" in line)
    header = lines[note + 2]
    assert "clean Rank-1" in header and "pgd:steps=5 8/255 Rank-1" in header
    assert {line.split()[0] for line in lines[note + 3 : note + 6] if line.strip()} >= {"plain", "lfm"}
    import json

    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["spec"]["note"].startswith("SMOKE TEST")


# The presets' tiny forms are slow tests (the suite runs them; `-m "not slow"` leaves them out). In
# parts on the suite's two workers, one thread each: rcm-cifar's four 13-19 s (its attacks search only
# the one test image in four a tiny model gets right; at 64/255 the large-eps probe is the sweep's own
# cell, run once), lfm-paper's ResNet-50s under auto-reid's six members 14-18 s (26.4-26.5 s before the
# iterative attacks' steps were capped, 31-33 s before its SMA-15 was crafted once with auto-reid's
# cosine member, robustbench_lfm/shared_runs.py), robustbench-linf's PGD-10-trained ResNet-18 4-6 s
# (2-core development machine). The smoke preset's test above runs it as shipped, 52-63 s.
@pytest.mark.slow
@pytest.mark.parametrize(("preset", "part"), PRESET_PARTS)
def test_every_preset_runs_in_a_tiny_form(tmp_path, preset, part, imagenet_like, monkeypatch):
    cap_square_queries(monkeypatch)
    cap_iterative_steps(monkeypatch)
    shipped = _shipped(preset)
    parts = _parts(preset, shipped)
    models, attacks = parts[part]
    task = get_dataset_info(shipped["dataset"].split(":")[0]).task
    extra = ["--pretrained", imagenet_like] if task == "reid" and shipped.get("recipe") == "paper" else []
    baseline = [] if part == next(iter(parts)) else ["--no-baseline"]
    grid = ["--models", ",".join(models), "--attacks", ",".join(attacks)]
    fraction = SMALLER.get((preset, part), SMALLER.get(preset))
    tiny = [*TINY[task], *(["--train-fraction", fraction] if fraction else [])]
    out = tmp_path / "run"
    args = ["run", "--preset", preset, *tiny, *extra, *baseline, *grid, "--out", str(out), "-q"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    df = pd.read_csv(out / "results.csv", keep_default_na=False)
    ran = {a.split(":")[0] for a in attacks}
    assert ran | {"none"} == set(df["attack"])  # every attack of the part, and the clean cells
    assert set(df["recipe_key"]) and df["value"].astype(float).between(0, 1).all()
    assert set(models) <= set(df["model"])  # every model, under its own label
    if task == "classification":  # an attack searches only the images a model gets right clean: some must be
        clean = df[(df["attack"] == "none") & (df["metric"] == "accuracy")]
        assert (clean["value"].astype(float) > 0).all(), f"a model got no test image right: raise SMALLER\n{clean}"
