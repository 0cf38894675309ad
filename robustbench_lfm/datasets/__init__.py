"""The dataset registry of the harness.

A dataset is loaded by name and options (`synthreid:train_ids=40`); generated datasets are cached
on disk under the cache directory, keyed by the hash of their configuration and verified by
sha256 before use.
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

from robustbench_lfm.datasets import synthreid
from robustbench_lfm.datasets.base import ReIDDataset, ReIDSplit, as_float
from robustbench_lfm.hashing import content_hash, file_sha256

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "ReIDDataset",
    "ReIDSplit",
    "as_float",
    "get_dataset_info",
    "load_dataset",
]


@dataclass(frozen=True)
class DatasetInfo:
    """A registered dataset: its task, a description and how to build its config."""

    name: str
    task: str
    description: str
    config_cls: type
    generate: Callable[[Any], ReIDDataset]

    def check_options(self, options: dict[str, Any]) -> Any:
        """The dataset config for `options`; unknown keys or bad values raise ValueError."""
        known = {f.name for f in dataclasses.fields(self.config_cls)}
        bad = sorted(set(options) - known)
        if bad:
            raise ValueError(f"unknown option(s) {', '.join(bad)} (known: {', '.join(sorted(known))})")
        return self.config_cls(**options)


DATASETS: dict[str, DatasetInfo] = {
    "synthreid": DatasetInfo(
        "synthreid",
        "reid",
        "procedural pedestrians, 6 cameras, 120 train / 75 test ids + 40 distractors, 64x32 (embedded default)",
        synthreid.SynthReIDConfig,
        synthreid.generate,
    ),
}


def get_dataset_info(name: str) -> DatasetInfo:
    """The registered dataset `name`; KeyError lists the known names."""
    if name not in DATASETS:
        raise KeyError(f"unknown dataset {name!r} (known: {', '.join(sorted(DATASETS))})")
    return DATASETS[name]


def load_dataset(name: str, options: dict[str, Any], cache_dir: Path) -> ReIDDataset:
    """Load (or generate and cache) the dataset `name` with `options`."""
    info = get_dataset_info(name)
    cfg = info.check_options(options)
    key = content_hash({"name": name, "config": dataclasses.asdict(cfg)})
    path = cache_dir / "datasets" / f"{name}-{key}.safetensors"
    cached = _read_cached(path)
    if cached is not None:
        return _from_tensors(name, cached)
    dataset = info.generate(cfg)
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
