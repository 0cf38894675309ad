"""Executors: the same grid gives the same CSV on every back-end (local processes, a real dask
cluster of separate processes on loopback, submitit's local cluster)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pandas as pd
import pytest
from click.testing import CliRunner

from robustbench_lfm.cli import main
from robustbench_lfm.executors import ExecSpec
from robustbench_lfm.options import RunOptions
from robustbench_lfm.runner import run_sweep
from robustbench_lfm.spec import build_spec
from tests.conftest import TINY_CLI


def _sweep(out, cache, ex: ExecSpec):
    options = {"models": "lfm,dropout", "eps": "8/255", "dataset": TINY_CLI, "epochs": 2,
               "out": out, "cache_dir": cache, "device": "cpu", "quiet": True}  # fmt: skip
    run_sweep(build_spec(RunOptions(**options)), log=lambda _: None, ex=ex)
    df = pd.read_csv(out / "results.csv", keep_default_na=False)
    return df.set_index(["cell_id", "metric", "rerank"])["value"].sort_index()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The grid run in this process with one thread: what every executor must reproduce."""
    root = tmp_path_factory.mktemp("reference")
    return _sweep(root / "run", root / "cache", ExecSpec("local", threads=1))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_local_worker_processes_give_the_same_csv(reference, tmp_path):
    got = _sweep(tmp_path / "run", tmp_path / "cache", ExecSpec("local", jobs=2, threads=1))
    pd.testing.assert_series_equal(got, reference)


def test_a_dask_scheduler_and_two_worker_processes_give_the_same_csv(reference, tmp_path):
    pytest.importorskip("distributed")
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs = [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                               "--port", str(port), "--dashboard-address", ":0"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]  # fmt: skip
    try:
        time.sleep(2)
        for _ in range(2):
            procs.append(subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address,
                                           "--nthreads", "1", "--nworkers", "1", "--dashboard-address", ":0"],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))  # fmt: skip
        from distributed import Client

        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
            assert len(client.scheduler_info()["workers"]) == 2
        got = _sweep(tmp_path / "run", tmp_path / "cache", ExecSpec("dask", threads=1, scheduler=address))
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
    pd.testing.assert_series_equal(got, reference)


def test_submitit_local_cluster_gives_the_same_csv(reference, tmp_path):
    pytest.importorskip("submitit")
    ex = ExecSpec("submitit", jobs=2, threads=1, folder=tmp_path / "submitit", cluster="local")
    got = _sweep(tmp_path / "run", tmp_path / "cache", ex)
    pd.testing.assert_series_equal(got, reference)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scheduler", "tcp://127.0.0.1:1"], "--scheduler is for --executor dask"),
        (["--jobs", "0"], "'--jobs': 0 is not in the range 1<=x<=100000"),
        (["--jobs", "99999999999999999999"], "is not in the range"),  # was an OverflowError (exit 3)
        (["--threads", "0"], "'--threads': 0 is not in the range"),
    ],
)
def test_inconsistent_executor_options_are_refused(args, message, tmp_path):
    result = CliRunner().invoke(main, ["run", "-q", "--out", str(tmp_path / "r"), *args])
    assert result.exit_code == 2 and message in result.output
