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
