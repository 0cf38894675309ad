"""Every preset runs end to end, in a tiny form: its models, attacks, recipe and evaluation as
shipped, with the dataset, epochs and scored images overridden so it fits the test suite. A
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
from tests.conftest import TINY_CLI, cap_square_queries

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
# trainings 49 of its 148 s; 2% (27 images) is the same path (the last --train-fraction given counts).
SMALLER = {"robustbench-linf": ["--train-fraction", "0.02"], "rcm-cifar": ["--train-fraction", "0.02"]}


@pytest.fixture(scope="module")
def imagenet_like(tmp_path_factory) -> str:
    """A torchvision ResNet-50 state dict (its own code, random init) for recipes that start from ImageNet."""
    path = tmp_path_factory.mktemp("weights") / "resnet50-torchvision.pth"
    torch.save(outside.torchvision_resnet().resnet50().state_dict(), path)
    return str(path)


# A VGG-16 trained one step on a few dozen digits saturates: the one test image it gets right resists every
# stage of AutoAttack, so FAB-T runs its full budget too, and the RCM variants' stride-1 or upsampled
# trunk costs 4x per query (measured on the 2-core machine). Those two run the preset's other attacks
# in a second sweep; plain:vgg16 runs AutoAttack through the same network code and the same attack code.
APART = {"rcm-cifar": ["rcm-up:backbone=vgg16", "rcm-stride:backbone=vgg16"]}


def _tiny_sweeps(preset: str, shipped: dict) -> list[tuple[list[str], list[str]]]:
    """(models, attacks) of each sweep of a preset's tiny form: every model and every attack."""
    apart = APART.get(preset, [])
    sweeps = [([m for m in shipped["models"] if m not in apart], list(shipped["attacks"]))]
    if apart:
        sweeps.append((apart, [a for a in shipped["attacks"] if a.split(":")[0] != "autoattack"]))
    return sweeps


# The presets' tiny forms are the slow tier, which .ci/run runs after the suite (`pytest -m slow`):
# rcm-cifar's 12 models took 117 s, lfm-paper's ResNet-50s under auto-reid's six members 62 s and
# robustbench-linf's PGD-10-trained ResNet-18 12 s (one process, 2-core development machine). The
# smoke preset's test below runs it as shipped.
@pytest.mark.slow
@pytest.mark.parametrize("preset", presets())
def test_every_preset_runs_in_a_tiny_form(tmp_path, preset, imagenet_like, monkeypatch):
    cap_square_queries(monkeypatch)
    shipped = tomllib.loads((PRESET_DIR / f"{preset}.toml").read_text())
    task = get_dataset_info(shipped["dataset"].split(":")[0]).task
    extra = ["--pretrained", imagenet_like] if task == "reid" and shipped.get("recipe") == "paper" else []
    frames = []
    for i, (models, attacks) in enumerate(_tiny_sweeps(preset, shipped)):
        out = tmp_path / f"run{i}"
        grid = ["--models", ",".join(models), "--attacks", ",".join(attacks)]
        tiny = [*TINY[task], *SMALLER.get(preset, [])]
        args = ["run", "--preset", preset, *tiny, *extra, *grid, "--out", str(out), "-q"]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
        frames.append(pd.read_csv(out / "results.csv", keep_default_na=False))
    df = pd.concat(frames, ignore_index=True)
    ran = {a.split(":")[0] for a in shipped["attacks"]}
    assert ran | {"none"} == set(df["attack"])  # every attack of the preset, and the clean cells
    assert set(df["recipe_key"]) and df["value"].astype(float).between(0, 1).all()
    assert set(shipped["models"]) <= set(df["model"])  # every model, under its own label


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
