"""Train-time stochastic regularizers, each inserted at a named site of a `ReIDNet`.

Conventions (DESIGN.md): a regularizer is the identity when `not self.training` or when its
probability is 0; it draws all randomness from its own `torch.Generator` (seeded by `seed`, one
generator per device), and takes every shape from its input.

Sites: `input` (the normalized image), `stem` (the stem convolution's output, before its BN),
`head` (the post-BNNeck embedding, before the ID classifier).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from models.registry import register_regularizer

SITES = ("input", "stem", "head")


class Regularizer(nn.Module):
    """Base class: a seeded generator per device and the identity outside training."""

    site: ClassVar[str]

    def __init__(self, p: float, seed: int = 0) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{type(self).__name__}: probability p={p} must lie in [0, 1]")
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
    """Standard dropout (Srivastava et al., JMLR 2014) on the embedding before the ID classifier.

    Placed where the LFM authors' baseline head has Dropout(0.5) (reference/methods.md §1.6):
    between the BNNeck feature and the classifier. Default p = 0.5; survivors scaled by 1/(1-p).
    """

    site = "head"

    def __init__(self, p: float = 0.5, seed: int = 0) -> None:
        super().__init__(p, seed)

    def apply_train(self, x: Tensor) -> Tensor:
        keep = self.rand(*x.shape, device=x.device) >= self.p
        return x * keep / (1.0 - self.p) if self.p < 1.0 else x * 0.0


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
        ys = torch.arange(h, device=x.device)[None, :, None]
        xs = torch.arange(w, device=x.device)[None, None, :]
        half = side // 2
        inside = (ys >= (cy - half)[:, None, None]) & (ys < (cy - half + side)[:, None, None])
        inside = inside & (xs >= (cx - half)[:, None, None]) & (xs < (cx - half + side)[:, None, None])
        return x.masked_fill((inside & on[:, None, None])[:, None], 0.0)


@register_regularizer("lfm")
class LocalFeatureMasking(Regularizer):
    """Local Feature Masking (Gong et al., "Beyond Dropout", IJCNN 2024, arXiv 2407.13646).

    The paper-intended algorithm of reference/methods.md §1.3, on the stem convolution's output
    (before its BN). For each sample, with probability p: choose `channels` x C distinct channels;
    in each, draw a Random-Erasing box (area fraction s ~ U(area), aspect r ~ U(aspect, 1/aspect),
    h = round(sqrt(s H W r)), w = round(sqrt(s H W / r)), accepted when h < H and w < W, up to 100
    tries) at a uniform position, and fill it with one value v ~ U(0, 1) per (sample, channel).
    A (sample, channel) with no accepted try is left alone, as Random Erasing does.

    Defaults from the released code (§1.4): p = 0.15, channels = 0.5 (32 of 64), area =
    (0.02, 0.4) of H x W, aspect = 0.3. Vectorized: no Python loop over samples or channels.
    """

    site = "stem"
    max_tries: ClassVar[int] = 100

    def __init__(
        self,
        p: float = 0.15,
        channels: float = 0.5,
        area: tuple[float, float] = (0.02, 0.4),
        aspect: float = 0.3,
        seed: int = 0,
    ) -> None:
        super().__init__(p, seed)
        if not 0.0 < channels <= 1.0:
            raise ValueError(f"LFM: channels={channels} must be a fraction of channels in (0, 1]")
        if not 0.0 < area[0] <= area[1] < 1.0:
            raise ValueError(f"LFM: area={area} must satisfy 0 < low <= high < 1")
        if not 0.0 < aspect <= 1.0:
            raise ValueError(f"LFM: aspect={aspect} must lie in (0, 1]")
        self.channels = float(channels)
        self.area = (float(area[0]), float(area[1]))
        self.aspect = float(aspect)

    def apply_train(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        dev = x.device
        chosen = (self.rand(b, device=dev) < self.p).nonzero().flatten()
        if chosen.numel() == 0:
            return x
        k = max(1, round(self.channels * c))
        chans = self.rand(len(chosen), c, device=dev).argsort(dim=1)[:, :k]  # distinct channels
        boxes = self.sample_boxes(len(chosen), k, h, w, dev)
        mask_k = _box_masks(*boxes, h, w)  # (n, k, h, w)
        fill_k = self.rand(len(chosen), k, device=dev).to(x.dtype)
        rows = torch.arange(len(chosen), device=dev)[:, None]
        mask = torch.zeros(len(chosen), c, h, w, dtype=torch.bool, device=dev)
        mask[rows, chans] = mask_k
        fill = torch.zeros(len(chosen), c, dtype=x.dtype, device=dev)
        fill[rows, chans] = fill_k
        masked = torch.where(mask, fill[:, :, None, None], x[chosen])
        out = x.clone(memory_format=torch.preserve_format)  # keep channels_last: the next convs need it
        out[chosen] = masked
        return out

    def sample_boxes(self, n: int, k: int, h: int, w: int, dev: torch.device) -> tuple[Tensor, ...]:
        """Random-Erasing boxes for n x k (sample, channel) pairs: (y0, x0, bh, bw, ok), each (n, k).

        All `max_tries` proposals are drawn at once; the first accepted one is kept.
        """
        t = self.max_tries
        u = self.rand(4, n, k, t, device=dev)
        s = self.area[0] + (self.area[1] - self.area[0]) * u[0]
        r = self.aspect + (1 / self.aspect - self.aspect) * u[1]  # r ~ U(r1, 1/r1), as specified
        bh = torch.sqrt(s * h * w * r).round()
        bw = torch.sqrt(s * h * w / r).round()
        accept = (bh < h) & (bw < w) & (bh >= 1) & (bw >= 1)
        first = accept.to(torch.int8).argmax(dim=-1, keepdim=True)  # first accepted try
        ok = accept.any(dim=-1)
        bh, bw = bh.gather(-1, first)[..., 0], bw.gather(-1, first)[..., 0]
        y0 = (u[2, ..., 0] * (h - bh + 1)).floor()
        x0 = (u[3, ..., 0] * (w - bw + 1)).floor()
        return y0, x0, bh * ok, bw * ok


def _box_masks(y0: Tensor, x0: Tensor, bh: Tensor, bw: Tensor, h: int, w: int) -> Tensor:
    """Boolean (n, k, h, w) masks of the boxes [y0, y0+bh) x [x0, x0+bw)."""
    ys = torch.arange(h, device=y0.device)[None, None, :, None]
    xs = torch.arange(w, device=y0.device)[None, None, None, :]
    in_y = (ys >= y0[..., None, None]) & (ys < (y0 + bh)[..., None, None])
    return in_y & (xs >= x0[..., None, None]) & (xs < (x0 + bw)[..., None, None])
