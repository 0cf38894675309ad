"""Published corrupted test sets read from --data-root, for `corrupt:source=published`.

CIFAR-10-C (Hendrycks & Dietterich, ICLR 2019) as distributed, in `DIR/CIFAR-10-C/`: one
`<corruption>.npy` per corruption, uint8 of shape (5 N, 32, 32, 3) holding the N = 10,000 test
images at severity 1, then 2, ... 5, and `labels.npy` (5 N,) with their classes. RobustBench's
corruptions protocol (`load_cifar10c`) reads the same files from the same folder as its CIFAR-10
(`DIR/cifar-10-batches-py/`), so one --data-root serves both. The arrays are memory-mapped and
only the scored rows are read; numpy's loader runs with `allow_pickle=False`, so a file cannot run
code. A block whose labels are not the clean test labels, in order, is refused.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from robustbench_lfm.datasets.classification import ClassSplit
from robustbench_lfm.datasets.folders import DatasetFolderError
from robustbench_lfm.hashing import content_hash

FOLDERS = {"cifar10": "CIFAR-10-C"}  # dataset -> the folder of its published corrupted test sets
SEVERITIES = 5


def expected(dataset: str) -> str:
    """The layout in words, for messages."""
    folder = FOLDERS.get(dataset, "?")
    return f"{folder}/<corruption>.npy (uint8, 5 x N test images, severities 1-5 in order) and {folder}/labels.npy"


def folder(dataset: str, root: str | Path | None) -> Path:
    """The folder of `dataset`'s published corrupted sets under `root` (DatasetFolderError if none)."""
    if dataset not in FOLDERS:
        known = ", ".join(FOLDERS)
        raise DatasetFolderError(
            f"corrupt:source=published reads a published corrupted test set, which only {known} has; "
            f"use source=generated on {dataset}"
        )
    if root is None:
        raise DatasetFolderError(f"corrupt:source=published reads --data-root DIR/{expected(dataset)}")
    return Path(root) / FOLDERS[dataset]


def _array(path: Path, dataset: str) -> np.ndarray:
    """The memory-mapped array at `path` (DatasetFolderError when absent or not a plain .npy)."""
    if not path.is_file():
        raise DatasetFolderError(f"no {path}; {dataset} expects {expected(dataset)}")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise DatasetFolderError(f"{path} is not a numpy array file ({err}); expected {expected(dataset)}") from None


def fingerprint(dataset: str, root: str | Path | None, names: list[str]) -> str:
    """Hash of the names, sizes and modification times of every `.npy` in the folder, after checking
    the shapes of the files `names` need. The whole folder, so that one run directory's cells share
    one value whichever types they read (a changed file changes the cell ids and the directory's
    fingerprint)."""
    where = folder(dataset, root)
    for name in [*sorted(set(names)), "labels"]:
        path = where / f"{name}.npy"
        array = _array(path, dataset)
        shaped = array.ndim == 1 if name == "labels" else array.shape[1:] == (32, 32, 3)
        if array.dtype != np.uint8 or not shaped or array.shape[0] % SEVERITIES:
            found = f"dtype {array.dtype} and shape {array.shape}"
            raise DatasetFolderError(f"{path} has {found}; expected {expected(dataset)}")
    stats = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(where.glob("*.npy"))]
    return content_hash(stats, 16)


def published_split(dataset: str, root: str | Path | None, name: str, severity: int, test: ClassSplit,
                    index: torch.Tensor, n_test: int) -> ClassSplit:  # fmt: skip
    """The published images of corruption `name` at `severity` standing for the scored clean test
    images `test`: rows `index` (their positions among the split's `n_test` images, --n-eval) of
    the severity's block, as (N, 3, H, W) uint8 with `test`'s labels, which the file's must equal."""
    where = folder(dataset, root)
    images, published = _array(where / f"{name}.npy", dataset), _array(where / "labels.npy", dataset)
    if images.shape[0] != SEVERITIES * n_test or published.shape[0] != SEVERITIES * n_test:
        raise DatasetFolderError(
            f"{where}: {name}.npy holds {images.shape[0]} images and labels.npy {published.shape[0]}, not 5 x the "
            f"{n_test} test images of {dataset}"
        )
    rows = (severity - 1) * n_test + index.numpy()
    if not np.array_equal(published[rows].astype(np.int64), test.labels.numpy()):
        raise DatasetFolderError(f"{where}/labels.npy: severity {severity}'s labels are not {dataset}'s test labels")
    chosen = torch.from_numpy(np.ascontiguousarray(images[rows])).permute(0, 3, 1, 2).contiguous()
    return ClassSplit(chosen, test.labels)
