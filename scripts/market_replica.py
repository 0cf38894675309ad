"""Write a full-size Market-1501 (or DukeMTMC-reID) replica folder, rendered by synthreid's generator.

Usage: python scripts/market_replica.py DIR [--size 128x64] [--scale 1.0] [--dataset market1501|dukemtmc]

The folder has the published layout, file names and split sizes (robustbench_lfm/datasets/replica.py
states them and what is chosen where the papers are silent), so `lfm-bench run --dataset market1501
--data-root DIR` and scripts/bench_scale.py run the whole folder path at real size with no download.
--scale 0.05 writes a small one (every id and image count times 0.05).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from robustbench_lfm.datasets import replica


def parse_size(text: str) -> tuple[int, int]:
    """`128x64` -> (128, 64), height first."""
    height, sep, width = text.lower().partition("x")
    if not sep or not height.isdigit() or not width.isdigit() or int(height) < 16 or int(width) < 8:
        raise SystemExit(f"market_replica: error: --size {text!r} is not HEIGHTxWIDTH of at least 16x8, e.g. 128x64")
    return int(height), int(width)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", type=Path, help="where the dataset folder is written (created)")
    ap.add_argument("--size", default="128x64", help="image size HEIGHTxWIDTH in pixels (default 128x64)")
    ap.add_argument("--scale", type=float, default=1.0, help="multiplies every count, in (0, 1] (default 1)")
    ap.add_argument("--dataset", choices=sorted(replica.SIZES), default="market1501")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    height, width = parse_size(args.size)
    sizes = replica.SIZES[args.dataset].scaled(args.scale)
    t0 = time.perf_counter()
    files = replica.write(args.dir, sizes, height, width, args.seed)
    print(f"wrote {len(files)} files to {args.dir / sizes.folder} in {time.perf_counter() - t0:.1f} s")
    print(
        f"  train {sizes.train[0]} ids / {sizes.train[1]} images; query {sizes.query[0]} ids / {sizes.query[1]}; "
        f"gallery {sizes.gallery_test} test-id images, {sizes.distractor_images} distractor images, {sizes.junk} junk"
    )
    print(f"run it: lfm-bench run --dataset {args.dataset} --data-root {args.dir} ...")


if __name__ == "__main__":
    main()
