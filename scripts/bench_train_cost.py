"""Training cost per epoch of each regularized model relative to `plain`, measured side by side.

Usage: python scripts/bench_train_cost.py [--models lfm,dropout,cutout] [--rounds 5]

Each round trains every model (and `plain`) for one epoch on the default synthreid training split
with the default recipe, in interleaved order, so machine load affects all alike. Prints the
median seconds per epoch and the ratio to plain. No timed assertion: the ratio is the result.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch

import models
from robustbench_lfm.datasets import load_dataset
from robustbench_lfm.spec import TrainRecipe
from robustbench_lfm.training import train_model


def epoch_seconds(name: str, data, recipe: TrainRecipe, seed: int) -> float:
    """Seconds of one training epoch of a fresh `name` model."""
    torch.manual_seed(seed)
    net = models.create_model(name, data.num_train_ids, seed=seed)
    return train_model(net, data, recipe, seed, torch.device("cpu")).epoch_seconds[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="lfm,dropout,cutout")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    names = ["plain", *[n for n in args.models.split(",") if n != "plain"]]
    data = load_dataset("synthreid", {}, Path(tempfile.gettempdir()) / "lfm-bench-bench")
    recipe = TrainRecipe().scaled_to(1)
    epoch_seconds("plain", data, recipe, 0)  # warm-up: allocator and thread pools
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(args.rounds):
        for name in names if r % 2 == 0 else reversed(names):
            times[name].append(epoch_seconds(name, data, recipe, r))
    base = statistics.median(times["plain"])
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, {threads} threads, {len(data.train)} train images, {args.rounds} rounds")
    print(f"{'model':<10} {'s/epoch':>8} {'vs plain':>9}")
    for name in names:
        med = statistics.median(times[name])
        print(f"{name:<10} {med:>8.3f} {med / base:>8.3f}x")


if __name__ == "__main__":
    main()
