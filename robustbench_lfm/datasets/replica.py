"""Full-size replicas of Market-1501 and DukeMTMC-reID: the published folder layout and split sizes,
rendered with synthreid's generator, so the whole folder path runs at real size with no download.

Published sizes (docs/reference/reid.md part A; Zheng et al. ICCV 2015, Ristani et al. 2016 / Zheng et al.
ICCV 2017):

* Market-1501: train 751 ids / 12,936 images; query 750 ids / 3,368 images; bounding_box_test 19,732
  files: 13,120 of the 750 test ids, 2,793 pid 0 distractors and 3,819 pid -1 junk boxes.
* DukeMTMC-reID: train 702 ids / 16,522 images; query 702 ids / 2,228 images; bounding_box_test
  17,661 images of 1,110 ids (the 702 test ids and 408 distractor ids).

After the parser drops junk, Market's gallery is 15,913 images of 751 ids (pid 0 counted) and Duke's
17,661 of 1,110. What the papers do not publish is chosen here and stated: images are spread as
evenly as the totals allow over each split's identities; a query identity is seen by 2 to all cameras
and has one query per camera that sees it (as both datasets' query sets); its gallery images go round
its cameras; Duke's 408 distractor ids are each seen by one camera; Market's distractors and junk
boxes are drawn from identities of their own (a junk box is always half covered, as a bad detection).

File names follow the datasets: `0002_c1s1_000451_03.jpg` and `-1_c3s2_000451_01.jpg` (Market),
`0001_c2_f0046182.jpg` (Duke). `scale` multiplies every count (ids and images) for small replicas.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from robustbench_lfm.datasets import synthreid


@dataclass(frozen=True)
class PublishedSizes:
    """A dataset's published split sizes and file-name convention.

    Attributes:
        folder: the dataset's top folder name, as unpacked from its archive.
        cameras: number of cameras.
        train: (ids, images) of bounding_box_train.
        query: (ids, images) of query.
        gallery_test: images of the query identities in bounding_box_test.
        distractor_ids: gallery-only identities with their own pid (Duke), each seen by one camera.
        distractor_images: images of those ids, or of pid 0 (Market) when distractor_ids is 0.
        junk: pid -1 images (Market), dropped by every parser.
        max_pid: pids are drawn from 1..max_pid.
    """

    name: str
    folder: str
    cameras: int
    train: tuple[int, int]
    query: tuple[int, int]
    gallery_test: int
    distractor_ids: int
    distractor_images: int
    junk: int
    max_pid: int

    def scaled(self, scale: float) -> PublishedSizes:
        """Every count times `scale` (rounded), keeping at least 2 ids per split and 2 images per id."""
        if not 0 < scale <= 1:
            raise ValueError(f"scale must be in (0, 1], got {scale}")
        train_ids, q_ids = (max(2, round(n * scale)) for n in (self.train[0], self.query[0]))
        train_images = max(2 * train_ids, round(self.train[1] * scale))
        queries = min(self.cameras * q_ids, max(2 * q_ids, round(self.query[1] * scale)))
        d_ids = round(self.distractor_ids * scale)
        d_images = max(d_ids, round(self.distractor_images * scale))
        return dataclasses.replace(
            self,
            train=(train_ids, train_images),
            query=(q_ids, queries),
            gallery_test=max(2 * q_ids, round(self.gallery_test * scale)),
            distractor_ids=d_ids,
            distractor_images=d_images,
            junk=round(self.junk * scale),
        )


MARKET = PublishedSizes("market1501", "Market-1501-v15.09.15", 6, (751, 12936), (750, 3368), 13120, 0, 2793, 3819, 1501)
DUKE = PublishedSizes("dukemtmc", "DukeMTMC-reID", 8, (702, 16522), (702, 2228), 11170, 408, 6491, 0, 7140)
SIZES = {s.name: s for s in (MARKET, DUKE)}


@dataclass
class Plan:
    """Every file of a replica: its split folder, pid, 0-based camera and identity row to render."""

    folder: list[str] = dataclasses.field(default_factory=list)
    pid: list[int] = dataclasses.field(default_factory=list)
    camera: list[int] = dataclasses.field(default_factory=list)
    identity: list[int] = dataclasses.field(default_factory=list)
    covered: list[bool] = dataclasses.field(default_factory=list)

    def add(self, folder: str, pid: int, camera: int, identity: int, covered: bool = False) -> None:
        """One more file."""
        self.folder.append(folder)
        self.pid.append(pid)
        self.camera.append(camera)
        self.identity.append(identity)
        self.covered.append(covered)

    def __len__(self) -> int:
        return len(self.pid)


def _spread(total: int, parts: int) -> list[int]:
    """`total` split into `parts` counts differing by at most one."""
    base, extra = divmod(total, parts)
    return [base + (i < extra) for i in range(parts)]


def _camera_counts(total: int, ids: int, cameras: int) -> list[int]:
    """Cameras per query identity (2..cameras) summing to `total` queries."""
    counts = _spread(total, ids)
    if min(counts) < 2 or max(counts) > cameras:
        raise ValueError(f"{total} queries cannot be spread over {ids} ids seen by 2..{cameras} cameras")
    return counts


def plan(sizes: PublishedSizes, seed: int = 0) -> Plan:
    """The replica's files: identities, cameras and splits with exactly `sizes`' counts."""
    rng = np.random.default_rng(seed)
    pids = rng.choice(
        np.arange(1, sizes.max_pid + 1), sizes.train[0] + sizes.query[0] + sizes.distractor_ids, replace=False
    )
    train_p = np.sort(pids[: sizes.train[0]])
    test_p = np.sort(pids[sizes.train[0] : sizes.train[0] + sizes.query[0]])
    out = Plan()
    for pid, n in zip(train_p, _spread(sizes.train[1], len(train_p)), strict=True):
        cams = rng.permutation(sizes.cameras)[: rng.integers(2, min(sizes.cameras, n) + 1)]
        for i in range(n):
            out.add("bounding_box_train", int(pid), int(cams[i % len(cams)]), int(pid))
    gallery = _spread(sizes.gallery_test, len(test_p))
    for pid, n_cams, n_gal in zip(
        test_p, _camera_counts(sizes.query[1], len(test_p), sizes.cameras), gallery, strict=True
    ):
        cams = rng.permutation(sizes.cameras)[:n_cams]
        for cam in cams:
            out.add("query", int(pid), int(cam), int(pid))
        for i in range(n_gal):
            out.add("bounding_box_test", int(pid), int(cams[i % n_cams]), int(pid))
    _distractors(out, sizes, pids[sizes.train[0] + sizes.query[0] :], rng)
    return out


def _distractors(out: Plan, sizes: PublishedSizes, own_pids: np.ndarray, rng: np.random.Generator) -> None:
    """Gallery-only images: Duke's distractor ids, Market's pid 0 distractors and pid -1 junk."""
    extra = sizes.max_pid + 1  # identity rows past every pid: one per Market distractor / junk box
    if sizes.distractor_ids:
        for pid, n in zip(np.sort(own_pids), _spread(sizes.distractor_images, len(own_pids)), strict=True):
            cam = int(rng.integers(sizes.cameras))
            for _ in range(n):
                out.add("bounding_box_test", int(pid), cam, int(pid))
    else:
        for i in range(sizes.distractor_images):
            out.add("bounding_box_test", 0, int(rng.integers(sizes.cameras)), extra + i)
    for i in range(sizes.junk):
        out.add("bounding_box_test", -1, int(rng.integers(sizes.cameras)), extra + sizes.distractor_images + i, True)


def file_names(sizes: PublishedSizes, p: Plan) -> list[str]:
    """Each planned file's name in the dataset's convention, frame numbers unique."""
    names = []
    for i, (pid, cam) in enumerate(zip(p.pid, p.camera, strict=True)):
        person = f"{pid:04d}" if pid >= 0 else str(pid)  # junk reads -1_c3s2_...
        if sizes.name == "market1501":
            names.append(f"{person}_c{cam + 1}s{1 + i % 6}_{i * 7:06d}_{1 + i % 9:02d}.jpg")
        else:
            names.append(f"{person}_c{cam + 1}_f{i * 13:07d}.jpg")
    return names


def _batches(n: int, size: int) -> Iterator[slice]:
    return (slice(s, min(s + size, n)) for s in range(0, n, size))


def write(
    root: Path, sizes: PublishedSizes, height: int = 128, width: int = 64, seed: int = 0, quality: int = 90
) -> Plan:
    """Render and write the replica under `root/<sizes.folder>`; returns its plan.

    Raises:
        FileExistsError: the dataset folder already exists (nothing is overwritten).
    """
    base = Path(root) / sizes.folder
    if base.exists():
        raise FileExistsError(f"{base} exists; remove it or pick another directory")
    p = plan(sizes, seed)
    names = file_names(sizes, p)
    for d in ("bounding_box_train", "query", "bounding_box_test"):
        (base / d).mkdir(parents=True)
    cfg = synthreid.SynthReIDConfig(seed=seed, height=height, width=width, cameras=sizes.cameras)
    g = torch.Generator().manual_seed(seed)
    ident = synthreid.identities(g, sizes.max_pid + 1 + sizes.distractor_images + sizes.junk, cfg)
    cams = synthreid.cameras(g, cfg)
    identity, camera, covered = (torch.tensor(v) for v in (p.identity, p.camera, p.covered))
    junk_cfg = dataclasses.replace(cfg, occlusion_p=1.0)
    for sl in _batches(len(p), 512):
        images = torch.empty(sl.stop - sl.start, 3, height, width, dtype=torch.uint8)
        cov = covered[sl]
        for mask, c in ((~cov, cfg), (cov, junk_cfg)):
            if bool(mask.any()):
                images[mask] = synthreid.render(g, identity[sl][mask], camera[sl][mask], ident, cams, c)
        for k, img in zip(range(sl.start, sl.stop), images.permute(0, 2, 3, 1).numpy(), strict=True):
            Image.fromarray(img).save(base / p.folder[k] / names[k], quality=quality)
    return p
