"""An example lfm-bench plugin: a regularizer, a model that uses it, and an attack.

Load it with `--plugin`, e.g.

    lfm-bench ls --plugin examples/plugin_example.py
    lfm-bench run --plugin examples/plugin_example.py --models gaussian-dropout --attacks sign-noise,pgd

or list it in a config file (`plugins = ["examples/plugin_example.py"]`), or ship it in a package
with an entry point in the group `lfm_bench.plugins`. Its contract tests are one call:
`robustbench_lfm.testing.check_plugin("examples/plugin_example.py")`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from robustbench_lfm.attacks.base import Attack, Problem
from robustbench_lfm.attacks.registry import register_attack
from robustbench_lfm.models.registry import ModelEntry, register_model, register_regularizer
from robustbench_lfm.models.regularizers import Regularizer


@register_regularizer("gaussian-features")
class GaussianFeatures(Regularizer):
    """Multiplicative Gaussian noise on a feature map, x * (1 + sqrt(p / (1 - p)) * N(0, 1)):
    Gaussian dropout (Srivastava et al., JMLR 2014, section 10) at a site of the trunk; the
    identity in eval mode, like every regularizer."""

    site = "stem"
    movable = True

    def __init__(self, p: float = 0.3, seed: int = 0, at: str | None = None) -> None:
        super().__init__(p, seed, at)
        if self.p >= 1.0:
            raise ValueError(f"gaussian-features: p={p} must be < 1 (the noise std is sqrt(p / (1 - p)))")

    def apply_train(self, x: Tensor) -> Tensor:
        noise = torch.randn(x.shape, generator=self.generator(x.device), device=x.device, dtype=x.dtype)
        return x * (1 + (self.p / (1 - self.p)) ** 0.5 * noise)


register_model(
    ModelEntry("gaussian-dropout", "gaussian-features", description="Gaussian dropout p=0.3 at the stem conv output")
)


@register_attack("sign-noise")
class SignNoise(Attack):
    """Random corners of the L-inf ball, x + eps * sign(u) with u ~ U(-1, 1), kept in [0, 1]: the
    noise baseline that any gradient attack must beat (no gradient is used).

    Args:
        side: re-ID side perturbed, `query` or `gallery`.
        seed: generator seed when the caller passes none.
    """

    def __init__(self, side: str | None = None, seed: int = 0) -> None:
        super().__init__("auto", "linf", side, seed)

    def perturb(self, p: Problem) -> Tensor:
        u = torch.rand(p.x.shape, generator=p.generator, device=p.x.device, dtype=p.x.dtype)
        return (p.x + p.eps * torch.sign(u - 0.5)).clamp(0, 1)  # in [0, 1]: the sanity check `in-budget` holds
