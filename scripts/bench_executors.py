"""Speed-up of a sweep with 2 worker processes against 1, on this machine, measured side by side.

Usage: python scripts/bench_executors.py [--rounds 2] [--dataset synthreid:train_ids=40,test_ids=20]

The grid is 4 models (plain, lfm, dropout, cutout) x clean and PGD-20 at 8/255 (8 cells plus the
sanity probes), trained from an empty cache every time so training is included. `--jobs 1` uses
every core for torch inside one process; `--jobs 2` runs two (model, seed) groups at once with
cores / 2 threads each. Rounds alternate the order. Prints wall seconds and the speed-up; the
two result tables are compared too (same numbers whatever the executor).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd

from robustbench_lfm.executors import ExecSpec
from robustbench_lfm.options import RunOptions
from robustbench_lfm.runner import run_sweep
from robustbench_lfm.spec import build_spec


def one_run(root: Path, jobs: int, dataset: str) -> tuple[float, pd.Series]:
    """Wall seconds of the grid with `jobs` workers, and its values."""
    shutil.rmtree(root, ignore_errors=True)
    options = {"models": "lfm,dropout,cutout", "eps": "8/255", "dataset": dataset, "epochs": 5,
               "out": root / "run", "cache_dir": root / "cache", "device": "cpu", "quiet": True}  # fmt: skip
    spec = build_spec(RunOptions(**options))
    start = time.perf_counter()
    run_sweep(spec, log=lambda _: None, ex=ExecSpec("local", jobs=jobs))
    took = time.perf_counter() - start
    df = pd.read_csv(root / "run" / "results.csv", keep_default_na=False)
    return took, df.set_index(["cell_id", "metric", "rerank"])["value"].sort_index()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--dataset", default="synthreid:train_ids=40,test_ids=20,distractor_ids=5")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="lfm-bench-exec-"))
    times: dict[int, list[float]] = {1: [], 2: []}
    values = {}
    for r in range(args.rounds):
        for jobs in (1, 2) if r % 2 == 0 else (2, 1):
            took, values[jobs] = one_run(root / f"j{jobs}", jobs, args.dataset)
            times[jobs].append(took)
    one, two = statistics.median(times[1]), statistics.median(times[2])
    print(f"{os.cpu_count()} cores, {args.rounds} rounds, 4 models x (clean + pgd 8/255) + probes, from an empty cache")
    print(f"--jobs 1 ({os.cpu_count()} threads)   {one:7.1f} s")
    print(f"--jobs 2 (1 thread each)  {two:7.1f} s   speed-up {one / two:.2f}x")
    diff = (values[1] - values[2]).abs().max()
    print(f"largest difference between the two tables: {diff:.3g} (thread counts differ, so float sums may)")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
