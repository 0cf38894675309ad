"""Tasks for a `--jobs` pool that tests/test_executors.py starts in a separate process: module-level,
so spawned workers can import them, and light (no torch here: the workers' initialiser brings it)."""

from __future__ import annotations

import sys
import time

from robustbench_lfm import progress

CHATTY = 5000  # epochs' events of about 70 bytes: some 350 kB, several times what a pipe holds


def task(kind: str) -> str:
    """`fail` raises at once; `chatty` waits until the failure has reached the coordinator, then
    reports CHATTY progress events and returns."""
    if kind == "fail":
        raise ValueError("a task's own error")
    time.sleep(2.0)
    for done in range(CHATTY):
        progress.report(progress.Epoch("chatty@seed0", done, CHATTY))
    return kind


def main() -> None:
    """One failing task beside one that writes more progress than the pipe holds, no one draining
    but the pool's own loop: the failure must come back, not a hang."""
    from robustbench_lfm.executors import ExecSpec, run_tasks

    try:
        list(run_tasks(ExecSpec("local", jobs=2, threads=1), task, [("chatty",), ("fail",), ("chatty",)]))
    except ValueError as err:
        print(f"raised: {err}")
        sys.exit(0)
    sys.exit("no error came back")


if __name__ == "__main__":
    main()
