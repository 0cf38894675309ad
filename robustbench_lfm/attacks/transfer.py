"""Input diversity and translation invariance: two changes to the gradient step that make crafted
images transfer better to models the attacker cannot see (the `--surrogate` setting).

* DI — Xie et al., "Improving Transferability of Adversarial Examples with Input Diversity", CVPR
  2019: at each step, with probability `di_prob` (0.5 in the paper), the model sees the batch
  resized by a random factor in [1, `di_scale`) (nearest neighbour; the paper's 299 -> [299, 330)
  is 1.104; at most 2 here) and zero-padded at a random offset to `di_scale` times its size. The harness's models
  take images of the dataset's size, so the padded batch is resized back to it (bilinear): the
  transform stays differentiable and the model's input contract holds.
* TI — Dong et al., "Evading Defenses to Transferable Adversarial Examples by Translation-Invariant
  Attacks", CVPR 2019: the gradient is convolved with a k x k Gaussian kernel (`ti_kernel` = k
  pixels, its radius 3 standard deviations as in the paper; 15 at 299 px, so about 5 at 64x32)
  before the sign or L2 step, which averages the gradient over small translations of the image.

Both draw from the attack's generator and are off by default (`di_prob=0`, `ti_kernel=0`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class DiverseInputs(nn.Module):
    """The model behind Xie et al.'s random resize-and-pad transform (module docstring)."""

    def __init__(self, model: nn.Module, prob: float, scale: float, generator: torch.Generator) -> None:
        super().__init__()
        self.model, self.prob, self.scale, self.generator = model, prob, scale, generator

    def forward(self, x: Tensor) -> Tensor:
        g, dev = self.generator, self.generator.device
        if float(torch.rand(1, generator=g, device=dev)) >= self.prob:
            return self.model(x)
        h, w = x.shape[-2:]
        big_h, big_w = max(h + 1, int(h * self.scale)), max(w + 1, int(w * self.scale))
        factor = 1 + (self.scale - 1) * float(torch.rand(1, generator=g, device=dev))
        rh, rw = min(big_h - 1, max(h, int(h * factor))), min(big_w - 1, max(w, int(w * factor)))
        top = int(torch.randint(0, big_h - rh + 1, (1,), generator=g, device=dev))
        left = int(torch.randint(0, big_w - rw + 1, (1,), generator=g, device=dev))
        resized = F.interpolate(x, size=(rh, rw), mode="nearest")
        padded = F.pad(resized, (left, big_w - rw - left, top, big_h - rh - top))
        return self.model(F.interpolate(padded, size=(h, w), mode="bilinear", align_corners=False))


def gaussian_kernel(size: int) -> Tensor:
    """Dong et al.'s k x k kernel: a Gaussian sampled at k points over +-3 standard deviations,
    outer product, summing to 1."""
    t = torch.linspace(-3, 3, size, dtype=torch.float64)
    k1 = torch.exp(-(t**2) / 2) / math.sqrt(2 * math.pi)
    k2 = torch.outer(k1, k1)
    return k2 / k2.sum()


def smooth_gradient(g: Tensor, size: int) -> Tensor:
    """The gradient convolved per channel with `gaussian_kernel(size)` (zero padding, same size)."""
    c = g.shape[1]
    kernel = gaussian_kernel(size).to(g).expand(c, 1, size, size)
    return F.conv2d(g, kernel, padding=size // 2, groups=c)
