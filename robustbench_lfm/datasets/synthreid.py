"""`synthreid`: procedurally generated pedestrian crops for re-ID, the embedded default dataset.

Every image is drawn, fully vectorized over the batch, from three layers of randomness:

* identity (fixed for a person id): upper and lower clothing colours drawn from a small palette
  with jitter, an upper-body texture (solid, horizontal or vertical stripes, checks, two-tone),
  short or long sleeves, trousers or shorts, skin and hair tone, hair length, height and build,
  an optional bag on the left or right side, and shoe colour;
* camera (fixed for a camera id): illumination gain and colour cast, a background (wall and floor
  colours, texture and horizon height), blur, scale and aspect jitter, and a viewpoint: cameras
  that see people from behind mirror the image, which moves the bag to the other side;
* image: pose jitter (position, stride, arm swing), a random partial occlusion, sensor noise.

Splits follow Market-1501 (docs/reference/reid.md part A): disjoint train and test identities, every
identity seen by 2 or more cameras, query = one image per (test identity, camera), gallery = the
other test images plus distractor identities that never match a query.

Geometry is in units of the image height (y in [0, 1], x in [0, W/H]), so any image size works.
Generation of the default (about 3,700 images of 64x32) takes about a second on a 2-core CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from robustbench_lfm.datasets.base import ReIDDataset, ReIDSplit

# Clothing palette (RGB in [0, 1]); identities share entries, so colour alone rarely identifies.
PALETTE = torch.tensor(
    [
        [0.10, 0.10, 0.12],
        [0.85, 0.85, 0.82],
        [0.55, 0.55, 0.57],
        [0.70, 0.12, 0.12],
        [0.12, 0.22, 0.55],
        [0.15, 0.45, 0.20],
        [0.85, 0.70, 0.15],
        [0.45, 0.28, 0.15],
        [0.55, 0.20, 0.55],
        [0.90, 0.45, 0.15],
        [0.35, 0.60, 0.80],
        [0.80, 0.55, 0.60],
    ]
)
NUM_TEXTURES = 5  # solid, horizontal stripes, vertical stripes, checks, two-tone

# Domain "b": another population seen by other cameras, for generalization across domains
# (--test-dataset synthreid:domain=b). Clothing from a faded palette (each colour a quarter of the way
# to its grey), cameras with a dimmer gain range and stronger colour casts, brighter walls, lower
# horizons and more blur. Much stronger shifts (the cameras alone at about twice these offsets) left
# the default plain model at 10% Rank-1, too near chance to compare models by.
PALETTE_B = 0.75 * PALETTE + 0.25 * PALETTE.mean(dim=1, keepdim=True)
# Per camera attribute, (low, high) of its uniform draw, in the order drawn.
CAMERA_RANGES = {
    "a": {"gain": (0.65, 1.25), "cast": (0.75, 1.25), "wall": (0.2, 0.8), "floor": (0.15, 0.6),
          "horizon": (0.6, 0.85), "blur": (0.0, 0.9), "scale": (0.88, 1.08), "aspect": (0.85, 1.15)},
    "b": {"gain": (0.55, 1.15), "cast": (0.7, 1.3), "wall": (0.3, 0.85), "floor": (0.2, 0.65),
          "horizon": (0.55, 0.8), "blur": (0.2, 1.1), "scale": (0.86, 1.06), "aspect": (0.87, 1.17)},
}  # fmt: skip
PALETTES = {"a": PALETTE, "b": PALETTE_B}


@dataclass(frozen=True)
class SynthReIDConfig:
    """Size and difficulty of a synthreid dataset; every field is part of its cache key.

    Attributes:
        seed: generator seed; the same config always gives the same bytes.
        height: image height in pixels.
        width: image width in pixels.
        train_ids: number of training identities.
        test_ids: number of test identities (each gives query and gallery images).
        distractor_ids: gallery-only identities that match no query.
        cameras: number of cameras.
        min_cameras: fewest cameras an identity is seen by (>= 2 so every query has a match).
        max_cameras: most cameras an identity is seen by.
        images_per_visit: images of an identity per camera that sees it (min, max).
        colour_jitter: per-identity colour jitter around its palette entry (std, [0, 1] scale).
        occlusion_p: probability that an image has a random occluding rectangle.
        noise_std: sensor noise std on the [0, 1] scale.
        domain: `a` (the default population and cameras) or `b` (another palette and other
            cameras: `PALETTE_B`, `CAMERA_RANGES`), for training on one and testing on the other.
    """

    ADDED_DEFAULTS: ClassVar[dict[str, Any]] = {"domain": "a"}  # left out of keys at their default

    seed: int = 0
    height: int = 64
    width: int = 32
    train_ids: int = 120
    test_ids: int = 75
    distractor_ids: int = 40
    cameras: int = 6
    min_cameras: int = 2
    max_cameras: int = 5
    images_per_visit: tuple[int, int] = (2, 7)
    colour_jitter: float = 0.08
    occlusion_p: float = 0.5
    noise_std: float = 0.03
    domain: str = "a"

    def __post_init__(self) -> None:
        if self.domain not in PALETTES:
            raise ValueError(f"synthreid domain={self.domain!r} is not one of {', '.join(PALETTES)}")
        if not 2 <= self.min_cameras <= self.max_cameras <= self.cameras:
            raise ValueError("synthreid needs 2 <= min_cameras <= max_cameras <= cameras")
        if self.height < 16 or self.width < 8:
            raise ValueError("synthreid images must be at least 16x8 pixels")
        if min(self.train_ids, self.test_ids) < 2 or self.distractor_ids < 0:
            raise ValueError("synthreid needs >= 2 train and test identities, >= 0 distractors")
        lo, hi = self.images_per_visit
        if not 1 <= lo <= hi:
            raise ValueError("synthreid images_per_visit must be (min, max) with 1 <= min <= max")


def _u(g: torch.Generator, n: int, lo: float, hi: float, *shape: int) -> torch.Tensor:
    """n (x shape) uniform draws in [lo, hi)."""
    return torch.rand(n, *shape, generator=g) * (hi - lo) + lo


def _randint(g: torch.Generator, n: int, lo: int, hi: int) -> torch.Tensor:
    """n integer draws in [lo, hi] inclusive."""
    return torch.randint(lo, hi + 1, (n,), generator=g)


def _palette_colour(g: torch.Generator, n: int, jitter: float, palette: torch.Tensor = PALETTE) -> torch.Tensor:
    """n clothing colours: a palette entry plus Gaussian jitter, shape (n, 3)."""
    idx = torch.randint(0, len(palette), (n,), generator=g)
    return (palette[idx] + jitter * torch.randn(n, 3, generator=g)).clamp(0.02, 0.98)


def _identity_attributes(g: torch.Generator, n: int, cfg: SynthReIDConfig) -> dict[str, torch.Tensor]:
    """Fixed appearance of n identities (one row each)."""
    skin_base = torch.tensor([[0.95, 0.80, 0.68], [0.80, 0.60, 0.45], [0.45, 0.32, 0.22]])
    hair_base = torch.tensor([[0.08, 0.06, 0.05], [0.35, 0.22, 0.10], [0.75, 0.62, 0.35]])
    return {
        "upper": _palette_colour(g, n, cfg.colour_jitter, PALETTES[cfg.domain]),
        "upper2": _palette_colour(g, n, cfg.colour_jitter, PALETTES[cfg.domain]),
        "lower": _palette_colour(g, n, cfg.colour_jitter, PALETTES[cfg.domain]),
        "shoes": _palette_colour(g, n, cfg.colour_jitter, PALETTES[cfg.domain]),
        "bag_colour": _palette_colour(g, n, cfg.colour_jitter, PALETTES[cfg.domain]),
        "texture": torch.randint(0, NUM_TEXTURES, (n,), generator=g),
        "stripe_freq": _u(g, n, 3.0, 7.0),
        "long_sleeves": torch.rand(n, generator=g) < 0.6,
        "shorts": torch.rand(n, generator=g) < 0.25,
        "skin": skin_base[torch.randint(0, 3, (n,), generator=g)] * _u(g, n, 0.9, 1.1, 1),
        "hair": hair_base[torch.randint(0, 3, (n,), generator=g)] * _u(g, n, 0.8, 1.2, 1),
        "long_hair": torch.rand(n, generator=g) < 0.35,
        "height": _u(g, n, 0.78, 0.92),
        "build": _u(g, n, 0.8, 1.25),
        "torso": _u(g, n, 0.34, 0.42),
        # bag side: 0 none, -1 left, +1 right (in the person's front view)
        "bag": torch.randint(-1, 2, (n,), generator=g).float(),
        "bag_size": _u(g, n, 0.8, 1.3),
    }


def _camera_attributes(g: torch.Generator, cfg: SynthReIDConfig) -> dict[str, torch.Tensor]:
    """Fixed nuisance of each camera (one row each)."""
    c, r = cfg.cameras, CAMERA_RANGES[cfg.domain]
    cast = _u(g, c, *r["cast"], 3)
    return {
        "gain": _u(g, c, *r["gain"]),
        "cast": cast / cast.mean(dim=1, keepdim=True),
        "wall": _u(g, c, *r["wall"], 3),
        "floor": _u(g, c, *r["floor"], 3),
        "horizon": _u(g, c, *r["horizon"]),
        "bg_texture": torch.randint(0, 3, (c,), generator=g),
        "blur": _u(g, c, *r["blur"]),
        "scale": _u(g, c, *r["scale"]),
        "aspect": _u(g, c, *r["aspect"]),
        "back_view": torch.rand(c, generator=g) < 0.5,
    }


def _visits(g: torch.Generator, pids: torch.Tensor, cfg: SynthReIDConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Which cameras see each identity and how often: per-image (pid, camid)."""
    n = len(pids)
    n_cams = _randint(g, n, cfg.min_cameras, cfg.max_cameras)
    order = torch.rand(n, cfg.cameras, generator=g).argsort(dim=1)
    seen = torch.arange(cfg.cameras)[None, :] < n_cams[:, None]  # first n_cams of a random order
    counts = _randint(g, n * cfg.cameras, *cfg.images_per_visit).view(n, cfg.cameras) * seen
    pid_rep = pids[:, None].expand(n, cfg.cameras).flatten().repeat_interleave(counts.flatten())
    cam_rep = order.flatten().repeat_interleave(counts.flatten())
    return pid_rep, cam_rep


def _box(yy: torch.Tensor, xx: torch.Tensor, y0, y1, x0, x1) -> torch.Tensor:
    """Boolean (N, H, W) mask of the axis-aligned boxes [y0, y1) x [x0, x1) (each (N,))."""
    v = (yy >= y0[:, None, None]) & (yy < y1[:, None, None])
    return v & (xx >= x0[:, None, None]) & (xx < x1[:, None, None])


def _paint(img: torch.Tensor, mask: torch.Tensor, colour: torch.Tensor) -> torch.Tensor:
    """Paint `colour` ((N, 3) or (N, 3, H, W)) into `img` (N, 3, H, W) where mask (N, H, W)."""
    if colour.dim() == 2:
        colour = colour[:, :, None, None]
    return torch.where(mask[:, None], colour, img)


def _upper_texture(ident: dict, yy: torch.Tensor, xx: torch.Tensor, y_top: torch.Tensor) -> torch.Tensor:
    """Per-image upper-body texture image (N, 3, H, W) mixing the two upper colours."""
    f = ident["stripe_freq"][:, None, None] * 6.283
    rel_y = yy - y_top[:, None, None]
    hstripe = torch.sin(f * rel_y) > 0
    vstripe = torch.sin(f * xx) > 0
    checks = hstripe ^ vstripe
    two_tone = rel_y > 0.28
    solid = torch.zeros_like(hstripe)
    t = ident["texture"][:, None, None]
    second = torch.stack([solid, hstripe, vstripe, checks, two_tone]).gather(0, t[None].expand(1, *hstripe.shape))[0]
    a, b = ident["upper"][:, :, None, None], ident["upper2"][:, :, None, None]
    return torch.where(second[:, None], b, a)


def _render(ident: dict, cam: dict, g: torch.Generator, cfg: SynthReIDConfig) -> torch.Tensor:
    """Draw N pedestrians; `ident` and `cam` hold one row per image. Returns float (N, 3, H, W)."""
    n, h, w = len(ident["height"]), cfg.height, cfg.width
    ar = w / h
    yy = ((torch.arange(h) + 0.5) / h)[None, :, None].expand(n, h, w)
    xx = ((torch.arange(w) + 0.5) / h)[None, None, :].expand(n, h, w)

    img = _background(cam, g, yy, xx, n)
    body_h = ident["height"] * cam["scale"] * _u(g, n, 0.95, 1.05)
    build = ident["build"] * cam["aspect"]
    cx = ar / 2 + _u(g, n, -0.05, 0.05) * ar
    y_top = (1 - body_h) / 2 + _u(g, n, -0.04, 0.04)
    head_r = 0.065 * body_h
    y_neck = y_top + 2 * head_r
    y_hip = y_neck + ident["torso"] * body_h
    y_feet = y_top + body_h
    half_t = 0.085 * build * ar * 2
    stride = _u(g, n, 0.0, 0.05) * ar
    leg_w = 0.05 * build * ar * 2

    # legs (trousers, or skin below the knee for shorts), then shoes
    knee = y_hip + 0.45 * (y_feet - y_hip)
    for side in (-1.0, 1.0):
        lx = cx + side * (leg_w * 0.55 + stride)
        leg = _box(yy, xx, y_hip, y_feet, lx - leg_w / 2, lx + leg_w / 2)
        img = _paint(img, leg, ident["lower"])
        lower_leg = leg & (yy >= knee[:, None, None]) & ident["shorts"][:, None, None]
        img = _paint(img, lower_leg, ident["skin"])
        shoe = _box(yy, xx, y_feet - 0.035, y_feet, lx - leg_w / 2 - 0.01, lx + leg_w / 2 + 0.01)
        img = _paint(img, shoe, ident["shoes"])

    # torso with texture, arms with a swing, head and hair
    torso = _box(yy, xx, y_neck, y_hip, cx - half_t, cx + half_t)
    img = _paint(img, torso, _upper_texture(ident, yy, xx, y_neck))
    swing = _u(g, n, -0.03, 0.03)
    arm_w = 0.35 * half_t
    for side in (-1.0, 1.0):
        ax = cx + side * (half_t + arm_w / 2)
        arm = _box(yy, xx, y_neck + 0.01, y_hip + swing * side, ax - arm_w / 2, ax + arm_w / 2)
        sleeve_end = torch.where(ident["long_sleeves"], y_hip, y_neck + 0.35 * (y_hip - y_neck))
        img = _paint(img, arm & (yy < sleeve_end[:, None, None]), ident["upper"])
        img = _paint(img, arm & (yy >= sleeve_end[:, None, None]), ident["skin"])
    hy = y_top + head_r
    head = ((yy - hy[:, None, None]) ** 2 + ((xx - cx[:, None, None]) * 1.2) ** 2) < (head_r[:, None, None] ** 2)
    img = _paint(img, head, ident["skin"])
    hair_line = torch.where(ident["long_hair"], hy + 1.6 * head_r, hy - 0.2 * head_r)
    hair_box = _box(yy, xx, y_top - 0.01, hair_line, cx - 1.05 * head_r, cx + 1.05 * head_r)
    hair = (head & (yy < (hy - 0.2 * head_r)[:, None, None])) | (hair_box & ~head & ident["long_hair"][:, None, None])
    img = _paint(img, hair, ident["hair"])

    # bag beside the torso; the camera's mirroring below moves it to the other side
    bag_w = 0.06 * ident["bag_size"]
    bx = cx + ident["bag"] * (half_t + arm_w + bag_w / 2)
    by = y_neck + 0.45 * (y_hip - y_neck)
    bag = _box(yy, xx, by, by + 0.12 * ident["bag_size"], bx - bag_w / 2, bx + bag_w / 2)
    img = _paint(img, bag & (ident["bag"] != 0)[:, None, None], ident["bag_colour"])

    img = _occlude(img, g, yy, xx, cfg)
    return torch.where(cam["back_view"][:, None, None, None], img.flip(-1), img)


def _background(cam: dict, g: torch.Generator, yy: torch.Tensor, xx: torch.Tensor, n: int) -> torch.Tensor:
    """Camera backgrounds: wall above the horizon, floor below, with a per-camera texture."""
    horizon = cam["horizon"][:, None, None] + _u(g, n, -0.03, 0.03)[:, None, None]
    phase = _u(g, n, 0.0, 6.283)[:, None, None]
    tex = cam["bg_texture"][:, None, None]
    ripple = torch.where(
        tex == 0,
        0.0,
        torch.where(tex == 1, 0.08 * torch.sin(40 * yy + phase), 0.08 * torch.sin(30 * xx + phase)),
    )
    wall = cam["wall"][:, :, None, None] * (1 + ripple[:, None])
    floor = cam["floor"][:, :, None, None] * (1 - 0.3 * (yy - horizon).clamp(min=0))[:, None]
    return torch.where((yy < horizon)[:, None], wall, floor)


def _occlude(img: torch.Tensor, g: torch.Generator, yy, xx, cfg: SynthReIDConfig) -> torch.Tensor:
    """With probability occlusion_p, cover a random side or bottom part of the image."""
    n = img.shape[0]
    ar = cfg.width / cfg.height
    on = torch.rand(n, generator=g) < cfg.occlusion_p
    oh = _u(g, n, 0.15, 0.45)
    ow = _u(g, n, 0.25, 0.6) * ar
    from_bottom = torch.rand(n, generator=g) < 0.5
    y0 = torch.where(from_bottom, 1 - oh, _u(g, n, 0.0, 0.6))
    x0 = torch.where(
        from_bottom,
        _u(g, n, 0.0, ar) - ow / 2,
        torch.where(torch.rand(n, generator=g) < 0.5, -0.01, ar - ow),
    )
    box = _box(yy, xx, y0, y0 + oh, x0, x0 + ow) & on[:, None, None]
    return _paint(img, box, _u(g, n, 0.05, 0.95, 3))


def _camera_effects(img: torch.Tensor, camids: torch.Tensor, cam: dict, g, cfg) -> torch.Tensor:
    """Camera gain and colour cast, per-camera Gaussian blur, then sensor noise."""
    img = img * (cam["gain"][camids][:, None, None, None] * cam["cast"][camids][:, :, None, None])
    for c in range(cfg.cameras):  # one depthwise blur per camera, not per pixel
        sel = camids == c
        sigma = float(cam["blur"][c])
        if sel.any() and sigma > 0.05:
            img[sel] = _gaussian_blur(img[sel], sigma)
    img = img + cfg.noise_std * torch.randn(img.shape, generator=g)
    return img.clamp(0, 1)


def _gaussian_blur(img: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with a 5-tap kernel and replicate padding."""
    t = torch.arange(-2, 3, dtype=torch.float32)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    c = img.shape[1]
    x = F.pad(img, (2, 2, 2, 2), mode="replicate")
    x = F.conv2d(x, k.view(1, 1, 1, 5).expand(c, 1, 1, 5), groups=c)
    return F.conv2d(x, k.view(1, 1, 5, 1).expand(c, 1, 5, 1), groups=c)


def _draw_split(g, pids, ident_all, cam_all, cfg) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images of the given identities as seen by their cameras: (uint8 images, pids, camids)."""
    pid_img, cam_img = _visits(g, pids, cfg)
    return render(g, pid_img, cam_img, ident_all, cam_all, cfg), pid_img, cam_img


def identities(g: torch.Generator, n: int, cfg: SynthReIDConfig) -> dict[str, torch.Tensor]:
    """Appearance of n identities, one row each (row i is identity i)."""
    return _identity_attributes(g, n, cfg)


def cameras(g: torch.Generator, cfg: SynthReIDConfig) -> dict[str, torch.Tensor]:
    """Nuisance of each of cfg.cameras cameras, one row each."""
    return _camera_attributes(g, cfg)


def render(
    g: torch.Generator,
    identity: torch.Tensor,
    camera: torch.Tensor,
    ident_all: dict[str, torch.Tensor],
    cam_all: dict[str, torch.Tensor],
    cfg: SynthReIDConfig,
) -> torch.Tensor:
    """uint8 (N, 3, height, width) images of identity rows `identity` seen by 0-based cameras `camera`."""
    ident = {k: v[identity] for k, v in ident_all.items()}
    cam = {k: v[camera] for k, v in cam_all.items()}
    img = _render(ident, cam, g, cfg)
    img = _camera_effects(img, camera, cam_all, g, cfg)
    return (img * 255).round().to(torch.uint8)


def _first_per_pid_cam(pids: torch.Tensor, camids: torch.Tensor) -> torch.Tensor:
    """Boolean mask of the first image of every (pid, camid) pair."""
    key = pids * 1000 + camids
    _, inverse = torch.unique(key, return_inverse=True)
    first = torch.full((int(inverse.max()) + 1,), len(key), dtype=torch.long)
    first = first.scatter_reduce(0, inverse, torch.arange(len(key)), reduce="amin")
    mask = torch.zeros(len(key), dtype=torch.bool)
    mask[first] = True
    return mask


def generate(cfg: SynthReIDConfig) -> ReIDDataset:
    """Generate the dataset for `cfg`; deterministic in cfg (same config, same bytes)."""
    g = torch.Generator().manual_seed(cfg.seed)
    total = cfg.train_ids + cfg.test_ids + cfg.distractor_ids
    ident = _identity_attributes(g, total + 1, cfg)  # row 0 unused: pids start at 1
    cam = _camera_attributes(g, cfg)
    pids = torch.randperm(total, generator=g) + 1
    train_p, test_p = pids[: cfg.train_ids], pids[cfg.train_ids : cfg.train_ids + cfg.test_ids]
    distract_p = pids[cfg.train_ids + cfg.test_ids :]

    train = ReIDSplit(*_draw_split(g, train_p.sort().values, ident, cam, cfg))
    t_img, t_pid, t_cam = _draw_split(g, test_p.sort().values, ident, cam, cfg)
    is_query = _first_per_pid_cam(t_pid, t_cam)
    query = ReIDSplit(t_img[is_query], t_pid[is_query], t_cam[is_query])
    gal = [t_img[~is_query]], [t_pid[~is_query]], [t_cam[~is_query]]
    if cfg.distractor_ids:
        d_img, d_pid, d_cam = _draw_split(g, distract_p.sort().values, ident, cam, cfg)
        for parts, extra in zip(gal, (d_img, d_pid, d_cam), strict=True):
            parts.append(extra)
    gallery = ReIDSplit(*(torch.cat(parts) for parts in gal))
    return ReIDDataset("synthreid", train, query, gallery)
