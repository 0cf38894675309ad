"""Options declared once (robustbench_lfm/options.py): the CLI, config keys, `evaluate()` and the
docs come from the declarations; the refactor onto them changed no id, key or fingerprint; the
package has no import cycle."""

from __future__ import annotations

import ast
import inspect
import json
import re
from pathlib import Path

import pandas as pd
import pytest

from robustbench_lfm import code_identity, columns, evaluate, options
from robustbench_lfm import spec as spec_module
from robustbench_lfm.cli_options import run_command
from robustbench_lfm.config import read_config
from robustbench_lfm.options import RunOptions
from robustbench_lfm.rundir import fingerprint
from robustbench_lfm.spec import Cell, build_spec

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ROOT / "results" / "baseline"


def test_the_docs_option_table_is_the_declarations():
    assert options.markdown_table() in (ROOT / "docs" / "options.md").read_text()


@pytest.mark.parametrize("name", list(options.declared()))
def test_every_option_is_one_cli_option_with_its_default_and_feeds_an_identity_column(name):
    f, declared = options.declared()[name]
    params = {p.name: p for p in run_command().params}
    assert name in params and params[name].default == f.default  # the CLI's option is the declaration
    assert options.flag(name) in params[name].opts
    if declared.column:  # an option that changes numbers reaches a column of their identity (or the code)
        column = next(c for c in columns.RESULTS if c.name == declared.column)
        assert column.role != "record" or column.name == "code", name
    if declared.key_default is not options.ALWAYS:
        assert options.at_key_default(name, declared.key_default) and not options.at_key_default(name, "other")


def test_config_keys_and_evaluate_keywords_are_the_option_names(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text('n_eval = 5\ntrain-fraction = 0.5\nplugins = ["a.py"]\n')
    assert read_config(config, run_command()) == {"n_eval": 5, "train_fraction": 0.5, "plugins": ("a.py",)}
    signature = inspect.signature(evaluate).parameters
    for name in options.evaluate_keywords():
        assert signature[name].default == options.declared()[name][0].default


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [("n_eval", -1, "must lie in [0,"), ("n_eval", True, "whole number"), ("flip", "yes", "True or False"),
     ("distance", "manhattan", "one of cosine, euclidean"), ("cache_dir", 3, "must be a path")],
)  # fmt: skip
def test_convert_refuses_what_the_declaration_does_not_take(name, value, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        options.convert(name, value)


def test_the_committed_ci_baseline_keeps_its_cell_ids_checkpoint_keys_and_fingerprint(tmp_path, monkeypatch):
    """Options by themselves change no identity: the spec of results/baseline/ci.toml gives the
    committed run's ids. The code's identity is taken as the run recorded it (each row's `code`,
    each model's training `code` in manifest.json), so an edit to the code since that run does not
    fail this test; everything else in an id (model, data, recipe, attack, eps, evaluation) must
    come out the same."""
    values = read_config(BASELINE / "ci.toml", run_command())
    spec = build_spec(RunOptions(**values, out=tmp_path / "run", cache_dir=tmp_path / "cache"))
    run = BASELINE / "ci-synthreid"
    trained = json.loads((run / "manifest.json").read_text())["training"]
    monkeypatch.setattr(spec_module, "train_code", lambda model, data: trained[f"{model.label}@seed0"]["code"])
    for cells, table in ((spec.cells(), "results.csv"), (spec.probe_cells(), "probes.csv")):
        rows = pd.read_csv(run / table, keep_default_na=False)
        recorded = {(r.model, r.attack_label, round(r.eps, 9)): r.code for r in rows.itertuples()}
        label = {c: "none" if c.attack is None else c.attack.label for c in cells}
        monkeypatch.setattr(
            Cell, "code", lambda c, data, seen=recorded, of=label: seen[(c.model.label, of[c], round(c.eps, 9))]
        )
        ours = {c.cell_id(spec.data, spec.recipe, spec.evaluation) for c in cells}
        assert ours == set(rows["cell_id"]), table
    for model in spec.models:
        assert trained[f"{model.label}@seed0"]["key"] == Cell(model, None, 0.0, 0).train_key(spec.data, spec.recipe)
    assert fingerprint(spec) == json.loads((run / "fingerprint.json").read_text())


def _imports(path: Path, module: str) -> set[str]:
    """The project modules `path` imports anywhere in it (a function's body too), but not under
    `if TYPE_CHECKING:` (annotations only)."""
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.dump(
        node.test) for n in ast.walk(node)}  # fmt: skip
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only or not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        found |= code_identity.imported_by(node, path, module, code_identity.BUILT_IN)
    return found - {module}


def test_the_package_has_no_import_cycle():
    package = ROOT / "robustbench_lfm"
    graph = {}
    for path in package.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        graph[module] = _imports(path, module)
    visiting: list[str] = []
    done: set[str] = set()

    def visit(module: str) -> None:
        if module in visiting:
            raise AssertionError("import cycle: " + " -> ".join([*visiting[visiting.index(module) :], module]))
        if module in done:
            return
        visiting.append(module)
        for other in sorted(graph.get(module, ())):
            visit(other)
        visiting.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)


def test_evaluate_does_not_import_the_cli():
    graph = code_identity.closure(["robustbench_lfm.evaluation"], code_identity.BUILT_IN)
    assert not {"robustbench_lfm.cli", "robustbench_lfm.cli_options"} & set(graph)


def test_no_docstring_help_text_or_doc_cites_a_file_the_repository_lacks():
    import re

    # a `--help` text's path too (check's named results/baseline/ci-synthreid.csv, a file that never was)
    cited = re.compile(r"(?<![\w./-])((?:docs|results|examples|scripts|robustbench_lfm|tests)/[\w./-]*\w"
                       r"\.(?:md|py|toml|csv|json)|[\w/]*DESIGN\.md|reference/\w+\.md)")  # fmt: skip
    missing = []
    for path in [*(ROOT / "robustbench_lfm").rglob("*.py"), *(ROOT / "robustbench_lfm").rglob("*.toml"),
                 *(ROOT / "tests").glob("*.py"), *(ROOT / "scripts").glob("*.py"),
                 ROOT / "README.md", ROOT / "results" / "README.md", *(ROOT / "docs").glob("*.md")]:  # fmt: skip
        if path.name == Path(__file__).name:
            continue
        for name in cited.findall(path.read_text()):
            if not (ROOT / name).exists():
                missing.append(f"{path.relative_to(ROOT)}: {name}")
    assert not missing


def test_run_help_lists_every_option_under_its_declared_section():
    from click.testing import CliRunner

    from robustbench_lfm.cli import main
    from robustbench_lfm.cli_options import SECTION_TITLES

    text = CliRunner().invoke(main, ["run", "--help"]).output
    headings = [line[:-1] for line in text.splitlines() if line[:-1] in SECTION_TITLES.values()]
    assert headings == list(SECTION_TITLES.values())  # in this order, each once
    listed, heading = {}, None
    for line in text.splitlines():
        if line[:-1] in SECTION_TITLES.values():
            heading = line[:-1]
        elif heading and (listing := re.match(r"  (-[\w-]+(?:, -[\w-]+)*)", line)):  # `  -q, --quiet   help`
            listed.update(dict.fromkeys(listing.group(1).split(", "), heading))
    for name, (_, declared) in options.declared().items():
        assert listed[options.flag(name)] == SECTION_TITLES[declared.section], name
