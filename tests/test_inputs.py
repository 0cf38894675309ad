"""Every failure a user can cause is one `lfm-bench: error:` line with status 2; an internal error
is one line naming the traceback file, status 3. Never a traceback on the terminal."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

import robustbench_lfm.runner as runner
from robustbench_lfm.cli import main
from robustbench_lfm.recipe import load_recipe
from robustbench_lfm.spec import SpecError, resolve_model
from tests.conftest import TINY_CLI
from tests.replica import write_market
from tests.test_cli import lfm_bench


def _in_process(*args: str):
    """`lfm-bench ARGS` in this process (the entry point's own path is tested by a subprocess below)."""
    result = CliRunner().invoke(main, list(args))
    return type("Proc", (), {"returncode": result.exit_code, "stdout": "", "stderr": result.output})


def _one_error_line(proc, expected: str, status: int = 2) -> None:
    assert proc.returncode == status, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lfm-bench: error:") and expected in lines[0], proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--dataset", "synthreid:noise_std=nan"], "'noise_std=nan' in 'synthreid:noise_std=nan' is not a finite"),
        (["--dataset", "synthreid:train_ids=1.5"], "train_ids = 1.5 must be int"),
        (["--models", "lfm:p=inf"], "is not a finite number"),
        (["--eps", "1e309"], "not a number in [0, 1]"),
        (["--eps", "nan"], "not a number in [0, 1]"),
        (["--seeds", "99999999999999999999999"], "integers in [0, 2^31)"),
        (["--attacks", "pgd:seed=3"], "not an option; it follows the training seed"),
        (["--attacks", "pgd:steps=1.5"], "must be an integer >= 1"),
        (["--attacks", "pgd:restarts=1e400"], "is not a finite number"),
        (["--attacks", "sma:geometry=nan"], "for an option that takes a word, one of its words"),  # not only numbers
        (["--name", "/abs/path"], "must be one folder name"),
        (["--name", "../../x"], "must be one folder name"),
        (["--batch-size", "x"], "'x' is not a valid integer"),
        (["--batch-size", "0"], "'--batch-size': 0 is not in the range"),
        (["--bogus"], "No such option"),
        (["--models", ""], "--models '' names no model"),  # an unset shell variable: not a plain-only run
        (["--models", " , "], "names no model"),
        (["--attacks", "pgd:steps=5,steps=20"], "option 'steps' is given twice in 'pgd:steps=5,steps=20'"),
        (["--models", "lfm:p=0.3,p=0.5"], "option 'p' is given twice"),
        (["--dataset", "synthreid:seed=1,seed=2"], "option 'seed' is given twice"),
    ],
)
def test_bad_values_are_one_line_and_status_2(args, expected, tmp_path):
    _one_error_line(_in_process("run", "--out", str(tmp_path / "o"), *args), expected)


def test_the_entry_point_keeps_the_contract(tmp_path):
    _one_error_line(lfm_bench("run", "--out", str(tmp_path / "o"), "--eps", "1e309"), "not a number in [0, 1]")


@pytest.mark.parametrize(
    ("flag", "text", "expected"),
    [
        ("--config", "batch_size = 1e400\n", "batch_size = inf is not a finite number"),
        ("--config", "batch_size = 2.5\n", "batch_size = 2.5 must be an integer"),
        ("--config", "eps = nan\n", "eps = nan is not a finite number"),
        ("--recipe", 'task = "reid"\nmilestones = "abc"\n', "milestones = 'abc' must be tuple[int, ...]"),
        ("--recipe", 'task = "reid"\nlr = nan\n', "lr = nan must be float"),
        ("--recipe", 'task = "reid"\nepochs = 1e400\n', "epochs = inf must be int"),
    ],
)
def test_bad_config_and_recipe_values_are_one_line(flag, text, expected, tmp_path):
    (tmp_path / "f.toml").write_text(text)
    _one_error_line(_in_process("run", flag, str(tmp_path / "f.toml"), "--out", str(tmp_path / "o")), expected)


@pytest.mark.parametrize("damage", ["zero-byte", "garbage", "directory", "symlink-loop"])
def test_a_damaged_market_folder_is_one_line(tmp_path, damage):
    write_market(tmp_path / "data")
    train = tmp_path / "data" / "Market-1501-v15.09.15" / "bounding_box_train"
    bad = train / "0002_c1s1_009999_01.jpg"
    if damage == "zero-byte":
        bad.write_bytes(b"")
    elif damage == "garbage":
        bad.write_bytes(b"\xff\xd8 not really a jpeg")
    elif damage == "directory":
        bad.mkdir()
    else:
        os.symlink(bad, bad)  # points at itself
    args = ["run", "--models", "plain", "--no-baseline", "--attacks", "fgsm", "--eps", "8/255", "--epochs", "1",
            "--dataset", "market1501:height=32,width=16", "--data-root", str(tmp_path / "data"),
            "--out", str(tmp_path / "o"), "--cache-dir", str(tmp_path / "c"), "-q"]  # fmt: skip
    _one_error_line(_in_process(*args), "0002_c1s1_009999_01.jpg")


def test_a_refused_cifar_pickle_is_one_line(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        (folder / name).write_bytes(b"cos\nsystem\n(S'echo pwned'\ntR.")  # a pickle that would run a command
    proc = _in_process("run", "--dataset", "cifar10", "--data-root", str(tmp_path), "--out", str(tmp_path / "o"),
                     "--cache-dir", str(tmp_path / "c"), "-q")  # fmt: skip
    _one_error_line(proc, "is not a CIFAR-10 python batch")


def test_an_internal_error_is_one_line_naming_the_traceback_file(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(runner, "run_sweep", broken)
    args = ["run", "--dataset", TINY_CLI, "-q", "--out", str(tmp_path / "o"), "--cache-dir", str(tmp_path / "c")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 3
    line = result.output.strip()
    assert line.startswith("lfm-bench: error: internal error (ZeroDivisionError: a bug); the traceback is in ")
    path = line.split("the traceback is in ")[1].split(";")[0]
    assert "ZeroDivisionError" in Path(path).read_text() and "Traceback" not in result.output


def test_report_refuses_invalid_values_and_an_unwritable_folder(tmp_path):
    args = ["run", "--models", "plain", "--no-baseline", "--attacks", "fgsm", "--dataset", TINY_CLI, "--epochs", "1",
            "--eps", "8/255", "-q", "--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "c")]  # fmt: skip
    assert CliRunner().invoke(main, args).exit_code == 0
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = CliRunner().invoke(main, ["report", str(tmp_path / "run"), "--out", str(blocker / "sub")])
    assert result.exit_code == 2 and "is not writable" in result.output
    table = pd.read_csv(tmp_path / "run" / "results.csv", keep_default_na=False, dtype=str)
    table.assign(value="nan").to_csv(tmp_path / "run" / "results.csv", index=False)
    result = CliRunner().invoke(main, ["report", str(tmp_path / "run")])
    assert result.exit_code == 2 and "no valid value" in result.output and "rerun the sweep" in result.output


def test_report_refuses_a_damaged_or_incomplete_table(tmp_path):
    args = ["run", "--models", "plain", "--no-baseline", "--attacks", "fgsm", "--dataset", TINY_CLI, "--epochs", "1",
            "--eps", "8/255", "-q", "--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "c")]  # fmt: skip
    assert CliRunner().invoke(main, args).exit_code == 0
    path = tmp_path / "run" / "results.csv"
    table = pd.read_csv(path, keep_default_na=False, dtype=str)
    table[table["metric"] != "rank5"].to_csv(path, index=False)
    result = CliRunner().invoke(main, ["report", str(tmp_path / "run")])
    assert result.exit_code == 2 and "2 incomplete cell(s)" in result.output
    path.write_text(table.to_csv(index=False)[:-30])
    result = CliRunner().invoke(main, ["report", str(tmp_path / "run")])
    assert result.exit_code == 2 and "is damaged" in result.output


def test_a_sweep_that_records_a_nan_metric_exits_1(tmp_path, monkeypatch):
    from robustbench_lfm.metrics import RankResult

    real = RankResult.as_metrics
    monkeypatch.setattr(RankResult, "as_metrics", lambda self: {**real(self), "mAP": float("nan")})
    args = ["run", "--models", "plain", "--no-baseline", "--attacks", "fgsm", "--dataset", TINY_CLI, "--epochs", "1",
            "--eps", "8/255", "-q", "--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "c")]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and "recorded no valid value" in result.output


def test_a_model_item_picks_its_own_backbone():
    recipe = load_recipe("cpu", "classification")
    spec = resolve_model("rcm-stride:backbone=vgg16", "resnet18", recipe)
    assert spec.backbone == "vgg16" and dict(spec.resolved)["strides"] == "11222"
    assert spec.label == "rcm-stride:backbone=vgg16"  # two architectures of one method never share a label
    plain = resolve_model("plain", "resnet18", recipe)
    assert resolve_model("plain:backbone=vgg16", "resnet18", recipe).label != plain.label
    with pytest.raises(SpecError, match="vgg16"):
        resolve_model("plain:backbone=vgg61", None, recipe)


def test_repeated_models_attacks_eps_and_seeds_are_one_value_each(tmp_path):
    from robustbench_lfm.options import RunOptions
    from robustbench_lfm.spec import build_spec

    spec = build_spec(RunOptions(
        out=tmp_path / "o", cache_dir=tmp_path / "c", dataset=TINY_CLI, models="lfm,lfm:p=0.15,dropout,lfm",
        attacks="pgd,pgd:restarts=1,fgsm", eps="8/255,0.031372549,4/255,0.03137254901960784", seeds="0,1,00",
    ))  # fmt: skip
    assert [m.label for m in spec.models] == ["plain", "lfm", "dropout"]  # lfm:p=0.15 is lfm at its default p
    assert [a.label for a in spec.attacks] == ["pgd", "fgsm"]  # one restart is the default
    assert spec.eps == (8 / 255, 4 / 255) and spec.seeds == (0, 1)
    cells = spec.cells()
    assert len(cells) == len({c.cell_id(spec.data, spec.recipe, spec.evaluation) for c in cells})
