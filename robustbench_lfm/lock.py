"""One writer per run directory: an advisory lock on RUN_DIR/.lock.

`fcntl.flock` is released by the kernel when its process ends, however it ends (SIGKILL
included), so a killed sweep never leaves a stale lock behind and rerunning the command resumes
at once. A second sweep on the same directory while the first runs is refused with an error
naming the holder, never interleaved. (POSIX only: fcntl does not exist on Windows.)
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

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / ".lock"
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunLockedError(
                f"{self.path.parent} is being written by {holder}; wait for that sweep to finish, "
                "or give this one another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"lfm-bench pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
