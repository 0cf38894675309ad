"""Train-time stochastic regularizers, each inserted at a named site of a `SiteNet` (robustbench_lfm/models/nets.py).

Conventions (docs/contributing.md, A model): a regularizer is the identity when `not self.training` or when its
probability is 0; it draws all randomness from its own `torch.Generator` (seeded by `seed`, one
generator per device), and takes every shape from its input.

Sites, in forward order: `input` (the normalized image), `stem` (the stem convolution's output,
before its BN: LFM's insertion point), `pool` (after the stem BN/ReLU/pooling), `layer1`..`layer4`
(after each residual stage), `head` (the pooled feature before the classifier). Regularizers on
feature maps take `at=SITE` to move them (`lfm:at=layer1`).

This file holds the peers of LFM (robustbench_lfm/models/lfm.py): dropout, spatial dropout, DropBlock, Cutout and
Random Erasing, and the Random-Erasing box sampler that LFM shares.
"""

from __future__ import annotations

from typing import ClassVar, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustbench_lfm.models.registry import register_regularizer

SITES = ("input", "stem", "pool", "layer1", "layer2", "layer3", "layer4", "head")
FEATURE_SITES = ("stem", "pool", "layer1", "layer2", "layer3", "layer4")


class Regularizer(nn.Module):
    """Base class: a seeded generator per device, a site, and the identity outside training."""

    site: str = "input"
    movable: ClassVar[bool] = False  # takes `at=SITE`

    def __init__(self, p: float, seed: int = 0, at: str | None = None) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{type(self).__name__}: probability p={p} must lie in [0, 1]")
        if at is not None:
            if not self.movable:
                raise ValueError(f"{type(self).__name__} sits at {self.site!r}; it takes no `at`")
            if at not in FEATURE_SITES:
                raise ValueError(f"at={at!r} is not a feature-map site; choose one of {', '.join(FEATURE_SITES)}")
            self.site = at
        self.p = float(p)
        self.seed = int(seed)
        self._generators: dict[str, torch.Generator] = {}

    def reseed(self, seed: int) -> None:
        """Restart the random stream from `seed` (the training seed of a sweep cell)."""
        self.seed = int(seed)
        self._generators.clear()

    def generator(self, device: torch.device) -> torch.Generator:
        """This module's generator on `device`, created from `seed` on first use."""
        key = str(device)
        if key not in self._generators:
            self._generators[key] = torch.Generator(device).manual_seed(self.seed)
        return self._generators[key]

    def rand(self, *shape: int, device: torch.device) -> Tensor:
        """Uniform [0, 1) draws from this module's generator."""
        return torch.rand(*shape, generator=self.generator(device), device=device)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        return self.apply_train(x)

    def apply_train(self, x: Tensor) -> Tensor:
        """The training-time transform; subclasses implement it."""
        raise NotImplementedError


@register_regularizer("dropout")
class HeadDropout(Regularizer):
    """Standard dropout (Srivastava et al., JMLR 2014) on the pooled feature before the classifier.

    Placed where the LFM authors' baseline head has Dropout(0.5) (docs/reference/methods.md §1.6):
    between the BNNeck feature and the classifier. Default p = 0.5; survivors scaled by 1/(1-p).
    """

    site = "head"

    def __init__(self, p: float = 0.5, seed: int = 0) -> None:
        super().__init__(p, seed)

    def apply_train(self, x: Tensor) -> Tensor:
        keep = self.rand(*x.shape, device=x.device) >= self.p
        return x * keep / (1.0 - self.p) if self.p < 1.0 else x * 0.0


@register_regularizer("spatial-dropout")
class SpatialDropout(Regularizer):
    """Spatial (channel) dropout (Tompson et al., CVPR 2015, "Efficient object localization"):
    each (sample, channel) feature map is zeroed with probability p, survivors scaled by 1/(1-p).

    The random-channel baseline for LFM: it sits at LFM's insertion point (the stem conv output)
    by default, `at=` moves it. Default p = 0.1.
    """

    site = "stem"
    movable = True

    def __init__(self, p: float = 0.1, seed: int = 0, at: str | None = None) -> None:
        super().__init__(p, seed, at)

    def apply_train(self, x: Tensor) -> Tensor:
        keep = (self.rand(x.shape[0], x.shape[1], device=x.device) >= self.p).to(x.dtype)
        scale = 1.0 / (1.0 - self.p) if self.p < 1.0 else 0.0
        return x * (keep * scale)[:, :, None, None]


@register_regularizer("dropblock")
class DropBlock(Regularizer):
    """DropBlock (Ghiasi, Lin & Le, NeurIPS 2018): drop contiguous block_size x block_size regions.

    Block centres are drawn where a whole block fits, at the rate gamma = p / block_size^2 x
    HW / ((H - block_size + 1)(W - block_size + 1)), so about a fraction p of each map is dropped;
    one mask per sample is shared by its channels (the paper's Algorithm 1) and survivors are
    rescaled by count / kept. Defaults: p = 0.1 (keep_prob 0.9, the paper's final value, without
    its linear schedule), block_size = 3 (the paper's 7 is for 14x14 ImageNet maps; ours are 4x4
    to 16x8), after layer3 (the paper uses groups 3 and 4; one site here, `at=` moves it).
    """

    site = "layer3"
    movable = True

    def __init__(self, p: float = 0.1, block_size: int = 3, seed: int = 0, at: str | None = None) -> None:
        super().__init__(p, seed, at)
        if block_size < 1 or block_size % 2 == 0:
            raise ValueError(f"DropBlock: block_size={block_size} must be an odd integer >= 1")
        self.block_size = int(block_size)

    def apply_train(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        bs = min(self.block_size, h, w)
        bs -= 1 - bs % 2  # a map smaller than the block: the largest odd block that fits
        valid_h, valid_w = h - bs + 1, w - bs + 1
        gamma = self.p / bs**2 * h * w / (valid_h * valid_w)
        centres = (self.rand(b, 1, valid_h, valid_w, device=x.device) < gamma).to(x.dtype)
        centres = F.pad(centres, (bs // 2, bs // 2, bs // 2, bs // 2))
        keep = 1.0 - F.max_pool2d(centres, bs, stride=1, padding=bs // 2)
        kept = keep.sum()
        if kept == 0:
            return x * 0.0
        return x * keep * (keep.numel() / kept)


@register_regularizer("cutout")
class Cutout(Regularizer):
    """Cutout (DeVries & Taylor, arXiv 1708.04552): zero one square patch of the normalized image.

    The square's side is `size` times the image's shorter side (default 0.5: 16 px on 32x32
    CIFAR as in the paper, 16 px on a 64x32 crop); its centre is uniform over the image, so it
    may be partly outside. Zero in normalized space is the dataset mean colour. Applied to each
    sample with probability p (default 1.0, as in the paper).
    """

    site = "input"

    def __init__(self, p: float = 1.0, size: float = 0.5, seed: int = 0) -> None:
        super().__init__(p, seed)
        if not 0.0 < size <= 1.0:
            raise ValueError(f"Cutout: size={size} must lie in (0, 1] (fraction of the shorter side)")
        self.size = float(size)

    def apply_train(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        side = max(1, round(self.size * min(h, w)))
        u = self.rand(b, 3, device=x.device)
        cy, cx = (u[:, 0] * h).floor(), (u[:, 1] * w).floor()
        on = u[:, 2] < self.p
        half = side // 2
        inside = box_masks(cy - half, cx - half, torch.full_like(cy, side), torch.full_like(cx, side), h, w)
        return x.masked_fill((inside & on[:, None, None])[:, None], 0.0)


@register_regularizer("random-erasing")
class RandomErasing(Regularizer):
    """Random Erasing (Zhong et al., AAAI 2020), the re-ID standard augmentation (reid.md C2).

    With probability p per image, one box of area fraction s ~ U(area) and aspect r ~ U(aspect,
    1/aspect) is erased at a uniform position (Random-Erasing sampler, up to 100 tries). The box is
    filled with the mean colour (0 after normalisation), as the strong re-ID baseline does.
    Defaults from the paper: p = 0.5, area = (0.02, 0.4), aspect = 0.3.
    """

    site = "input"

    def __init__(self, p: float = 0.5, area: Range = (0.02, 0.4), aspect: float | Range = 0.3, seed: int = 0) -> None:
        super().__init__(p, seed)
        self.area, self.aspect_range = check_box_ranges(type(self).__name__, area, aspect)

    def apply_train(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        on = self.rand(b, device=x.device) < self.p
        boxes = erasing_boxes(self, b, 1, h, w, x.device)
        mask = box_masks(*boxes, h, w)[:, 0] & on[:, None, None]
        return x.masked_fill(mask[:, None], 0.0)


Range = tuple[float, float]


def check_box_ranges(owner: str, area: Range, aspect: float | Range) -> tuple[Range, Range]:
    """Validated (area range, aspect range) of a Random-Erasing box sampler.

    Args:
        owner: the regularizer's name, for messages.
        area: (low, high) fraction of the map's area.
        aspect: r1, meaning ratios h/w in [r1, 1/r1] (the Random-Erasing convention), or (low, high).
    """
    bounds: tuple[float, ...] = tuple(area) if isinstance(area, (tuple, list)) else (area,)
    if len(bounds) != 2 or not 0.0 < bounds[0] <= bounds[1] < 1.0:
        raise ValueError(f"{owner}: area={area} must be low..high with 0 < low <= high < 1, e.g. 0.02..0.4")
    ratios: tuple[float, ...]
    if isinstance(aspect, (int, float)):
        ratios = (aspect, 1.0 / aspect) if aspect > 0 else (aspect,)
    else:
        ratios = tuple(aspect)
    if isinstance(aspect, (int, float)) and not 0.0 < aspect <= 1.0:
        raise ValueError(f"{owner}: aspect={aspect} must lie in (0, 1] (ratios span aspect..1/aspect)")
    if len(ratios) != 2 or not 0.0 < ratios[0] <= ratios[1]:
        raise ValueError(f"{owner}: aspect={aspect} must be r1 in (0, 1] or low..high with 0 < low <= high")
    return (float(bounds[0]), float(bounds[1])), (float(ratios[0]), float(ratios[1]))


MAX_TRIES = 100


class BoxSampler(Protocol):
    """A regularizer that erases Random-Erasing boxes: its area and aspect ranges and its RNG."""

    area: Range
    aspect_range: Range

    def rand(self, *shape: int, device: torch.device) -> Tensor: ...


def erasing_boxes(
    reg: BoxSampler, n: int, k: int, h: int, w: int, dev: torch.device
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Random-Erasing boxes (docs/reference/methods.md §1.3 step 3) for n x k slots: (y0, x0, bh, bw),
    each (n, k). Area s ~ U(reg.area) of H x W, aspect r ~ U(reg.aspect_range),
    h = round(sqrt(sHWr)), w = round(sqrt(sHW/r)), accepted when h < H and w < W; all MAX_TRIES
    proposals are drawn at once and the first accepted one is kept; a slot with none gets an
    empty box (Random Erasing then leaves the image alone)."""
    u = reg.rand(4, n, k, MAX_TRIES, device=dev)
    s = reg.area[0] + (reg.area[1] - reg.area[0]) * u[0]
    r = reg.aspect_range[0] + (reg.aspect_range[1] - reg.aspect_range[0]) * u[1]
    bh = torch.sqrt(s * h * w * r).round()
    bw = torch.sqrt(s * h * w / r).round()
    accept = (bh < h) & (bw < w) & (bh >= 1) & (bw >= 1)
    first = accept.to(torch.int8).argmax(dim=-1, keepdim=True)
    ok = accept.any(dim=-1)
    bh, bw = bh.gather(-1, first)[..., 0], bw.gather(-1, first)[..., 0]
    y0 = (u[2, ..., 0] * (h - bh + 1)).floor()
    x0 = (u[3, ..., 0] * (w - bw + 1)).floor()
    return y0, x0, bh * ok, bw * ok


def box_masks(y0: Tensor, x0: Tensor, bh: Tensor, bw: Tensor, h: int, w: int) -> Tensor:
    """Boolean (*batch, h, w) masks of the boxes [y0, y0+bh) x [x0, x0+bw), batch shape from y0."""
    ys = torch.arange(h, device=y0.device).view(*([1] * y0.dim()), h, 1)
    xs = torch.arange(w, device=y0.device).view(*([1] * y0.dim()), 1, w)
    in_y = (ys >= y0[..., None, None]) & (ys < (y0 + bh)[..., None, None])
    return in_y & (xs >= x0[..., None, None]) & (xs < (x0 + bw)[..., None, None])
