"""The 15 common corruptions against the reference package `imagecorruptions` (Michaelis et al. 2019),
type by type, on the same images.

Usage: python scripts/bench_corruptions.py [--severity 3] [--repeats 3] [--batch 64] [--types jpeg_compression,...]

At 32x32 (CIFAR size) and 128x64 (re-ID size), on `--batch` synthreid images, with torch and numpy
held to one thread: ours is `robustbench_lfm.attacks.corruptions.corrupt` on the whole batch (the
imagenet table), theirs `imagecorruptions.corrupt` image by image (what a user of the package
writes). Each is timed `--repeats` times, interleaved, and the best time kept; the table prints
both times per image and theirs / ours (above 1: ours is faster). The reference is loaded with the
shim the comparison tests use (tests/test_corruptions.py), which also checks the outputs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from robustbench_lfm.attacks.corruptions import CORRUPTIONS, corrupt
from robustbench_lfm.datasets.synthreid import SynthReIDConfig, generate
from tests.test_corruptions import _reference


def best_of(repeats: int, run) -> float:
    """The least wall time of `repeats` runs (seconds)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--severity", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--types", default="", help="comma-separated corruption names (default: all 15)")
    args = parser.parse_args()
    names = [n for n in args.types.split(",") if n] or list(CORRUPTIONS)
    unknown = sorted(set(names) - set(CORRUPTIONS))
    if unknown:
        parser.error(f"--types: unknown {', '.join(unknown)}; choose from {', '.join(CORRUPTIONS)}")
    torch.set_num_threads(1)
    reference = _reference()
    print(f"{args.batch} images, severity {args.severity}, 1 thread; ms per image, best of {args.repeats}")
    print(f"{'corruption':<18}" + "".join(f"{f'{h}x{w}: ours  theirs  ratio':>32}" for h, w in ((32, 32), (128, 64))))
    slowest, behind = float("inf"), []
    for name in names:
        line = f"{name:<18}"
        for h, w in ((32, 32), (128, 64)):
            config = SynthReIDConfig(height=h, width=w, train_ids=max(4, args.batch // 4), test_ids=2, distractor_ids=0)
            x8 = generate(config).train.images[: args.batch]
            x = x8.float() / 255
            arrays = [im.permute(1, 2, 0).numpy() for im in x8]

            def ours(x=x, name=name) -> None:
                corrupt(x, name, args.severity, "imagenet", torch.Generator().manual_seed(0))

            def theirs(arrays=arrays, name=name) -> None:
                np.random.seed(0)
                for a in arrays:
                    reference(a, corruption_name=name, severity=args.severity)

            t_ours, t_theirs = best_of(args.repeats, ours), best_of(args.repeats, theirs)
            ratio = t_theirs / t_ours
            slowest = min(slowest, ratio)
            if ratio < 1:
                behind.append(f"{name} at {h}x{w}")
            n = len(arrays)
            line += f"{1000 * t_ours / n:>14.2f}{1000 * t_theirs / n:>9.2f}{ratio:>8.2f}x"
        print(line, flush=True)
    verdict = f"ours slower on {', '.join(behind)}" if behind else "ours faster on every type and size"
    print(f"smallest ratio: {slowest:.2f}x; {verdict}")


if __name__ == "__main__":
    main()
