"""Shared fixtures: a tiny generated re-ID dataset and an isolated cache directory."""

from __future__ import annotations

import os

import pytest

import robustbench_lfm.methods  # noqa: F401  (registers the training methods' parameters with the model registry)
from robustbench_lfm.datasets.synthreid import SynthReIDConfig, generate

TINY = {"train_ids": 12, "test_ids": 6, "distractor_ids": 2, "cameras": 3, "max_cameras": 3}
TINY_CLI = "synthreid:" + ",".join(f"{k}={v}" for k, v in TINY.items())


def pytest_configure(config):
    """Under pytest-xdist, each worker's torch takes its share of the cores (no oversubscription)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


@pytest.fixture(scope="session")
def tiny_reid():
    """A synthreid dataset small enough to train on in a second."""
    return generate(SynthReIDConfig(**TINY))


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Never touch the user's cache from a test."""
    monkeypatch.setenv("LFM_BENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"
