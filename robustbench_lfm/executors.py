"""Where a sweep's tasks run: one small interface, three back-ends (`--executor`).

A task is one (model, seed) group: train or load the checkpoint, then evaluate the group's cells
(group.run_group). It returns rows; only the coordinating process writes the run's CSVs, so
results stream back into one table whatever runs the tasks.

* `local` (default) — in this process, or with `--jobs N` in N worker processes (spawned),
  each with torch threads = cores // N unless `--threads` says otherwise.
* `dask` — a dask.distributed cluster: `--scheduler tcp://HOST:PORT`, or a local cluster of
  `--jobs` single-process workers that it starts and stops. Optional: pip install lfm-bench[dask].
* `submitit` — Slurm job arrays through submitit (its `local` cluster runs them as local
  processes, which the tests use). Optional: pip install lfm-bench[submitit].
"""

from __future__ import annotations

import ctypes
import gc
import os
import pickle
import queue
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from robustbench_lfm import progress

EXECUTORS = ("local", "dask", "submitit")


@dataclass(frozen=True)
class ExecSpec:
    """How tasks are run (not what they compute: cell ids do not depend on it).

    Attributes:
        kind: "local", "dask" or "submitit".
        jobs: parallel workers (local processes, local dask workers, Slurm array parallelism).
        threads: torch threads per worker; None = cores // jobs (at least 1).
        scheduler: a dask scheduler address; None = start a local cluster.
        folder: where submitit keeps its job files.
        cluster: submitit cluster: None = auto (Slurm when available), "local" or "debug".
    """

    kind: str = "local"
    jobs: int = 1
    threads: int | None = None
    scheduler: str | None = None
    folder: Path | None = None
    cluster: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in EXECUTORS:
            raise ValueError(f"unknown executor {self.kind!r} (known: {', '.join(EXECUTORS)})")
        if self.jobs < 1 or (self.threads is not None and self.threads < 1):
            raise ValueError(f"--jobs {self.jobs} and --threads {self.threads} must be >= 1")
        if self.scheduler is not None and self.kind != "dask":
            raise ValueError("--scheduler is for --executor dask")

    def worker_threads(self) -> int:
        """Torch threads each worker uses."""
        return self.threads or max(1, (os.cpu_count() or 1) // self.jobs)


def set_threads(n: int) -> None:
    """Worker initialiser: divide the cores between workers."""
    torch.set_num_threads(n)


def local_worker(n: int, coordinator: int, events: Any = None) -> None:
    """A local worker process's initialiser: its threads, death with the coordinator (its pid),
    its progress events sent to the coordinator through the queue `events`
    (robustbench_lfm/progress.py), and torch's objects out of the collector's full passes before the
    tasks' modules are imported (`gc.freeze`, as robustbench_lfm/startup.py does for a command: the
    process is the sweep's)."""
    die_with_parent(coordinator)
    set_threads(n)
    if events is not None:
        progress.forward_to(events)
    # tqdm's default lock holds a multiprocessing semaphore, which a worker ended by `_stop` would
    # leave to the resource tracker's warning; a worker's bars need only its own threads' lock
    tqdm.set_lock(threading.RLock())
    gc.freeze()


def die_with_parent(coordinator: int | None = None) -> None:
    """End this worker process when the process that started it (`coordinator`, else its parent
    now) dies, SIGKILL included, so a killed sweep leaves no worker behind: Linux's parent-death
    signal, and on every system a daemon thread that exits once that pid is no longer its parent."""
    parent = os.getppid() if coordinator is None else coordinator
    if os.getppid() != parent:  # the coordinator died while this worker was starting
        os._exit(1)
    if parent == 1:  # started by init (a remote worker): no coordinator to follow
        return
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass  # the watchdog below still holds
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="lfm-bench-parent-watch", daemon=True).start()


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def process_token(pid: int) -> tuple[int, str]:
    """`pid` with its start time (from /proc; "" where there is none): a process that dies and
    whose pid is reused has another token."""
    try:
        return pid, Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return pid, ""


def _alive(token: tuple[int, str]) -> bool:
    pid, started = token
    if started:
        return process_token(pid) == token
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def follow(coordinator: tuple[int, str]) -> None:
    """End this process within a second of the coordinator's death (`process_token` of it), when
    the coordinator is not its parent: a submitit local job runs under a controller process that
    outlives the session that started it."""
    if not _alive(coordinator):
        os._exit(1)

    def watch() -> None:
        while _alive(coordinator):
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="lfm-bench-coordinator-watch", daemon=True).start()


def run_tasks(ex: ExecSpec, fn: Callable[..., Any], tasks: list[tuple]) -> Iterator[Any]:
    """Yield fn(*task) for every task, in completion order."""
    if not tasks:
        return iter(())
    if ex.kind == "dask":
        return _dask(ex, fn, tasks)
    if ex.kind == "submitit":
        return _submitit(ex, fn, tasks)
    return _local(ex, fn, tasks)


def _local(ex: ExecSpec, fn: Callable[..., Any], tasks: list[tuple]) -> Iterator[Any]:
    if ex.jobs == 1:
        caller = torch.get_num_threads()
        if ex.threads is not None:
            set_threads(ex.threads)
        try:
            for task in tasks:
                yield fn(*task)
        finally:  # --threads is the sweep's: a caller of run_sweep gets its own setting back
            torch.set_num_threads(caller)
        return
    ctx = get_context("spawn")  # fork would copy torch's thread pools into the children
    events = ctx.SimpleQueue()  # the workers' progress events, reported here as they come (robustbench_lfm/progress.py)
    with ProcessPoolExecutor(
        ex.jobs, mp_context=ctx, initializer=local_worker, initargs=(ex.worker_threads(), os.getpid(), events)
    ) as pool:
        running = {pool.submit(fn, *task) for task in tasks}
        try:
            while running:
                done, running = wait(running, timeout=PROGRESS_POLL_S, return_when=FIRST_COMPLETED)
                progress.drain(events)
                for future in done:
                    yield future.result()
        finally:
            if running:  # a task's error, Ctrl-C or a caller that stops early: the rest is not wanted
                _stop(pool)
    progress.drain(events)  # what came after the last result: every listener hears every event
    events.close()


PROGRESS_POLL_S = 0.5  # how often the coordinator reports its workers' progress events


def _stop(pool: ProcessPoolExecutor) -> None:
    """Cancel the pool's queued tasks and end its workers now, rather than wait for the tasks they
    run (whose results no one would read) or for a worker whose progress write waits on a pipe no
    one drains. A worker writes only the checkpoint cache and tracebacks, each atomically, so
    ending it loses nothing recorded (as when a killed sweep takes its workers with it)."""
    workers = dict(getattr(pool, "_processes", None) or {})  # pid -> process; private, so read with care
    pool.shutdown(wait=False, cancel_futures=True)
    for worker in workers.values():
        worker.terminate()


def _dask(ex: ExecSpec, fn: Callable[..., Any], tasks: list[tuple]) -> Iterator[Any]:
    try:
        from dask.distributed import Client, LocalCluster
        from dask.distributed import as_completed as dask_completed
    except ImportError:
        raise RuntimeError("--executor dask needs dask.distributed: pip install 'lfm-bench[dask]'") from None
    cluster = None
    if ex.scheduler is None:
        cluster = LocalCluster(n_workers=ex.jobs, threads_per_worker=1, processes=True, dashboard_address=None)
    client = Client(ex.scheduler or cluster)
    try:
        client.run(set_threads, ex.worker_threads())
        if cluster is not None:  # this process's own cluster: its nannies and workers die with it
            client.run(die_with_parent, nanny=True)
            client.run(die_with_parent)
        events: queue.SimpleQueue = queue.SimpleQueue()  # the workers' progress events, from the client's thread
        topic = f"{PROGRESS_TOPIC}-{uuid.uuid4().hex}"  # this sweep's: another client's sweep has its own
        client.subscribe_topic(topic, lambda event: events.put(pickle.loads(event[1])))
        futures = [client.submit(_reporting, topic, fn, *task, pure=False) for task in tasks]
        finished = dask_completed(futures)
        while not finished.is_empty():
            ready = finished.next_batch(block=False)
            progress.drain(events)
            for future in ready:
                yield future.result()
            if not ready:
                time.sleep(PROGRESS_POLL_S)
        progress.drain(events)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


PROGRESS_TOPIC = "lfm-bench-progress"


def _reporting(topic: str, fn: Callable[..., Any], *task: Any) -> Any:
    """A dask task: fn(*task), its progress events logged to the scheduler under `topic`, which the
    coordinating client subscribed to (robustbench_lfm/progress.py)."""
    from distributed import get_worker

    worker = get_worker()
    with progress.listening(progress.dropping_failures(lambda event: worker.log_event(topic, pickle.dumps(event)))):
        return fn(*task)


def _submitit(ex: ExecSpec, fn: Callable[..., Any], tasks: list[tuple]) -> Iterator[Any]:
    try:
        import submitit
    except ImportError:
        raise RuntimeError("--executor submitit needs submitit: pip install 'lfm-bench[submitit]'") from None
    folder = ex.folder or Path("submitit")
    executor = submitit.AutoExecutor(folder=folder, cluster=ex.cluster)
    executor.update_parameters(timeout_min=24 * 60, slurm_array_parallelism=ex.jobs, cpus_per_task=ex.worker_threads())
    on_this_machine = executor.cluster in ("local", "debug")  # the cluster submitit chose, when not given
    follows = [process_token(os.getpid()) if on_this_machine else None] * len(tasks)
    events = progress.EventFiles(folder / "progress" / uuid.uuid4().hex)  # the jobs' progress: beside their files
    sinks = [events.path(i) for i in range(len(tasks))]
    threads = [ex.worker_threads()] * len(tasks)
    jobs = executor.map_array(_with_threads, threads, follows, sinks, [fn] * len(tasks), tasks)
    pending = list(jobs)
    try:
        while pending:
            done = [j for j in pending if j.done()]
            events.drain()
            for job in done:
                pending.remove(job)
                yield job.result()
            if not done:
                time.sleep(PROGRESS_POLL_S)
        events.drain()
    finally:
        events.remove()


def _with_threads(
    threads: int, coordinator: tuple[int, str] | None, sink: Path, fn: Callable[..., Any], task: tuple
) -> Any:
    """A submitit job: its threads; on this machine's cluster, death with the coordinator; its
    progress events appended to `sink`, in the job folder the coordinator reads too."""
    if coordinator is not None:
        follow(coordinator)
    set_threads(threads)
    with progress.appending_to(sink):
        return fn(*task)
