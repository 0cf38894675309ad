"""Image-classification datasets: `synthcls` (generated default), `digits` (embedded real data),
`cifar10` (read from its python-pickle folder).

* `synthcls` — ten procedural shape classes (disk, square, ring, cross, bars, triangle, diamond,
  two dots, X), a bright shape of random colour at a random scale, rotation and position on a
  darker cluttered background, with sensor noise; 32x32, 200 train / 50 test images per class.
* `digits` — the 1,797 real 8x8 handwritten digits that scikit-learn ships inside its package (UCI
  optical recognition of handwritten digits, Alpaydin & Kaynak 1998), 16 grey levels mapped to
  0..255, bilinearly upsampled to 32x32, grey replicated to RGB; a fixed stratified 75/25 split.
* `cifar10` — CIFAR-10 (Krizhevsky 2009) from `cifar-10-batches-py/` (`data_batch_1..5`,
  `test_batch`) as distributed. The batches are pickles; they are read with an unpickler that
  only rebuilds dicts, lists, bytes and numpy arrays, so a crafted file cannot run code.

Images are uint8 (N, 3, H, W); models normalise with the train split's per-channel mean and std.
"""

from __future__ import annotations

import hashlib
import io
import math
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from robustbench_lfm.datasets.folders import DatasetFolderError
from robustbench_lfm.hashing import content_hash


@dataclass(frozen=True)
class ClassSplit:
    """Images and labels of one split.

    Attributes:
        images: uint8 images, shape (N, 3, H, W), values 0..255.
        labels: class indices, shape (N,), int64.
    """

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4 or self.images.shape[1] != 3:
            raise ValueError("ClassSplit.images must be a uint8 tensor of shape (N, 3, H, W)")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError("ClassSplit.labels must have shape (N,) matching images")

    def __len__(self) -> int:
        return int(self.images.shape[0])


@dataclass(frozen=True)
class ClassificationDataset:
    """Train and test splits of one classification dataset, and its class names."""

    name: str
    train: ClassSplit
    test: ClassSplit
    classes: tuple[str, ...]

    task = "classification"

    @property
    def num_classes(self) -> int:
        """Number of classes: the size of the classifier."""
        return len(self.classes)

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of the images in pixels."""
        return int(self.train.images.shape[2]), int(self.train.images.shape[3])

    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and std of the train images on the [0, 1] scale."""
        x = self.train.images.to(torch.float64).div(255.0)
        mean, std = x.mean(dim=(0, 2, 3)), x.std(dim=(0, 2, 3)).clamp(min=1e-3)
        return tuple(round(float(v), 4) for v in mean), tuple(round(float(v), 4) for v in std)

    def summary(self) -> str:
        """Images per split and the image size."""
        h, w = self.image_size
        return (
            f"  {self.num_classes} classes, {h}x{w} px\n"
            f"  train {len(self.train):>6} images\n  test  {len(self.test):>6} images"
        )


# --- synthcls ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SynthClsConfig:
    """Size and difficulty of a synthcls dataset; every field is part of its cache key.

    Attributes:
        seed: generator seed; the same config always gives the same bytes.
        size: image side in pixels.
        train_per_class: training images per class.
        test_per_class: test images per class.
        noise_std: sensor noise std on the [0, 1] scale.
    """

    seed: int = 0
    size: int = 32
    train_per_class: int = 200
    test_per_class: int = 50
    noise_std: float = 0.06

    def __post_init__(self) -> None:
        if self.size < 8 or self.train_per_class < 1 or self.test_per_class < 1 or self.noise_std < 0:
            raise ValueError("synthcls needs size >= 8, train_per_class >= 1, test_per_class >= 1, noise_std >= 0")


SHAPES = ("disk", "square", "ring", "cross", "hbar", "vbar", "triangle", "diamond", "two-dots", "x")


def _shape_masks(u: torch.Tensor, v: torch.Tensor) -> list[torch.Tensor]:
    """Indicator of each class's shape on shape coordinates (u, v) in about [-1, 1]."""
    r = torch.sqrt(u**2 + v**2)
    return [
        r < 0.6,
        torch.maximum(u.abs(), v.abs()) < 0.5,
        (r > 0.35) & (r < 0.62),
        ((u.abs() < 0.16) & (v.abs() < 0.65)) | ((v.abs() < 0.16) & (u.abs() < 0.65)),
        (v.abs() < 0.2) & (u.abs() < 0.75),
        (u.abs() < 0.2) & (v.abs() < 0.75),
        (v < 0.5) & (v > 2 * u.abs() - 0.7),
        u.abs() + v.abs() < 0.65,
        ((u - 0.38) ** 2 + v**2 < 0.07) | ((u + 0.38) ** 2 + v**2 < 0.07),
        (((u - v).abs() < 0.22) | ((u + v).abs() < 0.22)) & (r < 0.75),
    ]


def _draw(labels: torch.Tensor, size: int, noise: float, g: torch.Generator) -> torch.Tensor:
    n = len(labels)
    grid = torch.linspace(-1, 1, size)
    yy, xx = torch.meshgrid(grid, grid, indexing="ij")
    p = torch.rand(n, 6, generator=g)
    scale = 0.6 + 0.35 * p[:, 0]
    theta = (p[:, 1] - 0.5) * 0.6  # +-0.3 rad keeps horizontal and vertical bars apart
    dx, dy = (p[:, 2] - 0.5) * 0.4, (p[:, 3] - 0.5) * 0.4
    xs = (xx[None] - dx[:, None, None]) / scale[:, None, None]
    ys = (yy[None] - dy[:, None, None]) / scale[:, None, None]
    cos, sin = torch.cos(theta)[:, None, None], torch.sin(theta)[:, None, None]
    u, v = cos * xs + sin * ys, -sin * xs + cos * ys
    masks = torch.stack(_shape_masks(u, v), 1)  # (n, classes, H, W)
    fg = masks[torch.arange(n), labels].float()[:, None]
    clutter = F.interpolate(torch.rand(n, 3, 4, 4, generator=g), size=(size, size), mode="bilinear")
    background = 0.35 * torch.rand(n, 3, 1, 1, generator=g) + 0.25 * clutter  # darker than any shape
    colour = 0.55 + 0.45 * torch.rand(n, 3, 1, 1, generator=g)
    img = fg * colour + (1 - fg) * background
    img = img + noise * torch.randn(img.shape, generator=g)
    return (img.clamp(0, 1) * 255).round().to(torch.uint8)


def generate_synthcls(cfg: SynthClsConfig) -> ClassificationDataset:
    """The synthcls dataset of `cfg` (deterministic in cfg)."""
    g = torch.Generator().manual_seed(cfg.seed)
    splits = []
    for per_class in (cfg.train_per_class, cfg.test_per_class):
        labels = torch.arange(len(SHAPES)).repeat_interleave(per_class)
        labels = labels[torch.randperm(len(labels), generator=g)]
        splits.append(ClassSplit(_draw(labels, cfg.size, cfg.noise_std, g), labels))
    return ClassificationDataset("synthcls", splits[0], splits[1], SHAPES)


# --- digits -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DigitsConfig:
    """How the scikit-learn digits are prepared; every field is part of its cache key.

    Attributes:
        size: upsampled image side in pixels (from 8).
        test_fraction: fraction of each class held out for the test split.
        seed: seed of the split.
    """

    size: int = 32
    test_fraction: float = 0.25
    seed: int = 0

    def __post_init__(self) -> None:
        if self.size < 8 or not 0.0 < self.test_fraction < 1.0:
            raise ValueError("digits needs size >= 8 and test_fraction in (0, 1)")


DIGITS_FILE = Path(__file__).with_name("data") / "digits.npz"
# sha256 of the images' bytes then the labels' bytes: the array scikit-learn 1.9.1's load_digits() returns
DIGITS_SHA256 = "87ff0c9e40dc7e2c0e34e7257799c2e3f3aec1a016363bb11cad869ec428a826"


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 1797 handwritten digits shipped with lfm-bench (uint8 8x8 images in 0..16, labels 0-9):
    the UCI optical-recognition test set as scikit-learn distributes it (CC BY 4.0; see
    robustbench_lfm/datasets/data/DIGITS.md), checked against its sha256."""
    with np.load(DIGITS_FILE, allow_pickle=False) as arrays:
        images, labels = arrays["images"], arrays["labels"]
    if hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest() != DIGITS_SHA256:
        raise ValueError(f"{DIGITS_FILE} is not the shipped digits array (sha256 differs); reinstall lfm-bench")
    return images, labels


def load_digits(cfg: DigitsConfig) -> ClassificationDataset:
    """The handwritten digits (`digits_arrays`), upsampled and split per class."""
    images_8x8, targets = digits_arrays()
    x = torch.from_numpy(images_8x8.astype(np.float32))[:, None] / 16.0  # 16 grey levels
    x = F.interpolate(x, size=(cfg.size, cfg.size), mode="bilinear", align_corners=False)
    images = (x.clamp(0, 1) * 255).round().to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    labels = torch.from_numpy(targets.astype(np.int64))
    g = torch.Generator().manual_seed(cfg.seed)
    test = torch.zeros(len(labels), dtype=torch.bool)
    for c in range(10):
        idx = (labels == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        test[idx[: math.ceil(cfg.test_fraction * len(idx))]] = True
    return ClassificationDataset(
        "digits",
        ClassSplit(images[~test], labels[~test]),
        ClassSplit(images[test], labels[test]),
        tuple(str(d) for d in range(10)),
    )


# --- cifar10 ----------------------------------------------------------------------------------

CIFAR_FILES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch")
CIFAR_SUBDIRS = ("cifar-10-batches-py", "cifar10/cifar-10-batches-py", "cifar10", "")
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@dataclass(frozen=True)
class Cifar10Config:
    """CIFAR-10 has no options; the images are used at their native 32x32."""


def cifar_expected() -> str:
    """The layout, spelled out for error messages."""
    where = " or ".join(f"DIR/{d}" if d else "DIR itself" for d in CIFAR_SUBDIRS)
    return f"CIFAR-10 expects the python version's {', '.join(CIFAR_FILES)} in {where}"


def locate_cifar(root: Path) -> Path:
    """The folder holding the CIFAR-10 batches under `root`."""
    if not root.is_dir():
        raise DatasetFolderError(f"--data-root {str(root)!r} is not a folder; {cifar_expected()}")
    for sub in CIFAR_SUBDIRS:
        folder = root / sub
        if all((folder / f).is_file() for f in CIFAR_FILES):
            return folder
    raise DatasetFolderError(f"no CIFAR-10 batches under {str(root)!r}; {cifar_expected()}")


def cifar_fingerprint(root: Path) -> str:
    """Hash of the batch files' names, sizes and modification times (a changed file re-reads)."""
    folder = locate_cifar(root)
    stats = [(f, (folder / f).stat().st_size, (folder / f).stat().st_mtime_ns) for f in CIFAR_FILES]
    return content_hash(stats, 16)


class _ArraysOnly(pickle.Unpickler):
    """Rebuilds only what a CIFAR batch holds: builtins containers and numpy arrays."""

    ALLOWED: ClassVar[set[tuple[str, str]]] = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
        ("numpy.core.numeric", "_frombuffer"),  # protocol 5 pickles arrays as in-band buffers
        ("numpy._core.numeric", "_frombuffer"),
    }

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a CIFAR batch holds only arrays")
        return super().find_class(module, name)


def read_cifar_batch(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 images (N, 3, 32, 32), int64 labels) of one CIFAR-10 python batch file."""
    try:
        batch = _ArraysOnly(io.BytesIO(path.read_bytes()), encoding="bytes").load()
        data = np.asarray(_entry(batch, "data", path), dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(_entry(batch, "labels", path), dtype=np.int64)
    except (pickle.UnpicklingError, KeyError, ValueError, TypeError, EOFError) as err:
        raise DatasetFolderError(f"{path} is not a CIFAR-10 python batch ({err}); {cifar_expected()}") from None
    if len(labels) != len(data) or labels.min() < 0 or labels.max() > 9:
        raise DatasetFolderError(f"{path}: labels do not match the images or lie outside 0..9")
    return torch.from_numpy(data.copy()), torch.from_numpy(labels)


def _entry(batch: object, key: str, path: Path) -> object:
    """`batch[key]` under the distributed bytes key or a re-pickled str key; the keys found otherwise."""
    if not isinstance(batch, dict):
        raise DatasetFolderError(f"{path} holds a {type(batch).__name__}, not a dict; {cifar_expected()}")
    for name in (key.encode(), key):
        if name in batch:
            return batch[name]
    found = ", ".join(repr(k) for k in list(batch)[:6]) or "none"
    raise DatasetFolderError(f"{path} has no {key!r} entry (bytes or str key; its keys: {found}); {cifar_expected()}")


def load_cifar10(root: Path) -> ClassificationDataset:
    """CIFAR-10's 50,000 train and 10,000 test images from the folder under `root`."""
    folder = locate_cifar(root)
    parts = [read_cifar_batch(folder / f) for f in CIFAR_FILES]
    train = ClassSplit(torch.cat([p[0] for p in parts[:5]]), torch.cat([p[1] for p in parts[:5]]))
    return ClassificationDataset("cifar10", train, ClassSplit(*parts[5]), CIFAR_CLASSES)
