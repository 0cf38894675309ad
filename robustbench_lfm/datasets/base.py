"""Dataset containers shared by every re-ID dataset of the harness.

A re-ID dataset is three splits of (image, person id, camera id) in the Market-1501 convention
(docs/reference/reid.md part A): train identities are disjoint from test identities; the query holds at
most one image per (test identity, camera); the gallery holds the remaining test images plus
distractor identities that never match a query. Images are uint8 tensors (N, 3, H, W) so a split
costs one byte per pixel in memory; `as_float` turns a batch into the [0, 1] floats models expect.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ReIDSplit:
    """One split of a re-ID dataset.

    Attributes:
        images: uint8 images, shape (N, 3, H, W), values 0..255.
        pids: person ids, shape (N,), int64 (raw ids; train ids are relabelled by `train_labels`).
        camids: 0-based camera ids, shape (N,), int64.
    """

    images: torch.Tensor
    pids: torch.Tensor
    camids: torch.Tensor

    def __post_init__(self) -> None:
        n = self.images.shape[0]
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError("ReIDSplit.images must be a uint8 tensor of shape (N, 3, H, W)")
        if self.pids.shape != (n,) or self.camids.shape != (n,):
            raise ValueError("ReIDSplit.pids and .camids must have shape (N,) matching images")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_ids(self) -> int:
        """Number of distinct person ids in the split."""
        return int(torch.unique(self.pids).numel())


@dataclass(frozen=True)
class ReIDDataset:
    """Train, query and gallery splits of one re-ID dataset."""

    name: str
    train: ReIDSplit
    query: ReIDSplit
    gallery: ReIDSplit

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of the images in pixels."""
        return int(self.train.images.shape[2]), int(self.train.images.shape[3])

    @property
    def num_train_ids(self) -> int:
        """Number of training identities: the size of the ID classifier."""
        return self.train.num_ids

    def train_labels(self) -> torch.Tensor:
        """Train pids relabelled to 0..num_train_ids-1 (the classifier targets)."""
        return torch.unique(self.train.pids, return_inverse=True)[1]

    def summary(self) -> str:
        """A Market-style table of ids, images and cameras per split."""
        rows = [f"  {'subset':<8}| {'#ids':>6} | {'#images':>8} | {'#cams':>5}"]
        for name in ("train", "query", "gallery"):
            split: ReIDSplit = getattr(self, name)
            cams = int(torch.unique(split.camids).numel())
            rows.append(f"  {name:<8}| {split.num_ids:>6} | {len(split):>8} | {cams:>5}")
        return "\n".join(rows)


def as_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images in 0..255 to float32 in [0, 1] (the harness-wide pixel convention)."""
    return images.to(torch.float32).div_(255.0)
