"""The dataset registry of the harness.

A dataset is loaded by name and options (`synthreid:train_ids=40`). Generated datasets are built
from their configuration; real ones (`market1501`, `dukemtmc`) are read from the folder the user
names with --data-root. Either way the decoded uint8 splits are cached on disk under the cache
directory, keyed by the hash of the configuration and, for a folder, of its file names, sizes and
modification times (so a changed folder is read again), and verified by sha256 before use.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from robustbench_lfm.datasets import folders, synthreid
from robustbench_lfm.datasets.base import ReIDDataset, ReIDSplit, as_float
from robustbench_lfm.datasets.folders import DatasetFolderError, FolderLayout
from robustbench_lfm.hashing import content_hash, file_sha256

__all__ = [
    "DATASETS",
    "DatasetFolderError",
    "DatasetInfo",
    "ReIDDataset",
    "ReIDSplit",
    "as_float",
    "get_dataset_info",
    "load_dataset",
]


@dataclass(frozen=True)
class DatasetInfo:
    """A registered dataset: its task, a description, its config and how to build it.

    Attributes:
        build: (config, root or None, quiet) -> the dataset.
        layout: the folder layout for datasets read from --data-root; None for generated ones.
    """

    name: str
    task: str
    description: str
    config_cls: type
    build: Callable[[Any, Path | None, bool], ReIDDataset]
    layout: FolderLayout | None = None

    @property
    def needs_root(self) -> bool:
        """Whether the dataset is read from a folder the user names (--data-root)."""
        return self.layout is not None

    def check_options(self, options: dict[str, Any]) -> Any:
        """The dataset config for `options`; unknown keys or bad values raise ValueError."""
        known = {f.name for f in dataclasses.fields(self.config_cls)}
        bad = sorted(set(options) - known)
        if bad:
            raise ValueError(f"unknown option(s) {', '.join(bad)} (known: {', '.join(sorted(known))})")
        return self.config_cls(**options)

    def source(self, root: str | Path | None) -> str:
        """Fingerprint of the folder at `root` ("" for generated data); checks the layout."""
        if self.layout is None:
            return ""
        if root is None:
            raise DatasetFolderError(
                f"{self.name} is read from a folder: pass --data-root DIR; {self.layout.expected()}"
            )
        return folders.fingerprint(Path(root), self.layout)


def _folder_dataset(layout: FolderLayout, counts: str) -> DatasetInfo:
    return DatasetInfo(
        layout.name,
        "reid",
        f"{layout.title} from --data-root ({counts}); resized to the backbone's input size",
        folders.FolderConfig,
        lambda cfg, root, quiet: folders.build(layout, cfg, Path(root), quiet),
        layout,
    )


DATASETS: dict[str, DatasetInfo] = {
    "synthreid": DatasetInfo(
        "synthreid",
        "reid",
        "procedural pedestrians, 6 cameras, 120 train / 75 test ids + 40 distractors, 64x32 (embedded default)",
        synthreid.SynthReIDConfig,
        lambda cfg, root, quiet: synthreid.generate(cfg),
    ),
    "market1501": _folder_dataset(folders.MARKET1501, "751 train / 750 test ids, 6 cameras"),
    "dukemtmc": _folder_dataset(folders.DUKEMTMC, "702 train / 702 test ids + 408 distractor ids, 8 cameras"),
}


def get_dataset_info(name: str) -> DatasetInfo:
    """The registered dataset `name`; KeyError lists the known names."""
    if name not in DATASETS:
        raise KeyError(f"unknown dataset {name!r} (known: {', '.join(sorted(DATASETS))})")
    return DATASETS[name]


def load_dataset(
    name: str, options: dict[str, Any], cache_dir: Path, root: str | Path | None = None, quiet: bool = True
) -> ReIDDataset:
    """Load the dataset `name` with `options` from the cache, or build it and cache it.

    Args:
        name: a registered dataset name.
        options: the dataset's config options.
        cache_dir: the harness cache directory (datasets go to its `datasets/`).
        root: the --data-root folder, for datasets read from a folder.
        quiet: no progress bar while decoding images.

    Raises:
        DatasetFolderError: a folder dataset's root is missing or not in the published layout.
    """
    info = get_dataset_info(name)
    cfg = info.check_options(options)
    key = content_hash({"name": name, "config": dataclasses.asdict(cfg), "source": info.source(root)})
    path = cache_dir / "datasets" / f"{name}-{key}.safetensors"
    cached = _read_cached(path)
    if cached is not None:
        return _from_tensors(name, cached)
    dataset = info.build(cfg, root, quiet)
    _write_cached(path, dataset)
    return dataset


def _read_cached(path: Path) -> dict | None:
    sidecar = path.with_suffix(".sha256")
    if not path.exists() or not sidecar.exists() or sidecar.read_text().strip() != file_sha256(path):
        return None
    return load_file(path)


def _write_cached(path: Path, dataset: ReIDDataset) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for split in ("train", "query", "gallery"):
        s: ReIDSplit = getattr(dataset, split)
        tensors |= {
            f"{split}.images": s.images,
            f"{split}.pids": s.pids,
            f"{split}.camids": s.camids,
        }
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    save_file(tensors, tmp, metadata={"name": dataset.name, "format": json.dumps(1)})
    os.replace(tmp, path)
    path.with_suffix(".sha256").write_text(file_sha256(path))


def _from_tensors(name: str, t: dict) -> ReIDDataset:
    splits = {s: ReIDSplit(t[f"{s}.images"], t[f"{s}.pids"], t[f"{s}.camids"]) for s in ("train", "query", "gallery")}
    return ReIDDataset(name, **splits)
