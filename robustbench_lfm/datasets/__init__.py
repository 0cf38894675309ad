"""The dataset registry of the harness: re-ID and classification datasets.

A dataset is loaded by name and options (`synthreid:train_ids=40`). Generated datasets are built
from their configuration, `digits` from the array lfm-bench ships (datasets/data/DIGITS.md), and folder datasets
(`market1501`, `dukemtmc`, `cifar10`) from the folder the user names with --data-root. Either way
the decoded uint8 splits are cached on disk under the cache directory, keyed by the hash of the
configuration and, for a folder, of its file names, sizes and modification times (so a changed
folder is read again), and verified by sha256 before use."""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from robustbench_lfm import plugins
from robustbench_lfm.datasets import classification, corrupted, folders, synthreid
from robustbench_lfm.datasets.base import ReIDDataset, ReIDSplit, as_float
from robustbench_lfm.datasets.classification import ClassificationDataset, ClassSplit
from robustbench_lfm.datasets.folders import DatasetFolderError, FolderLayout
from robustbench_lfm.files import read_sidecar, write_verified
from robustbench_lfm.hashing import content_hash, without_defaults
from robustbench_lfm.lfm_registry import Registry, calling_module
from robustbench_lfm.typecheck import check_fields

Dataset = ReIDDataset | ClassificationDataset

__all__ = [
    "DATASETS",
    "ClassSplit",
    "ClassificationDataset",
    "Dataset",
    "DatasetFolderError",
    "DatasetInfo",
    "ReIDDataset",
    "ReIDSplit",
    "as_float",
    "config_key",
    "corrupted",
    "evaluated_subset",
    "get_dataset_info",
    "load_dataset",
    "register_dataset",
    "subset_index",
    "training_subset",
]


@dataclass(frozen=True)
class DatasetInfo:
    """A registered dataset: its task, a description, its config and how to build it.

    Attributes:
        build: (config, root or None, quiet) -> the dataset.
        fingerprint: root -> hash of the folder's files, for datasets read from --data-root;
            None for generated or embedded ones. Raises DatasetFolderError naming the layout.
        expected: the folder layout in words, for messages ("" when no folder is read).
        sized_by_backbone: images are resized to the backbone's input size (re-ID folders).
    """

    name: str
    task: str
    description: str
    config_cls: type
    build: Callable[[Any, Path | None, bool], Dataset]
    fingerprint: Callable[[Path], str] | None = None
    expected: str = ""
    sized_by_backbone: bool = False

    @property
    def needs_root(self) -> bool:
        """Whether the dataset is read from a folder the user names (--data-root)."""
        return self.fingerprint is not None

    def check_options(self, options: dict[str, Any]) -> Any:
        """The dataset config for `options`; unknown keys or bad values raise ValueError."""
        known = {f.name for f in dataclasses.fields(self.config_cls)}
        bad = sorted(set(options) - known)
        if bad:
            raise ValueError(f"unknown option(s) {', '.join(bad)} (known: {', '.join(sorted(known)) or 'none'})")
        problem = check_fields(self.config_cls, options)
        if problem:
            raise ValueError(problem)
        return self.config_cls(**options)

    def source(self, root: str | Path | None) -> str:
        """Fingerprint of the folder at `root` ("" for generated data); checks the layout."""
        if self.fingerprint is None:
            return ""
        if root is None:
            raise DatasetFolderError(f"{self.name} is read from a folder: pass --data-root DIR; {self.expected}")
        return self.fingerprint(Path(root))


def _folder_dataset(layout: FolderLayout, counts: str) -> DatasetInfo:
    return DatasetInfo(
        layout.name,
        "reid",
        f"{layout.title} from --data-root ({counts}); resized to the backbone's input size",
        folders.FolderConfig,
        lambda cfg, root, quiet: folders.build(layout, cfg, _required(root), quiet),
        lambda root: folders.fingerprint(root, layout),
        layout.expected(),
        sized_by_backbone=True,
    )


DATASETS: Registry[DatasetInfo] = Registry("dataset")


def register_dataset(info: DatasetInfo) -> DatasetInfo:
    """Register a dataset under `info.name`; a name registered twice raises DuplicateNameError."""
    return DATASETS.add(info.name, info, calling_module())


for _info in (
    DatasetInfo(
        "synthreid",
        "reid",
        "procedural pedestrians, 6 cameras, 120 train / 75 test ids + 40 distractors, 64x32 (embedded default)",
        synthreid.SynthReIDConfig,
        lambda cfg, root, quiet: synthreid.generate(cfg),
    ),
    _folder_dataset(folders.MARKET1501, "751 train / 750 test ids, 6 cameras"),
    _folder_dataset(folders.DUKEMTMC, "702 train / 702 test ids + 408 distractor ids, 8 cameras"),
    DatasetInfo(
        "synthcls",
        "classification",
        "procedural shapes, 10 classes, 2000 train / 500 test, 32x32 (generated classification default)",
        classification.SynthClsConfig,
        lambda cfg, root, quiet: classification.generate_synthcls(cfg),
    ),
    DatasetInfo(
        "digits",
        "classification",
        "real handwritten digits (UCI, shipped with lfm-bench), 10 classes, 1343 train / 454 test, upsampled to 32x32",
        classification.DigitsConfig,
        lambda cfg, root, quiet: classification.load_digits(cfg),
    ),
    DatasetInfo(
        "cifar10",
        "classification",
        "CIFAR-10 from --data-root (python pickle batches), 50000 train / 10000 test, 32x32",
        classification.Cifar10Config,
        lambda cfg, root, quiet: classification.load_cifar10(_required(root)),
        classification.cifar_fingerprint,
        classification.cifar_expected(),
    ),
):
    register_dataset(_info)


def _required(root: Path | None) -> Path:
    """The --data-root of a folder dataset (the spec has refused a run without one)."""
    if root is None:
        raise DatasetFolderError("this dataset is read from a folder; give it with --data-root DIR")
    return root


def get_dataset_info(name: str) -> DatasetInfo:
    """The registered dataset `name`; UnknownNameError (a KeyError) lists close matches."""
    return DATASETS[name]


def config_key(cfg: Any) -> dict[str, Any]:
    """A dataset config as keys and the CSV `data_params` hold it: every field, those added since
    the first format (the class's `ADDED_DEFAULTS`) left out at their defaults, so earlier keys stand."""
    return without_defaults(dataclasses.asdict(cfg), getattr(type(cfg), "ADDED_DEFAULTS", {}))


def load_dataset(
    name: str, options: dict[str, Any], cache_dir: Path, root: str | Path | None = None, quiet: bool = True
) -> Dataset:
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
    code = plugins.code_of([DATASETS.source(name)])  # the generator's (reader's) code
    key = content_hash({"name": name, "config": config_key(cfg), "source": info.source(root), "code": code})
    path = cache_dir / "datasets" / f"{name}-{key}.safetensors"
    dataset = _cached_dataset(path, name, info.task)
    if dataset is not None:
        return dataset
    dataset = info.build(cfg, None if root is None else Path(root), quiet)
    _write_cached(path, dataset)
    return dataset


SPLITS = {"reid": ("train", "query", "gallery"), "classification": ("train", "test")}


def _cached_dataset(path: Path, name: str, task: str) -> Dataset | None:
    """The cached dataset, or None when absent or damaged (reported, then rebuilt)."""
    try:
        cached = _read_cached(path)
        return None if cached is None else _from_tensors(name, task, *cached)
    except Exception as err:  # a damaged entry of any kind: never fatal, built again
        warnings.warn(f"cached dataset {path} is unreadable ({err}); building it again", stacklevel=2)
        return None


def _read_cached(path: Path) -> tuple[dict, dict[str, str]] | None:
    from safetensors import safe_open  # here, not at import: `ls` and a spec's checks never read a dataset
    from safetensors.torch import load_file

    if read_sidecar(path) is None:  # UnverifiedFileError when changed, cut or without its sidecar
        return None
    with safe_open(path, "pt") as f:
        metadata = f.metadata() or {}
    return load_file(path), metadata


def _write_cached(path: Path, dataset: Dataset) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    task = "reid" if isinstance(dataset, ReIDDataset) else "classification"
    tensors = {}
    for split in SPLITS[task]:
        part = getattr(dataset, split)
        for field in dataclasses.fields(part):  # not asdict: it would deep-copy every image
            tensors[f"{split}.{field.name}"] = getattr(part, field.name)
    metadata = {"name": dataset.name, "format": json.dumps(2)}
    if isinstance(dataset, ClassificationDataset):
        metadata["classes"] = json.dumps(list(dataset.classes))
    write_verified(path, lambda tmp: save_file(tensors, tmp, metadata=metadata), {"dataset": dataset.name})


def _from_tensors(name: str, task: str, t: dict, metadata: dict[str, str]) -> Dataset:
    if task == "reid":
        splits = {s: ReIDSplit(t[f"{s}.images"], t[f"{s}.pids"], t[f"{s}.camids"]) for s in SPLITS[task]}
        return ReIDDataset(name, **splits)
    parts = {s: ClassSplit(t[f"{s}.images"], t[f"{s}.labels"]) for s in SPLITS[task]}
    return ClassificationDataset(name, **parts, classes=tuple(json.loads(metadata["classes"])))


def evaluated_subset(data: Dataset, n_eval: int) -> Dataset:
    """`data` scored on a fixed subset of `n_eval` queries (re-ID; train and gallery kept whole) or
    test images (classification); 0 = all of them, `data` itself.

    The subset is the first `n_eval` of one permutation drawn by a generator seeded with 0 (not
    the training seed: every model and seed is scored on the same images), kept in split order,
    as RobustBench's `n_examples` takes the first images of a fixed list.

    Raises:
        ValueError: `n_eval` exceeds the split (the message names its size).
    """
    split: ReIDSplit | ClassSplit = data.query if isinstance(data, ReIDDataset) else data.test
    what = "queries" if isinstance(data, ReIDDataset) else "test images"
    if n_eval > len(split):
        raise ValueError(f"--n-eval {n_eval} exceeds the {len(split)} {what} of {data.name}; give at most {len(split)}")
    if n_eval in (0, len(split)):
        return data
    keep = subset_index(len(split), n_eval)
    if isinstance(data, ReIDDataset):
        q = data.query
        return dataclasses.replace(data, query=ReIDSplit(q.images[keep], q.pids[keep], q.camids[keep]))
    return dataclasses.replace(data, test=ClassSplit(data.test.images[keep], data.test.labels[keep]))


def subset_index(n: int, n_eval: int) -> torch.Tensor:
    """Positions (sorted) of the `n_eval` of `n` images `evaluated_subset` keeps; all of them at 0."""
    if n_eval in (0, n):
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(0))[:n_eval].sort().values


def training_subset(data: Dataset, fraction: float, by: str = "images") -> Dataset:
    """`data` with a fixed, stratified share of its training split (the low-data regime); 1 = `data`.

    `by="images"` keeps round(fraction x n) (at least 1) of each identity's (re-ID) or class's
    (classification) images; `by="ids"` keeps round(fraction x identities) (at least 2) re-ID
    identities with all their images. The draw uses a generator seeded with 0, not the training
    seed, so every model and seed trains on the same images. Query, gallery and test stay whole.
    """
    if fraction == 1:
        return data
    g = torch.Generator().manual_seed(0)
    labels = data.train.labels if isinstance(data, ClassificationDataset) else data.train.pids
    groups = torch.unique(labels)
    if by == "ids":
        chosen = groups[torch.randperm(len(groups), generator=g)[: max(2, round(fraction * len(groups)))]]
        keep = torch.isin(labels, chosen)
    else:
        keep = torch.zeros(len(labels), dtype=torch.bool)
        for group in groups.tolist():
            members = (labels == group).nonzero().flatten()
            picked = members[torch.randperm(len(members), generator=g)[: max(1, round(fraction * len(members)))]]
            keep[picked] = True
    index = keep.nonzero().flatten()
    if isinstance(data, ClassificationDataset):
        return dataclasses.replace(data, train=ClassSplit(data.train.images[index], data.train.labels[index]))
    t = data.train
    return dataclasses.replace(data, train=ReIDSplit(t.images[index], t.pids[index], t.camids[index]))
