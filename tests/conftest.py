"""Shared fixtures: a tiny generated re-ID dataset and an isolated cache directory."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

TINY = {"train_ids": 12, "test_ids": 6, "distractor_ids": 2, "cameras": 3, "max_cameras": 3, "height": 32, "width": 16}


def tiny_cli(**changes: int) -> str:
    """The tiny synthreid as a --dataset value, with `changes` to its options (say height=64, width=32)."""
    return "synthreid:" + ",".join(f"{k}={v}" for k, v in {**TINY, **changes}.items())


TINY_CLI = tiny_cli()


# The modules that train models and run sweeps end to end: `-m "not slow and not sweep"` leaves them
# out, the fast tier a developer runs on every change (under 90 s on 2 cores); the default command
# runs them too. Measured per module with `--durations=0` (README, "Tests").
SWEEP_MODULES = {
    "test_attack_sweeps", "test_board", "test_classification", "test_cli", "test_code_identity", "test_ensemble",
    "test_estimate", "test_executors", "test_faults", "test_given_models", "test_identity", "test_outside_models",
    "test_plugins",
    "test_presets", "test_report", "test_resume", "test_scale", "test_threats",
}  # fmt: skip


# The modules whose module-scoped fixtures train or sweep for seconds: each runs whole on one
# pytest-xdist worker (`--dist loadgroup`), so its fixtures are built once, not once per worker that
# drew some of its tests (test_report's 15.5 s runs were built twice under `--dist load`).
ONE_WORKER_MODULES = {
    "test_attack_sweeps", "test_board", "test_classification", "test_cli", "test_domains", "test_ensemble",
    "test_executors", "test_gate", "test_identity", "test_report", "test_resume", "test_threats", "test_transfer",
}  # fmt: skip


# The longest tests that run alone, first: pytest-xdist's loadgroup hands out ONE_WORKER_MODULES'
# groups first (the largest first), then every other test in collection order as a worker falls
# idle, so a long test collected late leaves the other worker idle at the end; the smoke preset as
# shipped (33-61 s in one thread, by the machine) collected after the clusters' tests left one worker
# idle for most of a minute (2-core development machine). The presets' parts keep their own order
# (ORDER in tests/test_presets.py).
LONGEST_FIRST = ("test_the_smoke_preset_as_shipped_prints_a_labelled_table", "test_every_preset_runs_in_a_tiny_form")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(config, items):
    """Mark every test of SWEEP_MODULES `sweep`; the tests of ONE_WORKER_MODULES one xdist group per
    module; LONGEST_FIRST's tests first."""
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1] if item.module is not None else ""
        if module in SWEEP_MODULES:
            item.add_marker(pytest.mark.sweep)
        if module in ONE_WORKER_MODULES:
            item.add_marker(pytest.mark.xdist_group(module))
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.originalname, len(rank)))  # stable: the rest keep their order


def pytest_configure(config):
    """The cache of every test process a folder of its own, removed at the end (`isolated_cache` gives
    each test its own; this one holds what module- and session-scoped fixtures build by default).

    Under pytest-xdist, each worker's torch takes its share of the cores (no oversubscription),
    and so does every process a test starts (`lfm-bench` in a subprocess, --jobs and cluster
    workers): they read the share from OMP_NUM_THREADS. Left to torch's default of one thread per
    core, such a process spun against the other worker's busy core: test_cli's end-to-end run took
    19.3-20.1 s beside a busy core, 11.1-11.3 s with one thread (2-core development machine)."""
    config._lfm_bench_cache = tempfile.mkdtemp(prefix="lfm-bench-test-cache-")
    os.environ["LFM_BENCH_CACHE"] = config._lfm_bench_cache
    if _xdist_controller(config):
        return  # it runs no test: torch's import (1.4 s) would only delay the workers' start
    import robustbench_lfm.methods  # noqa: F401  (registers the training methods' parameters with the model registry)

    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        import torch

        share = max(1, (os.cpu_count() or 1) // workers)
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(share)
        torch.set_num_threads(share)


def _xdist_controller(config: pytest.Config) -> bool:
    """Whether this process hands the tests to pytest-xdist's workers and collects none itself (the
    test of pytest-xdist's own pytest_configure, which runs after this file's)."""
    distributes = config.getoption("dist", "no") != "no" and bool(config.getoption("tx", None))
    return distributes and not hasattr(config, "workerinput") and not config.getoption("collectonly")


def pytest_unconfigure(config):
    """Remove the process's cache folder (pytest_configure)."""
    folder = getattr(config, "_lfm_bench_cache", None)
    if folder:
        shutil.rmtree(folder, ignore_errors=True)


# AutoAttack's last stage, Square (Andriushchenko et al., ECCV 2020), spends its 5,000 queries on every
# image it cannot fool: on a tiny model that saturates, one survivor costs a minute (105 of plain:vgg16's
# 122 s in rcm-cifar's tiny form, one profile on the 2-core machine). Tests that check AutoAttack's
# plumbing, not its strength, cap it: Square still runs on the same survivors, with the same code.
SQUARE_QUERIES = 50


def cap_square_queries(monkeypatch: pytest.MonkeyPatch, queries: int = SQUARE_QUERIES) -> None:
    """Cap torchattacks' Square at `queries` queries per image for the rest of the test."""
    import torchattacks

    forward = torchattacks.Square.forward

    def capped(attack, images, labels):
        attack.n_queries = min(attack.n_queries, queries)
        return forward(attack, images, labels)

    monkeypatch.setattr(torchattacks.Square, "forward", capped)


# The presets' iterative attacks run their published schedules: lfm-paper's auto-reid members and SMA 15
# to 20 steps each, 144 forward-backward passes per ResNet-50, 24 of a part's 29 s (2-core development
# machine, one thread). Each step runs the same code as the one before it, so a test that checks a
# preset's plumbing, not its strength, caps the steps that run: the schedule itself (the CSV's steps,
# the ids and the shared runs' keys) is left as it is.
ITERATIVE_STEPS = 3


def cap_iterative_steps(monkeypatch: pytest.MonkeyPatch, steps: int = ITERATIVE_STEPS) -> None:
    """Run at most `steps` steps of each iterative attack's search for the rest of the test: ours,
    and AutoAttack's white-box members in torchattacks (100 iterations each, per target class)."""
    import torchattacks

    from robustbench_lfm.attacks.iterative import IterativeAttack

    for member in (torchattacks.APGD, torchattacks.APGDT, torchattacks.FAB):
        monkeypatch.setattr(member, "forward", _fewer_steps(member.forward, steps))

    ascend = IterativeAttack.ascend

    def capped(attack, p, state):
        schedule = attack.schedule

        def fewer(eps, started=False):
            n, alpha = schedule(eps, started)
            return min(n, steps), alpha

        attack.schedule = fewer
        try:
            return ascend(attack, p, state)
        finally:
            del attack.schedule

    monkeypatch.setattr(IterativeAttack, "ascend", capped)


def _fewer_steps(forward, steps: int):
    """torchattacks' `forward` running at most `steps` iterations (they are read when it runs)."""

    def capped(attack, images, labels):
        attack.steps = min(attack.steps, steps)
        return forward(attack, images, labels)

    return capped


@pytest.fixture(scope="session")
def tiny_reid():
    """A synthreid dataset small enough to train on in a second."""
    from robustbench_lfm.datasets.synthreid import SynthReIDConfig, generate

    return generate(SynthReIDConfig(**TINY))


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Never touch the user's cache from a test."""
    monkeypatch.setenv("LFM_BENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"
