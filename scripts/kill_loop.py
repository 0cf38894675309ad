"""Fault injection: SIGKILL a sweep again and again at random moments, then let it finish, and
compare every table with an uninterrupted run of the same command.

    python scripts/kill_loop.py [--kills 20] [--seed 0] [--dir /tmp/kill-loop]

The sweep: plain and lfm on a small synthreid, attacks `pgd:steps=5` and `sma:side=gallery`
(options on both), two budgets, two seeds. Each round starts the same command, waits a random
time drawn between 0.2 s and the reference's wall time, and kills the process group with SIGKILL
(a round that finishes before its kill counts as done). Prints the kills delivered, the rounds
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
ARGS = ["run", "--models", "lfm", "--attacks", "pgd:steps=5,sma:side=gallery", "--eps", "4/255,8/255",
        "--seeds", "0,1", "--dataset", DATA, "--epochs", "2", "-q"]  # fmt: skip
TABLES = ("results.csv", "queries.csv", "cmc.csv", "probes.csv")
VOLATILE = ("wall_s", "created_at", "run_id", "git_sha")  # when and where, not what was measured


def command(out: Path, cache: Path) -> list[str]:
    return [sys.executable, "-m", "robustbench_lfm", *ARGS, "--out", str(out), "--cache-dir", str(cache)]


def table(path: Path) -> pd.DataFrame:
    """A table with the columns that vary between runs dropped, rows in a fixed order."""
    df = pd.read_csv(path, keep_default_na=False, dtype=str).drop(columns=list(VOLATILE), errors="ignore")
    return df.sort_values(list(df.columns)).reset_index(drop=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/kill-loop"))
    opts = parser.parse_args()
    shutil.rmtree(opts.dir, ignore_errors=True)
    rng = random.Random(opts.seed)
    start = time.perf_counter()
    subprocess.run(command(opts.dir / "reference", opts.dir / "cache-ref"), check=True)
    budget = time.perf_counter() - start
    print(f"reference run: {budget:.1f} s")
    killed = finished_early = 0
    while killed < opts.kills:
        proc = subprocess.Popen(command(opts.dir / "killed", opts.dir / "cache"), start_new_session=True)
        try:
            proc.wait(timeout=rng.uniform(0.2, budget))
            finished_early += 1
            shutil.rmtree(opts.dir / "killed")  # it finished: start the grid again, to be killed
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            killed += 1
    final = subprocess.run(command(opts.dir / "killed", opts.dir / "cache"), capture_output=True, text=True)
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
    return 0 if same and final.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
