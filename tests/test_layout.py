"""The package layout of DESIGN.md: leaf libraries stay leaves, names resolve inside the project."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import attacks
import lfm_registry
import models

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("module", [models, attacks, lfm_registry])
def test_generic_top_level_names_resolve_inside_this_project(module):
    assert Path(module.__file__).resolve().is_relative_to(ROOT)


def _imports(package: str) -> set[str]:
    names = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("models", {"robustbench_lfm", "attacks"}),
        ("attacks", {"robustbench_lfm", "models"}),
        ("lfm_registry", {"robustbench_lfm", "attacks", "models", "torch"}),  # below all three, torch-free
    ],
)
def test_leaf_libraries_do_not_import_the_harness_or_each_other(package, forbidden):
    assert not (_imports(package) & forbidden)


@pytest.mark.parametrize("package", ["models", "attacks", "robustbench_lfm", "lfm_registry"])
def test_no_module_imports_torchvision(package):
    assert "torchvision" not in _imports(package)
