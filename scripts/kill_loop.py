"""Fault injection: SIGKILL a sweep again and again at random moments, then let it finish, and
compare every table with an uninterrupted run of the same command.

    python scripts/kill_loop.py [--kills 20] [--seed 0] [--dir /tmp/kill-loop]
    python scripts/kill_loop.py --jobs 2 --plugin examples/plugin_example.py --attacks pgd:steps=5,sign-noise \
        --parent-only

The sweep: plain and lfm on a small synthreid, attacks `pgd:steps=5` and `sma:side=gallery`
(options on both; or `--attacks`, with `--plugin` for a plugin's), two budgets, two seeds, in
this process or `--jobs N` workers. Each round starts the same command, waits a random time drawn
between 0.2 s and the reference's wall time, and kills with SIGKILL the process group, or with
`--parent-only` the coordinator alone (its workers must then die by themselves) (a round that
finishes before its kill counts as done). After the final rerun it counts the processes still
running that command and the temp files left in the run directory and the cache. Prints the kills delivered, the rounds
that resumed, and whether results.csv, queries.csv, cmc.csv and probes.csv equal the reference's
(values compared exactly, rows as sets). Exit 0 when they all match. CPU-only, a few minutes.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

DATA = "synthreid:train_ids=16,test_ids=8,distractor_ids=2,cameras=3,max_cameras=3"
ARGS = ["run", "--models", "lfm", "--eps", "4/255,8/255", "--seeds", "0,1", "--dataset", DATA, "--epochs", "2", "-q"]
TABLES = ("results.csv", "queries.csv", "cmc.csv", "probes.csv")
VOLATILE = ("wall_s", "created_at", "run_id", "git_sha")  # when and where, not what was measured


def command(out: Path, cache: Path, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "robustbench_lfm", *ARGS, *extra, "--out", str(out), "--cache-dir", str(cache)]


def descendants(pid: int) -> set[int]:
    """Every live descendant of `pid` (Linux /proc)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def table(path: Path) -> pd.DataFrame:
    """A table with the columns that vary between runs dropped, rows in a fixed order."""
    df = pd.read_csv(path, keep_default_na=False, dtype=str).drop(columns=list(VOLATILE), errors="ignore")
    return df.sort_values(list(df.columns)).reset_index(drop=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/kill-loop"))
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--plugin", default=None)
    parser.add_argument("--attacks", default="pgd:steps=5,sma:side=gallery")
    parser.add_argument("--parent-only", action="store_true", help="SIGKILL the coordinator, not its group")
    opts = parser.parse_args()
    extra = ["--attacks", opts.attacks, "--jobs", str(opts.jobs), *(["--plugin", opts.plugin] if opts.plugin else [])]
    shutil.rmtree(opts.dir, ignore_errors=True)
    rng = random.Random(opts.seed)
    start = time.perf_counter()
    subprocess.run(command(opts.dir / "reference", opts.dir / "cache-ref", extra), check=True)
    budget = time.perf_counter() - start
    print(f"reference run: {budget:.1f} s")
    killed = finished_early = 0
    spawned: set[int] = set()
    while killed < opts.kills:
        proc = subprocess.Popen(command(opts.dir / "killed", opts.dir / "cache", extra), start_new_session=True)
        try:
            proc.wait(timeout=rng.uniform(0.2, budget))
            finished_early += 1
            shutil.rmtree(opts.dir / "killed")  # it finished: start the grid again, to be killed
        except subprocess.TimeoutExpired:
            spawned |= descendants(proc.pid)  # its workers (and resource tracker) at the moment of the kill
            if opts.parent_only:
                os.kill(proc.pid, signal.SIGKILL)
            else:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            killed += 1
    final = subprocess.run(command(opts.dir / "killed", opts.dir / "cache", extra), capture_output=True, text=True)
    time.sleep(5)  # a worker of the last killed round has had its seconds to go
    print(
        f"{killed} SIGKILLs delivered ({finished_early} rounds finished before their kill); final rerun exit "
        f"{final.returncode}"
    )
    same = True
    for name in TABLES:
        ref, got = table(opts.dir / "reference" / name), table(opts.dir / "killed" / name)
        equal = ref.equals(got)
        same &= equal
        print(f"{name}: {len(got)} rows, reference {len(ref)}: {'identical' if equal else 'DIFFERENT'}")
    left = [pid for pid in spawned if alive(pid)]
    temps = [p for folder in (opts.dir / "killed", opts.dir / "cache") for p in folder.rglob(".*.tmp*")]
    print(f"{len(spawned)} child processes seen at the kills, still running: {len(left)}; temp files left: "
          f"{len(temps)}")  # fmt: skip
    return 0 if same and final.returncode == 0 and not left and not temps else 1


if __name__ == "__main__":
    sys.exit(main())
