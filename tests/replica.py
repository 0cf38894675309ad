"""Small replica folders of Market-1501 and DukeMTMC-reID in their exact published layouts.

Each identity has its own colour so that a model can tell identities apart; file names follow the
datasets' conventions, including Market's junk (pid -1) and distractor (pid 0000) boxes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class ReplicaCounts:
    """What the parser must find: (ids, images, cameras) per split after junk is dropped."""

    train: tuple[int, int, int]
    query: tuple[int, int, int]
    gallery: tuple[int, int, int]


def _write(folder: Path, name: str, pid: int, rng: np.random.Generator) -> None:
    colour = np.array([(pid * 53) % 256, (pid * 97) % 256, (pid * 151) % 256], dtype=np.uint8)
    img = np.clip(colour + rng.integers(-20, 20, (24, 12, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(img).save(folder / name, quality=95)


def write_market(root: Path, seed: int = 0) -> ReplicaCounts:
    """`root/Market-1501-v15.09.15/{bounding_box_train,query,bounding_box_test}` with names like
    0002_c1s1_000451_03.jpg: 6 train ids x 3 cameras x 2 images; 4 test ids with one query in each
    of cameras 1-2 and 2 gallery images in each of cameras 1-3; 3 distractors (0000) and 2 junk (-1)."""
    rng = np.random.default_rng(seed)
    base = root / "Market-1501-v15.09.15"
    dirs = {s: base / s for s in ("bounding_box_train", "query", "bounding_box_test", "gt_bbox")}
    for d in dirs.values():
        d.mkdir(parents=True)
    frame = iter(range(100, 100000, 7))
    for pid in range(2, 8):
        for cam in (1, 2, 3):
            for box in (1, 2):
                _write(dirs["bounding_box_train"], f"{pid:04d}_c{cam}s1_{next(frame):06d}_0{box}.jpg", pid, rng)
    for pid in range(10, 14):
        for cam in (1, 2):
            _write(dirs["query"], f"{pid:04d}_c{cam}s2_{next(frame):06d}_00.jpg", pid, rng)
        for cam in (1, 2, 3):
            for box in (1, 2):
                _write(dirs["bounding_box_test"], f"{pid:04d}_c{cam}s2_{next(frame):06d}_0{box}.jpg", pid, rng)
    for cam in (4, 5, 6):
        _write(dirs["bounding_box_test"], f"0000_c{cam}s3_{next(frame):06d}_01.jpg", 0, rng)
    for cam in (1, 6):
        _write(dirs["bounding_box_test"], f"-1_c{cam}s3_{next(frame):06d}_01.jpg", 999, rng)
    (base / "readme.txt").write_text("replica for tests\n")
    return ReplicaCounts(train=(6, 36, 3), query=(4, 8, 2), gallery=(5, 27, 6))


def write_duke(root: Path, seed: int = 0) -> ReplicaCounts:
    """`root/DukeMTMC-reID/...` with names like 0001_c2_f0046182.jpg over 8 cameras: 5 train ids in
    cameras 1-4 and 5-8, 3 test ids queried in cameras 7 and 8, and 2 one-camera distractor ids."""
    rng = np.random.default_rng(seed)
    base = root / "DukeMTMC-reID"
    dirs = {s: base / s for s in ("bounding_box_train", "query", "bounding_box_test")}
    for d in dirs.values():
        d.mkdir(parents=True)
    frame = iter(range(46182, 10**7, 120))
    for pid in range(1, 6):
        for cam in (1 + pid % 4, 5 + pid % 4):
            for _ in range(3):
                _write(dirs["bounding_box_train"], f"{pid:04d}_c{cam}_f{next(frame):07d}.jpg", pid, rng)
    for pid in range(20, 23):
        for cam in (7, 8):
            _write(dirs["query"], f"{pid:04d}_c{cam}_f{next(frame):07d}.jpg", pid, rng)
        for cam in (1, 7, 8):
            _write(dirs["bounding_box_test"], f"{pid:04d}_c{cam}_f{next(frame):07d}.jpg", pid, rng)
    for pid in (30, 31):
        _write(dirs["bounding_box_test"], f"{pid:04d}_c3_f{next(frame):07d}.jpg", pid, rng)
    return ReplicaCounts(train=(5, 30, 8), query=(3, 6, 2), gallery=(5, 11, 4))
