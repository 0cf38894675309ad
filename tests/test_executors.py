"""Executors: the same grid gives the same CSV on every back-end (local processes, a real dask
cluster of separate processes on loopback, submitit's local cluster)."""

from __future__ import annotations

import pickle
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from robustbench_lfm import progress, runner
from robustbench_lfm.cli import main
from robustbench_lfm.executors import ExecSpec, run_tasks
from robustbench_lfm.options import RunOptions
from robustbench_lfm.runner import run_sweep
from robustbench_lfm.spec import build_spec
from tests.conftest import TINY_CLI


def _sweep(out, cache, ex: ExecSpec, events: list | None = None):
    """The grid's values; `events`: what the sweep's progress bar heard (robustbench_lfm/progress.py)."""
    options = {"models": "lfm,dropout", "eps": "8/255", "dataset": TINY_CLI, "epochs": 2,
               "out": out, "cache_dir": cache, "device": "cpu", "quiet": True}  # fmt: skip
    with progress.listening(events.append if events is not None else lambda _: None):
        run_sweep(build_spec(RunOptions(**options)), log=lambda _: None, ex=ex)
    df = pd.read_csv(out / "results.csv", keep_default_na=False)
    return df.set_index(["cell_id", "metric", "rerank"])["value"].sort_index()


class RecordedBar:
    """A stand-in for the sweep's tqdm bar that keeps every update."""

    def __init__(self, total: float, **_) -> None:
        self.total, self.n, self.updates = total, 0.0, []
        BARS.append(self)

    def update(self, step: float) -> None:
        self.n += step
        self.updates.append(step)

    def __enter__(self) -> RecordedBar:
        return self

    def __exit__(self, *_) -> None:
        pass


BARS: list[RecordedBar] = []


@pytest.fixture(scope="module")
def in_process(tmp_path_factory):
    """The grid run in this process with one thread (what every executor must reproduce), the progress
    events it reported, and its bar."""
    root, events = tmp_path_factory.mktemp("reference"), []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runner, "tqdm", RecordedBar)
        values = _sweep(root / "run", root / "cache", ExecSpec("local", threads=1), events)
    return values, events, BARS.pop(), root / "run"


@pytest.fixture(scope="module")
def reference(in_process):
    return in_process[0]


def _event_keys(events: list) -> list[tuple]:
    """The events, comparable across processes: kind, group, and the epoch or the cell. A batch under
    way's `Crafting` reports come as time allows (every CRAFTING_EVERY_S at most), so they are left out."""
    return sorted(
        (type(e).__name__, e.label, str(e.done if isinstance(e, progress.Epoch) else e.cell))
        for e in events
        if not isinstance(e, progress.Crafting)
    )


def test_the_sweep_bar_moves_with_every_epoch_and_cell_and_ends_full(in_process):
    """Each group reports its two epochs and each of its cells (the sweep's and the sanity probes'),
    under the label the bar expects it by, and the bar moves with them: many steps, not one a group."""
    _, events, bar, run = in_process
    cells = pd.concat([pd.read_csv(run / name, keep_default_na=False) for name in ("results.csv", "probes.csv")])
    ran = cells.drop_duplicates("cell_id").assign(label=lambda d: d["model"] + "@seed" + d["train_seed"].astype(str))
    epochs = {(e.label, e.done, e.total) for e in events if isinstance(e, progress.Epoch)}
    assert epochs == {(label, done, 2) for label in set(ran["label"]) for done in (1, 2)}
    done = pd.Series([e.label for e in events if isinstance(e, progress.CellDone)]).value_counts().sort_index()
    assert done.to_dict() == ran["label"].value_counts().sort_index().to_dict()
    assert len(bar.updates) > 3 * len(set(ran["label"])) and all(step > 0 for step in bar.updates)
    assert bar.n == pytest.approx(bar.total) and bar.total > 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_in_process_sweep_uses_its_threads_and_gives_the_caller_its_own_back():
    """--threads belongs to the sweep: run in this process it sets torch's threads for its tasks and
    restores the caller's afterwards, also when the caller stops early. It once left one thread
    behind, and the next test in the process (rcm-cifar's tiny preset) ran 187 s instead of 117."""
    caller = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        assert list(run_tasks(ExecSpec("local", threads=1), torch.get_num_threads, [(), ()])) == [1, 1]
        assert torch.get_num_threads() == 3
        stopped = run_tasks(ExecSpec("local", threads=2), torch.get_num_threads, [(), ()])
        assert next(stopped) == 2
        stopped.close()
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(caller)


def test_local_worker_processes_give_the_same_csv_and_their_progress_events(in_process, tmp_path):
    events: list = []
    got = _sweep(tmp_path / "run", tmp_path / "cache", ExecSpec("local", jobs=2, threads=1), events)
    pd.testing.assert_series_equal(got, in_process[0])
    assert _event_keys(events) == _event_keys(in_process[1])  # the workers' events reach the coordinator


@pytest.mark.slow  # a scheduler and two workers started as processes (-m "not slow" skips it)
def test_a_dask_scheduler_and_two_worker_processes_give_the_same_csv_and_their_progress_events(in_process, tmp_path):
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
        events: list = []
        got = _sweep(tmp_path / "run", tmp_path / "cache", ExecSpec("dask", threads=1, scheduler=address), events)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
    pd.testing.assert_series_equal(got, in_process[0])
    assert _event_keys(events) == _event_keys(in_process[1])  # through the scheduler's event log


@pytest.mark.slow  # submitit's controllers and jobs as processes (-m "not slow" skips it)
def test_submitit_local_cluster_gives_the_same_csv_and_their_progress_events(in_process, tmp_path):
    pytest.importorskip("submitit")
    ex = ExecSpec("submitit", jobs=2, threads=1, folder=tmp_path / "submitit", cluster="local")
    events: list = []
    got = _sweep(tmp_path / "run", tmp_path / "cache", ex, events)
    pd.testing.assert_series_equal(got, in_process[0])
    assert _event_keys(events) == _event_keys(in_process[1])  # through the files in the job folder
    assert list((tmp_path / "submitit").glob("progress/*/*.events")) == []  # removed once read


def test_a_task_that_fails_beside_one_that_fills_the_progress_pipe_ends_the_pool():
    """A task's error ends the pool while another task is about to write more progress than the pipe
    holds: the coordinator ends the workers, so the error comes back at once instead of a pool
    waiting forever on a worker blocked on a full pipe (tests/pool_tasks.py, in its own process
    with a time limit)."""
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-m", "tests.pool_tasks"], cwd=root, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0 and "raised: a task's own error" in done.stdout, done.stdout + done.stderr


def test_a_worker_whose_progress_cannot_be_sent_goes_on(tmp_path):
    """Progress is best effort: a sender that fails (a closed queue, a full disk, a job folder that
    cannot be written) drops the event and the task goes on."""

    def closed(event):
        raise ValueError("Queue is closed")

    with progress.listening(progress.dropping_failures(closed)):
        progress.report(progress.Epoch("lfm@seed0", 1, 2))
    (tmp_path / "file").write_text("")
    with progress.appending_to(tmp_path / "file" / "0.events"):  # its folder would be a file
        progress.report(progress.Epoch("lfm@seed0", 1, 2))
    with progress.appending_to(Path("/dev/full")):  # ENOSPC on every flush
        progress.report(progress.Epoch("lfm@seed0", 1, 2))


def test_progress_files_are_read_whole_record_by_whole_record_and_a_damaged_one_is_dropped(tmp_path):
    """A job's events file as the coordinator meets it: a record half written waits for the next
    read, a damaged one is dropped and the records after it still read."""
    files = progress.EventFiles(tmp_path)
    with progress.appending_to(files.path(0)):
        progress.report(progress.Epoch("lfm@seed0", 1, 2))
    heard: list = []
    with progress.listening(heard.append):
        path = files.path(0)
        whole = path.read_bytes()
        garbage = b"not a pickle"
        second = pickle.dumps(progress.Epoch("lfm@seed0", 2, 2))
        path.write_bytes(whole + len(garbage).to_bytes(4, "little") + garbage + len(second).to_bytes(4, "little"))
        files.drain()
        assert heard == [progress.Epoch("lfm@seed0", 1, 2)]  # the second record's length only: not yet
        with path.open("ab") as f:
            f.write(second)
        files.drain()
    assert heard == [progress.Epoch("lfm@seed0", 1, 2), progress.Epoch("lfm@seed0", 2, 2)]
    files.remove()
    assert not tmp_path.exists()


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


def _children(pid: int) -> set[int]:
    """Every live descendant of `pid` (from /proc)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _training_workers(pid: int) -> set[int]:
    """Descendants of `pid` that run a (model, seed) group: they have imported lfm-bench's training."""
    found = set()
    for child in _children(pid):
        try:
            maps = Path(f"/proc/{child}/maps").read_text()
        except OSError:
            continue
        if "torch" in maps:
            found.add(child)
    return found


SLOW = pytest.mark.slow  # a cluster of processes started and killed (-m "not slow" skips it)


def _until_training(parent: subprocess.Popen) -> set[int]:
    """The processes under `parent` once two of them train (and have for 2 s)."""
    deadline = time.monotonic() + 120
    while len(_training_workers(parent.pid)) < 2 and time.monotonic() < deadline and parent.poll() is None:
        time.sleep(0.5)
    assert len(_training_workers(parent.pid)) >= 2, "the sweep never started its workers"
    time.sleep(2)  # the workers are training
    return _children(parent.pid)


def _assert_gone(workers: set[int], what: str) -> None:
    deadline = time.monotonic() + 10
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [w for w in workers if _alive(w)], f"workers outlived the {what} coordinator"


@SLOW
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_ctrl_c_ends_a_jobs_sweep_at_once_in_one_line_and_leaves_no_worker(tmp_path):
    """Ctrl-C (SIGINT to the terminal's process group) while `--jobs 2` workers train: the
    coordinator ends its workers instead of waiting for their groups and the one still queued
    (minutes here: 2000 epochs each; the pool once waited for them all), exits 130 with one
    `lfm-bench: error:` line last, and leaves no worker and no leaked semaphore behind."""
    import os
    import signal

    args = [sys.executable, "-m", "robustbench_lfm", "run", "--models", "lfm,dropout", "--dataset", TINY_CLI,
            "--epochs", "2000", "-q", "--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache"),
            "--jobs", "2"]  # fmt: skip
    parent = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)  # fmt: skip
    workers: set[int] = set()
    try:
        workers = _until_training(parent)
        os.killpg(parent.pid, signal.SIGINT)
        _, err = parent.communicate(timeout=30)  # the old pool: minutes
        assert parent.returncode == 130, err
        lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip()]
        assert lines[-1] == "lfm-bench: error: interrupted; rerun the same command to resume", err
        assert "leaked" not in err, err
        _assert_gone(workers, "interrupted")
    finally:
        parent.kill()
        for w in [*workers, *_children(parent.pid)]:
            if _alive(w):
                os.kill(w, signal.SIGKILL)


EXECUTORS = {
    "local": ["--jobs", "2"],
    "dask": ["--executor", "dask", "--jobs", "2"],
    "submitit": ["--executor", "submitit", "--cluster", "local", "--jobs", "2"],
}


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
@pytest.mark.parametrize("executor", ["local", pytest.param("dask", marks=SLOW), pytest.param("submitit", marks=SLOW)])
def test_workers_die_within_seconds_when_the_coordinator_is_killed(executor, tmp_path):
    """SIGKILL to `lfm-bench run` leaves no process behind: local workers, dask's nannies and
    workers, submitit's local controllers and jobs."""
    import os
    import signal

    pytest.importorskip({"local": "concurrent", "dask": "distributed", "submitit": "submitit"}[executor])
    args = [sys.executable, "-m", "robustbench_lfm", "run", "--models", "lfm,dropout", "--attacks", "pgd,fgsm",
            "--dataset", TINY_CLI, "--epochs", "30", "-q", "--out", str(tmp_path / "run"),
            "--cache-dir", str(tmp_path / "cache"), *EXECUTORS[executor]]  # fmt: skip
    parent = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    workers: set[int] = set()
    try:
        workers = _until_training(parent)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        _assert_gone(workers, "killed")
    finally:
        for w in [*workers, *_children(parent.pid)]:
            if _alive(w):
                os.kill(w, signal.SIGKILL)
