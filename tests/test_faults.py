"""Faults during a sweep: a model whose training fails, and two sweeps on one run directory."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
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
    assert result.exit_code == 1 and "model(s) failed" in result.output and "nan" in result.output


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
    done = CliRunner().invoke(main, args[3:])  # the rerun: in this process (the kill needed a real one)
    assert done.exit_code == 0, done.output
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
    return _run_plugin(tmp_path, BROKEN_ATTACKS, models, attack_list)


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


BROKEN_CORRUPTIONS = '''
import torch
from robustbench_lfm.attacks.base import Attack
from robustbench_lfm.attacks.registry import register_attack


class Threat(Attack):
    """A threat with no budget that replaces Attack.__call__, as the corruptions do."""

    budgeted = False

    def __init__(self, side: str | None = None, seed: int = 0) -> None:
        super().__init__("auto", "linf", side, seed)

    def __call__(self, model, x, context, *, eps=0.0, generator=None):
        return self.wrong(x)


@register_attack("raising-corruption")
class RaisingCorruption(Threat):
    def wrong(self, x):
        raise ZeroDivisionError("a bug in the corruption")


@register_attack("nan-corruption")
class NanCorruption(Threat):
    def wrong(self, x):
        return x * float("inf") * 0


@register_attack("overexposed")
class Overexposed(Threat):
    """Edits its input in place and leaves [0, 1]."""

    def wrong(self, x):
        return x.mul_(3)
'''


def _run_plugin(tmp_path, source: str, models: str, attack_list: str, *extra: str):
    """`lfm-bench run` with the plugin `source` (unloaded after)."""
    from robustbench_lfm import plugins

    plugin = tmp_path / "plugin_under_test.py"
    plugin.write_text(source)
    args = ["run", "--plugin", str(plugin), "--models", models, "--attacks", attack_list, "--eps", "8/255",
            "--dataset", TINY_CLI, "--epochs", "1", "--out", str(tmp_path / "run"), "--cache-dir",
            str(tmp_path / "cache"), "-q", *extra]  # fmt: skip
    try:
        return CliRunner().invoke(main, args)
    finally:
        for loaded in plugins.loaded():
            plugins.unload(loaded)


def test_a_corruption_of_its_own_fails_its_cell_only_and_cannot_leave_0_1_unseen(tmp_path):
    # three epochs: a model past chance, whose Rank-1 a corruption can move
    result = _run_plugin(tmp_path, BROKEN_CORRUPTIONS, "plain", "raising-corruption,nan-corruption,overexposed,fgsm",
                         "--no-baseline", "--epochs", "3")  # fmt: skip
    assert result.exit_code == 1, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("lfm-bench: error: 2 cell(s) failed") and "internal error" not in result.output
    assert "attack raising-corruption raised ZeroDivisionError: a bug in the corruption" in last
    assert "plugin_under_test.py:" in last  # where, outside the harness, it was raised
    assert "attack nan-corruption returned" in last and "non-finite" in last
    df = pd.read_csv(tmp_path / "run" / "results.csv")
    assert set(df["attack"]) == {"none", "overexposed", "fgsm"}
    checks = pd.read_csv(tmp_path / "run" / "sanity.csv")
    budget = checks[checks["check"] == "in-budget"].set_index("attack")
    assert not budget.loc["overexposed", "passed"] and budget.loc["overexposed", "value"] > 1  # 3x, clamped to 1
    assert "WARNING sanity in-budget: plain seed 0 overexposed" in result.output
    clean = df[(df["attack"] == "none") & (df["metric"] == "rank1")]["value"].iloc[0]
    assert df[(df["attack"] == "overexposed") & (df["metric"] == "rank1")]["value"].iloc[0] != clean
    assert len(list((tmp_path / "run" / "failed").glob("*.txt"))) == 2


RAISING_REGULARIZER = """
from robustbench_lfm.models.registry import ModelEntry, register_model, register_regularizer
from robustbench_lfm.models.regularizers import Regularizer


@register_regularizer("raises-in-training")
class RaisesInTraining(Regularizer):
    site = "layer2"

    def __init__(self, p: float = 0.5, at: str | None = None, seed: int = 0) -> None:
        super().__init__(p, seed, at)

    def apply_train(self, x):
        raise RuntimeError("the plugin regularizer broke")


register_model(ModelEntry("raiser", "raises-in-training", description="raises in training"))
"""


def test_a_plugin_model_that_raises_in_training_fails_its_cells_only(tmp_path):
    result = _run_plugin(tmp_path, RAISING_REGULARIZER, "raiser,dropout", "fgsm")
    assert result.exit_code == 1, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("lfm-bench: error: 1 model(s) failed") and "internal error" not in result.output
    assert "raiser@seed0: RuntimeError: the plugin regularizer broke (raised in" in last
    df = pd.read_csv(tmp_path / "run" / "results.csv")
    assert set(df["model"]) == {"plain", "dropout"}
    (trace,) = (tmp_path / "run" / "failed").glob("*.txt")
    assert "apply_train" in trace.read_text()


def test_the_harness_s_own_bug_is_still_an_internal_error(tmp_path, monkeypatch):
    """A bug in lfm-bench's own code, on built-in components only, is exit 3, never a failed cell."""

    monkeypatch.setattr(group, "_ap_formula", lambda name: "nonsense")  # handed to metrics.py, which refuses it
    args = ["run", "--models", "plain", "--no-baseline", "--dataset", TINY_CLI, "--epochs", "1", "-q",
            "--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache")]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 3 and "internal error (ValueError: unknown ap formula" in result.output


class _BreaksOnAttackedImages(torch.nn.Module):
    """An evaluate() model whose forward raises on images off the 8-bit grid (attacked ones)."""

    def __init__(self) -> None:
        super().__init__()
        self.head = torch.nn.Linear(3, 8)

    def forward(self, x):
        if (x * 255 - (x * 255).round()).abs().amax() > 1e-3 and not torch.is_grad_enabled():
            raise ValueError("cannot embed these images")
        return self.head(x.mean((2, 3)))


def test_a_given_model_that_raises_on_attacked_images_fails_those_cells_only(tmp_path):
    from robustbench_lfm.evaluation import evaluate

    with pytest.raises(runner.SweepError, match=r"cannot embed these images \(raised in .*test_faults.py:\d+\)"):
        evaluate(_BreaksOnAttackedImages(), out=tmp_path / "run", dataset=TINY_CLI, attacks="fgsm", eps="8/255",
                 cache_dir=tmp_path / "cache", quiet=True)  # fmt: skip
    df = pd.read_csv(tmp_path / "run" / "results.csv")
    assert set(df["attack"]) == {"none"}  # the clean cell, scored on 8-bit images, is kept
    failed = json.loads((tmp_path / "run" / "manifest.json").read_text())["failed"]
    assert set(failed) == {"my-model@seed0 fgsm 8/255", "my-model@seed0 fgsm 64/255 probe"}


FULL_DISK_IN_A_WORKER = """
import errno
import os
import time
from pathlib import Path

import robustbench_lfm.cache as cache

_real = cache.save_file


def _save(state, path):
    try:  # the first checkpoint saved in any worker fits
        os.close(os.open(os.environ["LFM_TEST_MARKER"], os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:  # the second meets a full disk once the first model's rows are recorded
        results, deadline = Path(os.environ["LFM_TEST_RESULTS"]), time.monotonic() + 120
        while time.monotonic() < deadline and not (results.exists() and results.read_text().count("\\n") > 5):
            time.sleep(0.2)
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
    _real(state, path)


cache.save_file = _save
"""


@pytest.mark.slow  # two sweeps of spawned --jobs 2 workers (-m "not slow" skips it)
def test_a_full_disk_in_a_worker_process_is_one_line_exit_2_and_keeps_what_was_recorded(tmp_path):
    """--jobs 2: the worker's OSError crosses the process boundary with its errno and path."""
    import os
    import subprocess
    import sys

    plugin, out = tmp_path / "full_disk.py", tmp_path / "run"
    plugin.write_text(FULL_DISK_IN_A_WORKER)
    env = {**os.environ, "LFM_TEST_MARKER": str(tmp_path / "first-saved"), "LFM_TEST_RESULTS": str(out / "results.csv")}
    args = [sys.executable, "-m", "robustbench_lfm", "run", "--models", "lfm", "--attacks", "fgsm", "--eps", "8/255",
            "--dataset", TINY_CLI, "--epochs", "1", "--jobs", "2", "-q", "--out", str(out), "--cache-dir",
            str(tmp_path / "cache")]  # fmt: skip
    done = subprocess.run([*args, "--plugin", str(plugin)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("lfm-bench: error: ") and "No space left on device; free space" in line
    assert str(tmp_path / "cache" / "checkpoints") in line and "the cells already recorded are kept" in line
    kept = pd.read_csv(out / "results.csv")
    assert kept["model"].nunique() == 1 and kept["cell_id"].nunique() == 2  # the first model: clean and fgsm
    # The rerun that finishes the grid needs no processes of its own: in this one, one worker.
    jobs = args.index("--jobs")
    again = CliRunner().invoke(main, [*args[3:jobs], "--jobs", "1", *args[jobs + 2 :]])
    assert again.exit_code == 0, again.output
    assert set(pd.read_csv(out / "results.csv")["model"]) == {"plain", "lfm"}
    assert not [p for p in (tmp_path / "cache" / "checkpoints").iterdir() if ".tmp" in p.name]


class _NanOnceAttacked(torch.nn.Module):
    """An evaluate() classifier whose logits turn NaN once an attack has run through it."""

    def __init__(self) -> None:
        super().__init__()
        self.head = torch.nn.Linear(3, 10)
        self.attacked = False

    def forward(self, x):
        self.attacked |= torch.is_grad_enabled() and x.requires_grad
        logits = self.head(x.mean((2, 3)))
        return logits * float("nan") if self.attacked and not torch.is_grad_enabled() else logits


def test_a_classifier_with_nan_logits_on_attacked_images_fails_those_cells_only(tmp_path):
    from robustbench_lfm.evaluation import evaluate

    with pytest.raises(runner.SweepError, match=r"logits of the attacked test images are not finite"):
        evaluate(_NanOnceAttacked(), out=tmp_path / "run", dataset="digits:test_fraction=0.1", attacks="pgd",
                 eps="8/255", cache_dir=tmp_path / "cache", quiet=True)  # fmt: skip
    df = pd.read_csv(tmp_path / "run" / "results.csv")
    assert set(df["attack"]) == {"none"} and df["value"].notna().all()
