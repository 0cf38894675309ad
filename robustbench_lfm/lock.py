"""One writer per run directory: an advisory lock on the run directory itself.

`fcntl.flock` is taken on the directory's own file descriptor, not on a file inside it: a lock
file can be deleted while a sweep runs, and a second sweep would then lock a new file of the
same name and write beside the first. The directory cannot be replaced under a running sweep
without its tables going with it. RUN_DIR/.lock only says who holds the lock, for the message.
The kernel releases the lock when its process ends, however it ends (SIGKILL included), so a
killed sweep never leaves a stale lock behind and rerunning the command resumes at once. A second
sweep on the same directory while the first runs is refused with an error naming the holder,
never interleaved. (POSIX only: fcntl does not exist on Windows.)
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path
from types import TracebackType


class RunLockedError(RuntimeError):
    """Another process holds the run directory."""


class RunLock:
    """Context manager holding RUN_DIR/.lock exclusively for the life of a sweep."""

    def __init__(self, run_dir: Path, writer: str = "sweep") -> None:
        self.path = Path(run_dir) / ".lock"
        self.writer = writer  # what holds it, for the message: a `sweep`, a `board` build
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunLockedError(
                f"{self.path.parent} is being written by {self._holder()}; wait for that {self.writer} to finish, "
                "or give this one another --out"
            ) from None
        self.path.write_text(f"lfm-bench pid {os.getpid()} on {socket.gethostname()}")
        self._fd = fd
        return self

    def _holder(self) -> str:
        try:
            return self.path.read_text(errors="replace").strip()[:200] or "another process"
        except OSError:
            return "another process"

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def writer_of(run_dir: Path) -> str | None:
    """Who holds `run_dir`'s lock now (RUN_DIR/.lock's text), or None when no one does. A probe that
    writes nothing: a shared lock tried and released at once (a reader, `board`, asks before reading)."""
    try:
        fd = os.open(run_dir, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return RunLock(run_dir)._holder()
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
