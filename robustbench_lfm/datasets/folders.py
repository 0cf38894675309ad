"""Market-1501 and DukeMTMC-reID read from their published folder layouts (docs/reference/reid.md part A).

Both ship three folders of JPEGs, `bounding_box_train/`, `query/` and `bounding_box_test/` (the
gallery), whose file names start with the person id and the camera: `0002_c1s1_000451_03.jpg`
(Market, cameras 1-6) and `0001_c2_f0046182.jpg` (Duke, cameras 1-8). The parser follows torchreid,
fast-reid and the strong baseline:

1. the pid and camera come from the leading "signed integer, `_c`, digit" of each `*.jpg` name;
2. pid -1 (Market's junk boxes) is dropped from every split;
3. pid 0 (Market's distractors) stays in the gallery as an id that matches no query;
4. cameras become 0-based; train pids are relabelled by `ReIDDataset.train_labels`.

Images are decoded with Pillow in parallel DataLoader workers and resized (bilinear, as torchreid)
to the model's input size in pixels, (height, width), e.g. 256x128 for `resnet50`. Expected counts
after parsing: Market train 751 ids / 12,936 images, query 750 / 3,368, gallery 751 / 15,913;
Duke train 702 / 16,522, query 702 / 2,228, gallery 1,110 / 17,661.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from robustbench_lfm.datasets.base import ReIDDataset, ReIDSplit
from robustbench_lfm.hashing import content_hash

SPLIT_DIRS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
_NAME = re.compile(r"^(-?\d+)_c(\d)")


class DatasetFolderError(ValueError):
    """A dataset folder is missing or does not have the published layout."""


@dataclass(frozen=True)
class FolderLayout:
    """Where a dataset's folder may sit under --data-root and how its file names read.

    Attributes:
        name: the registry name.
        title: the dataset's name in messages.
        subdirs: folder names tried under the root, in order ("" = the root itself).
        cameras: number of cameras; camera digits run 1..cameras.
        example: a file name of the dataset, for messages.
        max_pid: the largest valid pid, or None for no bound.
    """

    name: str
    title: str
    subdirs: tuple[str, ...]
    cameras: int
    example: str
    max_pid: int | None

    def expected(self) -> str:
        """The layout, spelled out for error messages."""
        where = " or ".join(f"DIR/{d}" if d else "DIR itself" for d in self.subdirs)
        dirs = ", ".join(f"{d}/" for d in SPLIT_DIRS.values())
        return f"{self.title} expects {dirs} of JPEGs named like {self.example} in {where}"


MARKET1501 = FolderLayout(
    "market1501",
    "Market-1501",
    ("Market-1501-v15.09.15", "market1501/Market-1501-v15.09.15", "market1501", ""),
    cameras=6,
    example="0002_c1s1_000451_03.jpg",
    max_pid=1501,
)
DUKEMTMC = FolderLayout(
    "dukemtmc",
    "DukeMTMC-reID",
    ("DukeMTMC-reID", "dukemtmc-reid/DukeMTMC-reID", "dukemtmc-reid", ""),
    cameras=8,
    example="0001_c2_f0046182.jpg",
    max_pid=None,
)


@dataclass(frozen=True)
class FolderConfig:
    """Options of a folder dataset.

    Attributes:
        height, width: size in pixels the images are resized to; 0 = the backbone's input size
            (the command line fills it in before anything is loaded).
    """

    height: int = 0
    width: int = 0

    def __post_init__(self) -> None:
        if self.height < 0 or self.width < 0:
            raise ValueError(f"height and width must be positive pixel counts, got {self.height}x{self.width}")


@dataclass(frozen=True)
class Entry:
    """One image file with its parsed pid and 0-based camera."""

    path: Path
    pid: int
    camid: int


def locate(root: Path, layout: FolderLayout) -> Path:
    """The dataset folder under `root` (the first candidate holding all three split folders)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetFolderError(f"--data-root {str(root)!r} is not a directory; {layout.expected()}")
    for sub in layout.subdirs:
        folder = root / sub if sub else root
        if all((folder / d).is_dir() for d in SPLIT_DIRS.values()):
            return folder
    raise DatasetFolderError(f"no {layout.title} folder found under {str(root)!r}; {layout.expected()}")


def scan(folder: Path, layout: FolderLayout) -> dict[str, list[Entry]]:
    """Parse every split folder into entries (junk pid -1 dropped), checking names and ranges."""
    splits = {split: _scan_split(folder / d, layout) for split, d in SPLIT_DIRS.items()}
    for split, entries in splits.items():
        if not entries:
            raise DatasetFolderError(
                f"{folder / SPLIT_DIRS[split]} holds no usable image (junk pid -1 is dropped); {layout.expected()}"
            )
    return splits


def _scan_split(folder: Path, layout: FolderLayout) -> list[Entry]:
    entries, bad, unreadable = [], [], []
    for path in sorted(folder.glob("*.jpg")):
        if not path.is_file():  # a directory named x.jpg, a dangling link, a symlink loop
            unreadable.append(path.name)
            continue
        m = _NAME.match(path.name)
        if m is None:
            bad.append(path.name)
            continue
        pid, cam = int(m.group(1)), int(m.group(2))
        if pid == -1:
            continue  # junk box: no effect on the ranking
        if pid < 0 or (layout.max_pid is not None and pid > layout.max_pid) or not 1 <= cam <= layout.cameras:
            bad.append(path.name)
            continue
        entries.append(Entry(path, pid, cam - 1))
    if unreadable:
        raise DatasetFolderError(
            f"{folder}: {len(unreadable)} entr(y/ies) named *.jpg are not readable files: {_shown(unreadable)}; "
            "remove them or point --data-root at a clean copy"
        )
    if bad:
        shown = _shown(bad)
        raise DatasetFolderError(
            f"{folder}: {len(bad)} file name(s) do not parse as pid_cCAMERA with camera 1..{layout.cameras}: "
            f"{shown}; {layout.expected()}"
        )
    return entries


def _shown(names: list[str]) -> str:
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def fingerprint(root: Path, layout: FolderLayout) -> str:
    """A hash of the folder's file names, sizes and modification times: changes when any file does."""
    folder = locate(root, layout)
    stats = []
    for d in SPLIT_DIRS.values():
        for path in sorted((folder / d).glob("*.jpg")):
            try:
                st = path.stat()
            except OSError as err:  # a symlink loop or a dangling link
                raise DatasetFolderError(f"{path} cannot be read ({err.strerror}); remove it") from None
            stats.append((f"{d}/{path.name}", st.st_size, st.st_mtime_ns))
    return content_hash(stats)


class _Images(Dataset):
    """Decodes and resizes one image per item (runs in DataLoader workers)."""

    def __init__(self, paths: list[Path], size: tuple[int, int]) -> None:
        self.paths, self.size = paths, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, bool]:
        """The image, and whether it decoded (a broken file is reported by `read_images`)."""
        try:
            with Image.open(self.paths[i]) as img:
                rgb = img.convert("RGB").resize((self.size[1], self.size[0]), Image.Resampling.BILINEAR)
        except (OSError, ValueError, Image.DecompressionBombError):  # zero bytes, truncated, not an image
            return torch.zeros(3, *self.size, dtype=torch.uint8), False
        return torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1), True


def read_images(paths: list[Path], size: tuple[int, int], workers: int, quiet: bool = True) -> torch.Tensor:
    """uint8 (N, 3, height, width) images, decoded in parallel by `workers` processes.

    Raises:
        DatasetFolderError: some files do not decode (named, with the fix); nothing is cached.
    """
    loader = DataLoader(_Images(paths, size), batch_size=64, num_workers=workers)
    out = torch.empty(len(paths), 3, *size, dtype=torch.uint8)
    broken: list[str] = []
    done = 0
    for batch, ok in tqdm(loader, desc="decode", unit="batch", disable=quiet, leave=False):
        out[done : done + len(batch)] = batch
        broken += [str(paths[done + i]) for i in (~ok).nonzero().flatten().tolist()]
        done += len(batch)
    if broken:
        raise DatasetFolderError(
            f"{len(broken)} image(s) cannot be decoded (empty, truncated or not images): {_shown(broken)}; "
            "replace or remove them"
        )
    return out


def build(layout: FolderLayout, cfg: FolderConfig, root: Path, quiet: bool = True) -> ReIDDataset:
    """Read the dataset at `root` with images resized to (cfg.height, cfg.width)."""
    if not cfg.height or not cfg.width:
        raise DatasetFolderError(f"{layout.name} needs an image size: pass {layout.name}:height=H,width=W")
    splits = scan(locate(root, layout), layout)
    workers = min(8, os.cpu_count() or 1)
    out = {}
    for split, entries in splits.items():
        images = read_images([e.path for e in entries], (cfg.height, cfg.width), workers, quiet)
        pids = torch.tensor([e.pid for e in entries], dtype=torch.long)
        camids = torch.tensor([e.camid for e in entries], dtype=torch.long)
        out[split] = ReIDSplit(images, pids, camids)
    return ReIDDataset(layout.name, **out)
