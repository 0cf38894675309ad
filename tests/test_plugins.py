"""Plugins: outside code registering a regularizer, a model and an attack (examples/plugin_example.py)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from robustbench_lfm import plugins
from robustbench_lfm.cli import main
from robustbench_lfm.identity import MEASUREMENT
from robustbench_lfm.plugins import PluginError, load_plugin
from robustbench_lfm.testing import check_plugin
from tests.test_threats import DATA

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "plugin_example.py"


@pytest.fixture(autouse=True)
def unload_after():
    """Every test starts and ends with the built-in registries only."""
    yield
    for loaded_plugin in plugins.loaded():
        plugins.unload(loaded_plugin)


@pytest.fixture
def plugin(tmp_path):
    """A copy of the example plugin (tests edit it)."""
    path = tmp_path / "my_plugin.py"
    shutil.copy(EXAMPLE, path)
    return path


def _run(plugin_path, out, cache, *extra):
    args = ["run", "--plugin", str(plugin_path), "--models", "gaussian-dropout", "--attacks", "sign-noise,fgsm",
            "--eps", "8/255", "--dataset", DATA, "--epochs", "1", "--out", str(out), "--cache-dir", str(cache), "-q",
            *extra]  # fmt: skip
    return CliRunner().invoke(main, args)


def test_the_plugins_entries_pass_the_contract_tests(plugin):
    assert check_plugin(str(plugin)) == ["regularizer gaussian-features", "model gaussian-dropout", "attack sign-noise"]


def test_a_plugin_runs_end_to_end_and_the_manifest_records_its_file(plugin, tmp_path):
    result = _run(plugin, tmp_path / "run", tmp_path / "cache", "--jobs", "2")  # spawned workers load it too
    assert result.exit_code == 0, result.output
    df = pd.read_csv(tmp_path / "run" / "results.csv")
    assert set(df["model"]) == {"plain", "gaussian-dropout"} and set(df["attack"]) == {"none", "sign-noise", "fgsm"}
    assert set(df.loc[df["model"] == "gaussian-dropout", "regularizer"]) == {"gaussian-features"}
    rank1 = df[(df["metric"] == "mAP") & (df["model"] == "gaussian-dropout")].set_index("attack")["value"]
    assert rank1["fgsm"] <= rank1["sign-noise"] + 0.02  # a gradient step beats random corners of the ball
    (recorded,) = json.loads((tmp_path / "run" / "manifest.json").read_text())["spec"]["plugins"]
    assert recorded["file"] == str(plugin) and len(recorded["sha256"]) == 64 and recorded["kind"] == "file"
    listing = CliRunner().invoke(main, ["ls", "--plugin", str(plugin)])
    line = next(x for x in listing.output.splitlines() if x.strip().startswith("sign-noise"))
    assert f"[from plugin {plugin} (sha256 {recorded['sha256'][:8]})]" in line


def test_editing_the_plugin_recomputes_the_cells_its_code_made_and_only_those(plugin, tmp_path):
    out, cache = tmp_path / "run", tmp_path / "cache"
    assert _run(plugin, out, cache).exit_code == 0
    first = pd.read_csv(out / "results.csv")
    assert _run(plugin, out, cache).exit_code == 0  # unchanged: everything resumes
    assert json.loads((out / "manifest.json").read_text())["cells_run"] == 0
    plugin.write_text(plugin.read_text().replace("p: float = 0.3", "p: float = 0.5"))
    assert _run(plugin, out, cache).exit_code == 0
    after = pd.read_csv(out / "results.csv")

    def ids(df, model, attacks=("none", "fgsm", "sign-noise")):
        return set(df.loc[(df["model"] == model) & df["attack"].isin(attacks), "cell_id"])

    built_in = ("none", "fgsm")  # a built-in model under built-in attacks: nothing of the plugin in it
    assert ids(after, "plain", built_in) == ids(first, "plain", built_in)
    # the plugin file is the unit of code identity: its attack's cells on plain are new too
    noise = ("sign-noise",)
    assert len(ids(after, "plain", noise) - ids(first, "plain", noise)) == len(ids(first, "plain", noise)) == 1
    assert ids(first, "gaussian-dropout") <= ids(after, "gaussian-dropout")  # old cells stay recorded ...
    assert len(ids(after, "gaussian-dropout")) == 2 * len(ids(first, "gaussian-dropout"))  # ... beside new ones
    assert json.loads((out / "manifest.json").read_text())["cells_run"] > 0


def test_plugins_in_a_config_file(plugin, tmp_path):
    config = tmp_path / "run.toml"
    config.write_text(f'plugins = ["{plugin}"]\nmodels = "gaussian-dropout"\nattacks = "sign-noise"\n')
    args = ["run", "--config", str(config), "--eps", "8/255", "--dataset", DATA, "--epochs", "1", "--no-baseline",
            "--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache"), "-q"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert set(pd.read_csv(tmp_path / "run" / "results.csv")["model"]) == {"gaussian-dropout"}


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("raise RuntimeError('no GPU here')", "failed to load (RuntimeError: no GPU here); fix it or leave it out"),
        (
            "from robustbench_lfm.models.registry import register_regularizer\n"
            "from robustbench_lfm.models.regularizers import Regularizer\n"
            "@register_regularizer('lfm')\nclass Mine(Regularizer):\n    pass\n",
            "regularizer 'lfm' is registered twice: by robustbench_lfm.models.lfm and by lfm_bench_plugins.bad_",
        ),
        (None, "is not a file"),
    ],
)
def test_a_broken_plugin_is_one_line_and_status_2(tmp_path, code, message):
    path = tmp_path / "bad.py"
    if code is not None:
        path.write_text(code)
    result = _run(path, tmp_path / "run", tmp_path / "cache")
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lfm-bench: error: plugin ") and message in lines[0], lines
    assert not (tmp_path / "run" / "results.csv").exists()
    with pytest.raises(PluginError):
        load_plugin(str(path))


def test_an_unknown_module_plugin_names_the_fix():
    with pytest.raises(PluginError, match="is not a file or an importable module"):
        load_plugin("no_such_plugin_module")


def _fresh_process(*helpers: str) -> None:
    """Forget the loaded plugins and their helper modules, as a new process would."""
    for loaded_plugin in plugins.loaded():
        plugins.unload(loaded_plugin)
    for name in helpers:
        sys.modules.pop(name, None)


def test_an_edit_to_the_plugins_code_replaces_its_rows_and_check_reads_them(plugin, tmp_path):
    out, cache = tmp_path / "run", tmp_path / "cache"
    assert _run(plugin, out, cache).exit_code == 0
    first = pd.read_csv(out / "results.csv", keep_default_na=False)
    flipped = plugin.read_text().replace("torch.sign(u - 0.5)", "torch.sign(0.5 - u)")
    plugin.write_text(flipped)
    _fresh_process()
    assert _run(plugin, out, cache).exit_code == 0
    after = pd.read_csv(out / "results.csv", keep_default_na=False)
    noise = after["attack"] == "sign-noise"
    assert len(after) == len(first) and not after.duplicated(list(MEASUREMENT)).any()  # no second "seed"
    assert not set(after.loc[noise, "cell_id"]) & set(first["cell_id"])  # recomputed under the new code
    check = CliRunner().invoke(main, ["check", str(out), "--baseline", str(out / "results.csv")])
    assert check.exit_code == 0, check.output
    report = CliRunner().invoke(main, ["report", str(out)])
    assert report.exit_code == 0 and "over 2 training seeds" not in (out / "report" / "report.md").read_text()


def test_an_edit_to_a_module_the_file_plugin_imports_recomputes_its_cells(plugin, tmp_path, monkeypatch):
    (tmp_path / "corner_noise.py").write_text("import torch\n\n\ndef corners(u):\n    return torch.sign(u - 0.5)\n")
    text = plugin.read_text().replace("p.x + p.eps * torch.sign(u - 0.5)", "p.x + p.eps * corner_noise.corners(u)")
    plugin.write_text(text.replace("import torch\n", "import corner_noise\nimport torch\n", 1))
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])  # the folder importable, as from a script
    out, cache = tmp_path / "run", tmp_path / "cache"
    assert _run(plugin, out, cache).exit_code == 0
    first = pd.read_csv(out / "results.csv", keep_default_na=False)
    (tmp_path / "corner_noise.py").write_text("import torch\n\n\ndef corners(u):\n    return torch.sign(0.5 - u)\n")
    _fresh_process("corner_noise")
    assert _run(plugin, out, cache).exit_code == 0
    after = pd.read_csv(out / "results.csv", keep_default_na=False)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["cells_run"] > 0 and not after.duplicated(list(MEASUREMENT)).any()
    noise = after["attack"] == "sign-noise"
    assert not set(after.loc[noise, "cell_id"]) & set(first["cell_id"])
    built_in = after["attack"].isin(["none", "fgsm"]) & (after["model"] == "plain")  # nothing of the plugin in it
    assert set(after.loc[built_in, "cell_id"]) <= set(first["cell_id"])
