"""Training cost per epoch of every registered model relative to `plain`, measured side by side.

Usage: python scripts/bench_train_cost.py [--task reid|classification] [--models lfm,pgd-at] [--rounds 3]

Each round trains every model (and `plain`) for two epochs of the task's CPU recipe on its default
data (synthreid, or the digits for classification) and times the second, in interleaved order
that reverses every round, so machine load affects all alike. Training methods run as in a sweep
(PGD-10 for pgd-at; gwi's TENET step from the first iteration: it acts only on correctly
classified samples, hence the second epoch); MixACM's teacher is an untrained pgd-at network,
which costs the same forward pass as a trained one. Prints the median seconds per epoch and the
ratio to plain. No timed assertion: the ratio is
the result.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch

from robustbench_lfm import models
from robustbench_lfm.datasets import ClassificationDataset, load_dataset
from robustbench_lfm.methods import build_method
from robustbench_lfm.recipe import load_recipe
from robustbench_lfm.spec import resolve_model
from robustbench_lfm.training import train_model

DATA = {"reid": "synthreid", "classification": "digits"}


def build(name: str, data, recipe, seed: int) -> tuple[torch.nn.Module, object]:
    """A fresh network and its training step, as the runner would build them."""
    spec = resolve_model(name, None, recipe)
    task = recipe.task
    n = data.num_classes if isinstance(data, ClassificationDataset) else data.num_train_ids
    kw = dict(zip(("mean", "std"), data.normalization(), strict=True)) if task == "classification" else {}
    torch.manual_seed(seed)
    net = models.create_model(name, n, task, seed=seed, **kw, **spec.overrides())
    params = {**dict(spec.resolved), **({"start_iter": 0} if spec.method == "gwi" else {})}
    teacher = None
    if spec.teacher is not None:
        teacher = models.create_model(spec.teacher.name, n, task, **kw, **spec.teacher.overrides()).eval()
    return net, build_method(spec.method, params, recipe, seed, torch.device("cpu"), teacher)


def epoch_seconds(name: str, data, recipe, seed: int) -> float:
    """Seconds of the last training epoch of a fresh `name` model."""
    net, step = build(name, data, recipe, seed)
    return train_model(net, data, recipe, seed, torch.device("cpu"), step).epoch_seconds[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="reid", choices=sorted(DATA))
    parser.add_argument("--models", default=",".join(models.list_models()))
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    names = ["plain", *[n for n in args.models.split(",") if n != "plain"]]
    data = load_dataset(DATA[args.task], {}, Path(tempfile.gettempdir()) / "lfm-bench-bench")
    recipe = load_recipe("cpu", args.task).scaled_to(2)
    epoch_seconds("plain", data, recipe, 0)  # warm-up: allocator and thread pools
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(args.rounds):
        for name in names if r % 2 == 0 else reversed(names):
            times[name].append(epoch_seconds(name, data, recipe, r))
    base = statistics.median(times["plain"])
    threads = torch.get_num_threads()
    print(f"{DATA[args.task]}: torch {torch.__version__}, {threads} threads, {args.rounds} rounds, 2nd epoch timed")
    print(f"{'model':<16} {'s/epoch':>8} {'vs plain':>9}")
    for name in names:
        med = statistics.median(times[name])
        print(f"{name:<16} {med:>8.3f} {med / base:>8.2f}x")


if __name__ == "__main__":
    main()
