"""The package layout: one installed namespace, leaf libraries that stay leaves, no generic top-level names."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "robustbench_lfm"
LEAVES = {"models", "attacks", "lfm_registry"}


def _imports(folder: Path) -> set[str]:
    """Every module the files under `folder` import, as full dotted names (`from a import b` gives `a.b`)."""
    names = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
                names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


def _project_parts(names: set[str]) -> set[str]:
    """The parts of lfm-bench imported: a leaf's name, or `harness` for anything else of the package."""
    parts = set()
    for name in names:
        pieces = name.split(".")
        if pieces[0] != "robustbench_lfm" or len(pieces) == 1:
            continue
        parts.add(pieces[1] if pieces[1] in LEAVES else "harness")
    return parts


@pytest.mark.parametrize(
    ("leaf", "allowed"),
    [
        ("models", {"models", "lfm_registry"}),
        ("attacks", {"attacks", "lfm_registry"}),
        ("lfm_registry", {"lfm_registry"}),  # below all three
    ],
)
def test_leaf_libraries_do_not_import_the_harness_or_each_other(leaf, allowed):
    imported = _imports(PACKAGE / leaf)
    assert _project_parts(imported) <= allowed
    assert not {n.split(".")[0] for n in imported} & LEAVES, "a leaf imports a generic top-level name"
    if leaf == "lfm_registry":
        assert not any(n.split(".")[0] == "torch" for n in imported)  # torch-free: the CSV readers use it


def test_nothing_imports_generic_top_level_names_or_torchvision():
    for folder in (PACKAGE, ROOT / "tests", ROOT / "scripts", ROOT / "examples"):
        tops = {n.split(".")[0] for n in _imports(folder)}
        assert not tops & (LEAVES | {"torchvision"}), folder


def test_the_distribution_installs_one_top_level_package():
    tops = sorted(p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file() and p.name != "tests")
    assert tops == ["robustbench_lfm"]
    assert 'include = ["robustbench_lfm*"]' in (ROOT / "pyproject.toml").read_text()


def test_evaluate_runs_from_a_script_beside_user_packages_named_models_and_attacks(tmp_path):
    for name in ("models", "attacks", "lfm_registry"):  # a user's own packages, first on sys.path
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f"raise ImportError('the user package {name} was imported')\n")
    script = tmp_path / "evaluate_mine.py"
    script.write_text(
        textwrap.dedent(
            """
            import torch
            from torch import nn
            import robustbench_lfm

            net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
            data = "synthreid:train_ids=12,test_ids=6,distractor_ids=2,cameras=3,max_cameras=3"
            df = robustbench_lfm.evaluate(net, dataset=data, attacks=("fgsm",), n_eval=8, cache_dir="cache")
            print(sorted(set(df["attack"])), len(df))
            """
        )
    )
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "['fgsm', 'none']" in done.stdout


def test_torchattacks_is_imported_only_by_the_attacks_that_run_it():
    """Loading every registry (what `lfm-bench ls` and any run do) leaves torchattacks, and the
    scipy.stats it pulls in, unimported; building a wrapped attack's torchattacks object imports it."""
    code = textwrap.dedent(
        """
        import sys
        import torch
        from robustbench_lfm import attacks, datasets, methods, models
        assert "torchattacks" not in sys.modules and "scipy.stats" not in sys.modules, "at import"
        attack = attacks.create_attack("deepfool", steps=1)
        attack.build(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 2)), 0.1, 0, 2)
        assert "torchattacks" in sys.modules
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
