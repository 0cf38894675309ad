"""Faults during a sweep: a model whose training fails, and two sweeps on one run directory."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from click.testing import CliRunner

import robustbench_lfm.group as group
import robustbench_lfm.runner as runner
from robustbench_lfm.cli import main
from robustbench_lfm.lock import RunLock, RunLockedError
from robustbench_lfm.options import RunOptions
from robustbench_lfm.spec import build_spec
from tests.conftest import TINY_CLI


def _spec(out, cache, **overrides):
    options = {"models": "lfm,dropout", "eps": "8/255", "dataset": TINY_CLI, "epochs": 2,
               "out": out, "cache_dir": cache, "device": "cpu", "quiet": True, **overrides}  # fmt: skip
    return build_spec(RunOptions(**options))


def test_a_nan_loss_fails_its_model_only_and_the_run_reports_it(tmp_path, monkeypatch):
    real = group.build_method

    def poisoned(name, params, recipe, seed, device, teacher=None):
        step = real(name, params, recipe, seed, device, teacher)
        return (lambda *a: float("nan")) if params.get("channels") == 0.5 else step  # lfm's parameters

    monkeypatch.setattr(group, "build_method", poisoned)
    spec = _spec(tmp_path / "run", tmp_path / "cache")
    with pytest.raises(runner.SweepError, match=r"lfm@seed0: training loss became nan"):
        runner.run_sweep(spec, log=lambda _: None)
    df = pd.read_csv(tmp_path / "run" / "results.csv", keep_default_na=False)
    assert set(df["model"]) == {"plain", "dropout"}  # the others finished
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert list(manifest["failed"]) == ["lfm@seed0"] and manifest["finished_at"]


def test_the_cli_exits_1_after_printing_what_finished(tmp_path, monkeypatch):
    monkeypatch.setattr(group, "build_method", lambda *a, **k: lambda *b: float("nan"))
    args = ["run", "--models", "lfm", "--dataset", TINY_CLI, "--epochs", "1", "--eps", "8/255", "-q",
            "--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache")]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and "failed to train" in result.output and "nan" in result.output


def test_a_second_sweep_on_a_locked_run_directory_is_refused(tmp_path):
    out = tmp_path / "run"
    with RunLock(out):
        with pytest.raises(RunLockedError, match="is being written by lfm-bench pid"):
            RunLock(out).__enter__()
        args = ["run", "--models", "lfm", "--dataset", TINY_CLI, "--epochs", "1", "-q", "--out", str(out),
                "--cache-dir", str(tmp_path / "cache")]  # fmt: skip
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2 and "wait for that sweep to finish" in result.output
    with RunLock(out):  # released on exit: the next sweep may go
        pass


class _Planted:
    def __reduce__(self):
        import os

        return (os.system, ("touch planted-by-pickle",))


def test_a_crafted_pickle_planted_as_a_checkpoint_never_runs(tmp_path, monkeypatch):
    """An attacker who can write the cache plants a pickle under a checkpoint's name, with a
    sidecar whose sha256 matches; loading must not execute it, and the model is retrained."""
    import pickle

    from robustbench_lfm.cache import CheckpointCache
    from robustbench_lfm.files import SIDECAR_FORMAT
    from robustbench_lfm.hashing import file_sha256
    from robustbench_lfm.spec import Cell

    monkeypatch.chdir(tmp_path)
    spec = _spec(tmp_path / "run", tmp_path / "cache", models="plain", no_baseline=True, epochs=1)
    key = Cell(spec.models[0], None, 0.0, 0).train_key(spec.data, spec.recipe)
    weights, sidecar = CheckpointCache(spec.cache_dir).paths(key)
    weights.parent.mkdir(parents=True)
    weights.write_bytes(pickle.dumps(_Planted()))
    sidecar.write_text(json.dumps({"format": SIDECAR_FORMAT, "sha256": file_sha256(weights), "key": key}))
    with pytest.warns(UserWarning, match="not a readable safetensors file"):
        runner.run_sweep(spec, log=lambda _: None)
    assert not (tmp_path / "planted-by-pickle").exists()
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["training"]["plain@seed0"]["cached"] is False


def test_sigkill_then_rerun_finishes_the_grid_without_lost_duplicated_or_recomputed_rows(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    out, cache = tmp_path / "run", tmp_path / "cache"
    args = [sys.executable, "-m", "robustbench_lfm", "run", "--models", "lfm,dropout,cutout", "--dataset", TINY_CLI,
            "--epochs", "2", "--eps", "8/255", "-q", "--out", str(out), "--cache-dir", str(cache)]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        rows = (out / "results.csv").read_text().count("\n") if (out / "results.csv").exists() else 0
        if rows > 10:  # a few cells recorded, more to go
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the sweep finished before it could be killed; give it more cells"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = pd.read_csv(out / "results.csv", keep_default_na=False)
    done = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    after = pd.read_csv(out / "results.csv", keep_default_na=False)
    key = ["cell_id", "rerank", "metric"]
    assert not after.duplicated(key).any()
    assert after["cell_id"].nunique() == 4 * 2  # 4 models x (clean, pgd 8/255), all present
    kept = before.merge(after, on=key, suffixes=("", "_after"))
    assert len(kept) == len(before) and (kept["created_at"] == kept["created_at_after"]).all()  # not recomputed
    queries = pd.read_csv(out / "queries.csv", keep_default_na=False)
    assert not queries.duplicated(["cell_id", "rerank", "query"]).any()
    assert set(queries["cell_id"]) == set(after["cell_id"])


def test_a_full_disk_is_one_error_line_exit_2_and_the_cells_before_it_are_kept(tmp_path, monkeypatch):
    """The second model's checkpoint save meets ENOSPC: one line naming the path, exit 2; the first
    model's cells stay recorded and a rerun with space completes the table."""
    import errno

    import robustbench_lfm.cache as cache

    real, saved = cache.save_file, []

    def full_disk(state, path):
        saved.append(path)
        if len(saved) == 2:  # plain's checkpoint fits, lfm's does not
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(state, path)

    monkeypatch.setattr(cache, "save_file", full_disk)
    args = ["run", "--models", "lfm", "--attacks", "fgsm", "--eps", "8/255", "--dataset", TINY_CLI, "--epochs", "1",
            "--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache"), "-q"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith("lfm-bench: error: ") and "No space left on device; free space" in line
    assert str(saved[1]) in line and "the cells already recorded are kept" in line
    kept = pd.read_csv(tmp_path / "run" / "results.csv")
    assert set(kept["model"]) == {"plain"} and kept["cell_id"].nunique() == 2  # clean and fgsm
    assert not list((tmp_path / "cache" / "checkpoints").glob(".*tmp*"))  # the failed save left no temp file
    monkeypatch.setattr(cache, "save_file", real)
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0, again.output
    assert set(pd.read_csv(tmp_path / "run" / "results.csv")["model"]) == {"plain", "lfm"}
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["cells_run"] == 2  # lfm's only


def test_temp_files_of_dead_processes_are_removed_and_a_live_writers_kept(tmp_path):
    import os
    import subprocess
    import sys

    from robustbench_lfm.files import remove_stale_temps

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    stale = [tmp_path / f".cmc.{pid}-0a1b2c3d.tmp.png", tmp_path / f".results.{pid}-deadbeef.tmp.csv"]
    live = tmp_path / f".cmc.{os.getpid()}-0a1b2c3d.tmp.pdf"
    other = tmp_path / ".hidden.tmp"  # not one of ours: left alone
    for path in (*stale, live, other):
        path.write_text("half")
    assert sorted(remove_stale_temps(tmp_path)) == sorted(stale)
    assert live.exists() and other.exists() and not any(p.exists() for p in stale)


BROKEN_ATTACKS = '''
import torch
from robustbench_lfm.attacks.base import Attack, Problem
from robustbench_lfm.attacks.registry import register_attack


class Broken(Attack):
    """An L-inf attack whose search is `wrong`."""

    def __init__(self, side: str | None = None, seed: int = 0) -> None:
        super().__init__("auto", "linf", side, seed)

    def perturb(self, p: Problem) -> torch.Tensor:
        return self.wrong(p)


@register_attack("nan-noise")
class NanNoise(Broken):
    """Returns NaN images."""

    def wrong(self, p):
        return p.x * float("nan")


@register_attack("raising")
class Raising(Broken):
    """Raises in its search."""

    def wrong(self, p):
        raise KeyError("a bug in the plugin")


@register_attack("in-place-overshoot")
class InPlaceOvershoot(Broken):
    """Edits its input in place, far past the budget."""

    def wrong(self, p):
        return p.x.add_(0.4).clamp_(0, 1)
'''


def _with_broken_attacks(tmp_path, models: str, attack_list: str):
    """`lfm-bench run` with the broken attacks' plugin (unloaded after)."""
    from robustbench_lfm import plugins

    plugin = tmp_path / "broken_attacks.py"
    plugin.write_text(BROKEN_ATTACKS)
    args = ["run", "--plugin", str(plugin), "--models", models, "--attacks", attack_list, "--eps", "8/255",
            "--dataset", TINY_CLI, "--epochs", "1", "--out", str(tmp_path / "run"), "--cache-dir",
            str(tmp_path / "cache"), "-q"]  # fmt: skip
    try:
        return CliRunner().invoke(main, args)
    finally:
        for loaded in plugins.loaded():
            plugins.unload(loaded)


def test_a_failing_attack_fails_its_cells_only_and_the_run_exits_1(tmp_path):
    result = _with_broken_attacks(tmp_path, "lfm", "nan-noise,fgsm,raising")
    assert result.exit_code == 1, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("lfm-bench: error: 8 cell(s) failed") and "internal error" not in result.output
    assert "attack nan-noise returned" in last and "non-finite pixel value(s)" in last
    assert "attack raising raised KeyError: 'a bug in the plugin'" in last
    df = pd.read_csv(tmp_path / "run" / "results.csv")
    assert df.groupby(["model", "attack"]).size().to_dict() == {
        (m, a): 5 for m in ("plain", "lfm") for a in ("none", "fgsm")
    }  # every other cell recorded: clean and FGSM of both models
    failed = json.loads((tmp_path / "run" / "manifest.json").read_text())["failed"]
    assert set(failed) == {f"{m}@seed0 {a} {e}" for m in ("plain", "lfm") for a in ("nan-noise", "raising")
                           for e in ("8/255", "64/255 probe")}  # fmt: skip
    tracebacks = list((tmp_path / "run" / "failed").glob("*.txt"))
    assert len(tracebacks) == 8 and any("KeyError" in t.read_text() for t in tracebacks)


def test_an_attack_that_leaves_its_budget_is_projected_and_flagged_by_the_sanity_checks(tmp_path):
    result = _with_broken_attacks(tmp_path, "plain", "in-place-overshoot,fgsm")
    assert result.exit_code == 0, result.output
    assert "WARNING sanity in-budget: plain seed 0 in-place-overshoot" in result.output
    checks = pd.read_csv(tmp_path / "run" / "sanity.csv")
    budget = checks[checks["check"] == "in-budget"].set_index("attack")
    assert not budget.loc["in-place-overshoot", "passed"] and budget.loc["fgsm", "passed"]
    assert budget.loc["in-place-overshoot", "value"] > 0.3  # 0.4 up, less the 8/255 kept (and [0, 1])
    df = pd.read_csv(tmp_path / "run" / "results.csv")
    assert (df.loc[df["attack"] == "fgsm", "projected"] == 0).all()
