"""The 15 common corruptions of Hendrycks & Dietterich (ICLR 2019, "Benchmarking Neural Network
Robustness to Common Corruptions and Perturbations") at severities 1-5, in torch.

Threat model: no adversary; the images are degraded by noise (gaussian_noise, shot_noise,
impulse_noise), blur (defocus_blur, glass_blur, motion_blur, zoom_blur), weather (snow, frost,
fog) or digital processing (brightness, contrast, elastic_transform, pixelate,
jpeg_compression), at a severity from 1 (mild) to 5 (severe). Units: images in [0, 1]; the
result is truncated to 8 bits as the published sets store it (numpy's uint8 cast).

Two parameter tables, both from the reference code:

* `imagenet` — ImageNet-C's parameters as `imagecorruptions` packages them for any image size
  (Michaelis et al. 2019), the generator of Market-1501-C / DukeMTMC-reID-C (Chen et al.,
  NeurIPS 2021 Datasets and Benchmarks);
* `cifar` — CIFAR-10-C's (`make_cifar_c.py`), milder, written for 32x32 images; sizes the script
  fixes at 32 follow the image here.

Every function is batched over (N, 3, H, W) and draws its randomness (noise, angles, crops) from
the caller's generator, independently per image. `frost` blends the image with photographs of
frost in the reference; lfm-bench ships no such photographs, so the frost layer is drawn
procedurally (`frost_layer`: a cloudy fractal and bright ice needles, tinted pale blue), its
brightness, colour and texture matched to the statistics of the reference's crops (per-channel
mean 0.57/0.65/0.70 varying between photographs, within-crop std 0.075), then blended with the reference coefficients.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from robustbench_lfm.attacks import corruption_ops as ops

SEVERITIES = (1, 2, 3, 4, 5)
TABLES = ("imagenet", "cifar")
GROUPS = {
    "noise": ("gaussian_noise", "shot_noise", "impulse_noise"),
    "blur": ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur"),
    "weather": ("snow", "frost", "fog"),
    "digital": ("brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression"),
}
CORRUPTIONS = tuple(name for names in GROUPS.values() for name in names)

# Per corruption, per table: the five severities' parameters, as the reference code lists them.
PARAMS: dict[str, dict[str, list[Any]]] = {
    "gaussian_noise": {"imagenet": [0.08, 0.12, 0.18, 0.26, 0.38], "cifar": [0.04, 0.06, 0.08, 0.09, 0.10]},
    "shot_noise": {"imagenet": [60, 25, 12, 5, 3], "cifar": [500, 250, 100, 75, 50]},
    "impulse_noise": {"imagenet": [0.03, 0.06, 0.09, 0.17, 0.27], "cifar": [0.01, 0.02, 0.03, 0.05, 0.07]},
    "defocus_blur": {  # disk radius, anti-alias sigma
        "imagenet": [(3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)],
        "cifar": [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)],
    },
    "glass_blur": {  # sigma, largest displacement, iterations
        "imagenet": [(0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)],
        "cifar": [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)],
    },
    "motion_blur": {  # radius, sigma (pixels)
        "imagenet": [(10, 3), (15, 5), (15, 8), (15, 12), (20, 15)],
        "cifar": [(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)],
    },
    "zoom_blur": {  # zoom factors (numpy aranges, as written in the reference)
        "imagenet": [(1, 1.11, 0.01), (1, 1.16, 0.01), (1, 1.21, 0.02), (1, 1.26, 0.02), (1, 1.31, 0.03)],
        "cifar": [(1, 1.06, 0.01), (1, 1.11, 0.01), (1, 1.16, 0.01), (1, 1.21, 0.01), (1, 1.26, 0.01)],
    },
    "snow": {  # mean, std, zoom, threshold, blur radius, blur sigma, image weight
        "imagenet": [
            (0.1, 0.3, 3, 0.5, 10, 4, 0.8),
            (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
            (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
            (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
            (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55),
        ],
        "cifar": [
            (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
            (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
            (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
            (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
            (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
        ],
    },
    "frost": {  # image weight, frost weight
        "imagenet": [(1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)],
        "cifar": [(1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)],
    },
    "fog": {  # fog weight, fractal decay
        "imagenet": [(1.5, 2), (2.0, 2), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4)],
        "cifar": [(0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)],
    },
    "brightness": {"imagenet": [0.1, 0.2, 0.3, 0.4, 0.5], "cifar": [0.05, 0.1, 0.15, 0.2, 0.3]},
    "contrast": {"imagenet": [0.4, 0.3, 0.2, 0.1, 0.05], "cifar": [0.75, 0.5, 0.4, 0.3, 0.15]},
    "elastic_transform": {  # imagenet: alpha (x 250); cifar: alpha, sigma, affine jitter (x the side)
        "imagenet": [0.05, 0.065, 0.085, 0.1, 0.12],
        "cifar": [(0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05), (0.1, 0.03, 0.03)],
    },
    "pixelate": {"imagenet": [0.6, 0.5, 0.4, 0.3, 0.25], "cifar": [0.95, 0.9, 0.85, 0.75, 0.65]},
    "jpeg_compression": {"imagenet": [25, 18, 15, 10, 7], "cifar": [80, 65, 58, 50, 40]},
}


def corrupt(x: Tensor, name: str, severity: int, table: str, generator: torch.Generator) -> Tensor:
    """`x` (N, 3, H, W) in [0, 1] under corruption `name` at `severity` (1-5) with the parameters
    of `table`, truncated to 8 bits as the reference stores it.

    Raises:
        ValueError: an unknown corruption, table, or a severity outside 1-5.
    """
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r} (known: {', '.join(CORRUPTIONS)})")
    if table not in TABLES:
        raise ValueError(f"unknown corruption table {table!r} (known: {', '.join(TABLES)})")
    if isinstance(severity, bool) or severity not in SEVERITIES:
        raise ValueError(f"severity {severity!r} must be an integer from 1 to 5")
    c = PARAMS[name][table][severity - 1]
    out = FUNCTIONS[name](x.float(), c, table, generator)
    return out.clamp(0, 1).mul_(255).add_(1e-3).floor_().div_(255)  # numpy's uint8 cast truncates (clamp copies)


def _uniform(n: int, lo: float, hi: float, g: torch.Generator, device: torch.device) -> Tensor:
    return torch.rand(n, generator=g, device=device, dtype=torch.float64) * (hi - lo) + lo


# ---- noise ---------------------------------------------------------------------------------------


def gaussian_noise(x: Tensor, c: float, table: str, g: torch.Generator) -> Tensor:
    """x + N(0, c^2) per pixel and channel."""
    return x + c * torch.randn(x.shape, generator=g, device=x.device, dtype=x.dtype)


def shot_noise(x: Tensor, c: float, table: str, g: torch.Generator) -> Tensor:
    """Poisson photon noise: Poisson(c x) / c."""
    return torch.poisson(x.double() * c, generator=g).to(x.dtype) / c


def impulse_noise(x: Tensor, c: float, table: str, g: torch.Generator) -> Tensor:
    """Salt and pepper (skimage `random_noise(mode="s&p")`): a share c of the values set to 0 or 1,
    half each."""
    u = torch.rand(x.shape, generator=g, device=x.device)  # one draw: u < c hits, and u < c / 2 of those is salt
    return torch.where(u < c, (u < c / 2).to(x.dtype), x)


# ---- blur ------------------------------------------------------------------------------------------


def defocus_blur(x: Tensor, c: tuple[float, float], table: str, g: torch.Generator) -> Tensor:
    """Correlation with an anti-aliased disk (radius c[0] pixels)."""
    return ops.filter2d(x, ops.disk_kernel(*c))


def glass_blur(x: Tensor, c: tuple[float, int, int], table: str, g: torch.Generator) -> Tensor:
    """Gaussian blur, 8-bit truncation, then c[2] sweeps over the pixels (bottom right to top left)
    that each take the value of a random neighbour up to c[1] pixels away, then the blur again.

    The reference writes the step as a swap of two numpy views, which copies the neighbour into the
    pixel and leaves the neighbour as it was; this does the same, so the statistics match the
    published sets. The sweep is sequential (a value may travel several pixels); it runs per pixel
    position, vectorized over the batch."""
    sigma, delta, iterations = c
    x = torch.floor(ops.gaussian_filter(x, sigma).clamp(0, 1) * 255) / 255
    n, ch, h, w = x.shape
    flat = x.reshape(n, ch, h * w).clone()
    images = torch.arange(n, device=x.device)
    positions = [(r, col) for r in range(h - delta, delta, -1) for col in range(w - delta, delta, -1)]
    for _ in range(iterations):
        moves = torch.randint(-delta, delta, (len(positions), 2, n), generator=g, device=x.device)
        for (r, col), (dx, dy) in zip(positions, moves, strict=True):
            flat[:, :, r * w + col] = flat[images, :, (r + dy) * w + (col + dx)]
    return ops.gaussian_filter(flat.view(n, ch, h, w), sigma)


def motion_blur(x: Tensor, c: tuple[int, float], table: str, g: torch.Generator) -> Tensor:
    """A Gaussian line blur (radius c[0], sigma c[1] pixels) at an angle U(-45, 45) degrees."""
    return ops.motion_blur(x, int(c[0]), float(c[1]), _uniform(len(x), -45, 45, g, x.device))


def zoom_blur(x: Tensor, c: tuple[float, float, float], table: str, g: torch.Generator) -> Tensor:
    """The mean of the image and its centre zooms by each factor of the severity's range."""
    factors = np.arange(*c)
    out = sum(ops.clipped_zoom(x, float(f), centred=table == "cifar") for f in factors)
    return (x + out) / (len(factors) + 1)


# ---- weather ---------------------------------------------------------------------------------------


def snow(x: Tensor, c: tuple[float, ...], table: str, g: torch.Generator) -> Tensor:
    """A thresholded, zoomed Gaussian field motion-blurred into streaks, over a brightened image."""
    mean, std, zoom, threshold, radius, sigma, weight = c
    n, _, h, w = x.shape
    field = mean + std * torch.randn(n, 1, h, w, generator=g, device=x.device)
    field = ops.clipped_zoom(field, zoom, centred=table == "cifar")
    field = torch.where(field < threshold, 0.0, field).clamp(0, 1)
    if table == "cifar":  # the script blurs an 8-bit PNG of the layer
        field = torch.floor(field * 255) / 255
    field = ops.motion_blur(field, int(radius), float(sigma), _uniform(n, -135, -45, g, x.device))
    field = (torch.round(field * 255) / 255)[..., :h, :w]
    x = weight * x + (1 - weight) * torch.maximum(x, ops.gray(x) * 1.5 + 0.5)
    return x + field + field.flip(-2, -1)


def frost_layer(n: int, h: int, w: int, g: torch.Generator, device: torch.device) -> Tensor:
    """n procedural frost layers (N, 3, H, W) in [0, 1] standing in for the reference's photographs
    (see the module docstring): a per-image brightness, a cloudy fractal and bright ice needles."""
    size = ops.next_power_of_two(max(h, w))
    cloud = ops.plasma_fractal(n, size, 2.0, g, device)[:, None, :h, :w].float()
    needles = ops.motion_blur(
        (torch.rand(n, 1, h, w, generator=g, device=device) > 0.93).float(), 4, 2.0,
        _uniform(n, -90, 90, g, device),
    )  # fmt: skip
    texture = cloud - cloud.mean(dim=(2, 3), keepdim=True) + 2.5 * (needles - needles.mean(dim=(2, 3), keepdim=True))
    texture = texture / texture.std(dim=(2, 3), keepdim=True).clamp_min(1e-6)
    green = _uniform(n, 0.45, 0.85, g, device)
    red, blue = green + _uniform(n, -0.2, 0.03, g, device), green + _uniform(n, 0.03, 0.065, g, device)
    level = torch.stack([red, green, blue], 1).float().view(n, 3, 1, 1)
    return (level + 0.075 * texture).clamp(0, 1)


def frost(x: Tensor, c: tuple[float, float], table: str, g: torch.Generator) -> Tensor:
    """c[0] x + c[1] frost (values may exceed 1 before clipping, as in the reference)."""
    n, _, h, w = x.shape
    return c[0] * x + c[1] * frost_layer(n, h, w, g, x.device)


def fog(x: Tensor, c: tuple[float, float], table: str, g: torch.Generator) -> Tensor:
    """A diamond-square fractal added with weight c[0], then rescaled by max / (max + c[0])."""
    n, _, h, w = x.shape
    size = ops.next_power_of_two(max(h, w))
    haze = ops.plasma_fractal(n, size, float(c[1]), g, x.device)[:, None, :h, :w].to(x.dtype)
    peak = x.amax(dim=(1, 2, 3), keepdim=True)
    return (x + c[0] * haze) * peak / (peak + c[0])


# ---- digital ---------------------------------------------------------------------------------------


def brightness(x: Tensor, c: float, table: str, g: torch.Generator) -> Tensor:
    """HSV value + c."""
    return ops.brighten(x, c)


def contrast(x: Tensor, c: float, table: str, g: torch.Generator) -> Tensor:
    """Each channel pulled towards its image mean by the factor c."""
    means = x.mean(dim=(2, 3), keepdim=True)
    return (x - means) * c + means


def elastic_transform(x: Tensor, c: Any, table: str, g: torch.Generator) -> Tensor:
    """Pixels resampled along a smoothed random displacement field (CIFAR: after a random affine)."""
    n, _, h, w = x.shape
    if table == "cifar":
        alpha, sigma, jitter = (v * h for v in c)
        x = _random_affine(x, jitter, g)
        fields = 2 * torch.rand(n, 2, h, w, generator=g, device=x.device, dtype=torch.float64) - 1
        dx, dy = (ops.gaussian_filter(f, sigma, "symmetric", 3.0) * alpha for f in fields.split(1, 1))
    else:
        alpha, largest = 250 * c, 0.005 * h
        fields = (2 * torch.rand(n, 2, h, w, generator=g, device=x.device, dtype=torch.float64) - 1) * largest
        dx, dy = (ops.gaussian_filter(f, (0.01 * h, 0.01 * w), "symmetric", 3.0) * alpha for f in fields.split(1, 1))
    rows = torch.arange(h, device=x.device, dtype=torch.float64).view(1, h, 1) + dy[:, 0]
    cols = torch.arange(w, device=x.device, dtype=torch.float64).view(1, 1, w) + dx[:, 0]
    return ops.sample_bilinear(x, rows, cols, "symmetric")


def _random_affine(x: Tensor, jitter: float, g: torch.Generator) -> Tensor:
    """make_cifar_c.py's affine: three points around the centre, each moved by U(-jitter, jitter)
    pixels; the image warped by the affine map between them (OpenCV warpAffine, REFLECT_101)."""
    n, _, h, w = x.shape
    cx, cy, s = w // 2, h // 2, min(h, w) // 3
    src = torch.tensor([[cx + s, cy + s], [cx + s, cy - s], [cx - s, cy - s]], dtype=torch.float64, device=x.device)
    dst = src + (2 * torch.rand(n, 3, 2, generator=g, device=x.device, dtype=torch.float64) - 1) * jitter
    ones = torch.ones(n, 3, 1, dtype=torch.float64, device=x.device)
    inverse = torch.linalg.solve(torch.cat([dst, ones], 2), torch.cat([src.expand(n, 3, 2), ones], 2))
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float64, device=x.device), torch.arange(w, dtype=torch.float64, device=x.device),
        indexing="ij",
    )  # fmt: skip
    points = torch.stack([xs, ys, torch.ones_like(xs)], -1).view(1, h * w, 3)
    source = (points @ inverse).view(n, h, w, 3)  # where each output pixel is read from
    return ops.sample_bilinear(x, source[..., 1], source[..., 0], "mirror")


def pixelate(x: Tensor, c: float, table: str, g: torch.Generator) -> Tensor:
    """Down to int(side x c) by Pillow's BOX filter, back up by NEAREST (imagenet) or BOX (cifar)."""
    h, w = x.shape[-2:]
    small = ops.box_resize(x, int(h * c), int(w * c))
    return ops.box_resize(small, h, w) if table == "cifar" else ops.nearest_resize(small, h, w)


def jpeg_compression(x: Tensor, c: int, table: str, g: torch.Generator) -> Tensor:
    """A JPEG round trip at quality c."""
    return ops.jpeg(x, int(c))


FUNCTIONS: dict[str, Callable[[Tensor, Any, str, torch.Generator], Tensor]] = {
    name: globals()[name] for name in CORRUPTIONS
}
