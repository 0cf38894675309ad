"""UAP: one universal adversarial perturbation for every query (or test image).

After Moosavi-Dezfooli et al. (CVPR 2017), in its stochastic-gradient form (Shafahi et al., AAAI
2020), and for retrieval Li et al. ("Universal Perturbation Attack Against Image Retrieval",
ICCV 2019) and Ding et al. ("Universal Adversarial Perturbations Against Person
Re-Identification", arXiv 1910.14184, 2019): a single perturbation delta, learnt on the
*training* images, is added to every image attacked. The attacker never sees the queries.

Threat model: white-box on the model that learns delta (or the `--surrogate`), input-agnostic,
L-inf (default) or L2 ball of radius eps on [0, 1] pixels, checked like any attack's (the base
class projects x + delta onto the ball and [0, 1]).
Objective: the task's default (`auto`: re-ID the self-metric objective of Bouniot et al. 2020,
pushing each training image's embedding away from its clean self; classification the
cross-entropy), summed over a batch; Li et al.'s rank-based loss and Ding et al.'s list-wise
loss are not implemented.
Defaults: delta from U(-eps, eps), then `steps` = 5 passes over the training images (`images`
= 0: all of them, else that many drawn once) in batches of 32, each batch one signed step of
1/255 (L-inf) or eps / 10 (L2) followed by the projection of delta onto the ball. DI and TI
(robustbench_lfm/attacks/transfer.py) apply to these steps as to PGD's.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor

from robustbench_lfm.attacks.base import Problem
from robustbench_lfm.attacks.iterative import IterativeAttack
from robustbench_lfm.attacks.metric import PIXEL
from robustbench_lfm.attacks.registry import register_attack

PASSES = 5  # passes over the training images


@register_attack("uap")
class UAP(IterativeAttack):
    """A universal perturbation; options as `IterativeAttack` (`steps` = passes over the training
    images), plus `images` (how many training images, 0 = all) and `batch` (images per step)."""

    default_random_start = True

    def __init__(self, *args: Any, images: int = 0, batch: int = 32, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for key, value, low in (("images", images, 0), ("batch", batch, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"uap: {key}={value!r} must be a whole number >= {low}")
        self.images, self.batch = images, batch
        self._learnt: dict[tuple[Any, ...], Tensor] = {}

    def default_schedule(self, eps: float, started: bool) -> tuple[int, float]:
        return PASSES, PIXEL if self.norm == "linf" else eps / 10

    def perturb(self, p: Problem) -> Tensor:
        """x + delta, delta learnt on the context's training images at the first call for this
        model, training set, budget and schedule, and reused for every later batch of the cell."""
        fit = p.context.fit
        key = (
            id(p.model),
            id(None if fit is None else fit.images),
            p.eps,
            tuple(p.x.shape[1:]),
            self.schedule(p.eps, True),
        )
        if key not in self._learnt:
            self._learnt[key] = self.learn(p)
        return (p.x + self._learnt[key]).clamp(0.0, 1.0)  # the one vector, each image kept in [0, 1]

    def learn(self, p: Problem) -> Tensor:
        """The universal perturbation (1, C, H, W) for problem `p`'s model and budget."""
        fit = p.context.fit
        if fit is None or not len(fit.images):
            raise ValueError("uap learns its perturbation on training images, and the attack context has none")
        g, device = p.generator, p.x.device
        context = p.context if self.geometry is None else dataclasses.replace(p.context, distance=self.geometry)
        passes, alpha = self.schedule(p.eps, True)
        chosen = torch.randperm(len(fit.images), generator=g, device=g.device).cpu()
        chosen = chosen[: self.images or len(chosen)]
        delta = self._start(p)
        model = self.stepping_model(p)
        for _ in range(passes):
            order = chosen[torch.randperm(len(chosen), generator=g, device=g.device).cpu()]
            for index in order.split(self.batch):
                x = fit.images[index].to(device).float().div_(255)
                batch = dataclasses.replace(context, labels=fit.labels[index].to(device), guides=None, fit=None)
                state = p.objective.prepare(p.model, x, batch)
                grad = self.smoothed(
                    self.gradient(model, (x + delta).clamp(0, 1), p.objective, state).sum(0, keepdim=True)
                )
                delta = self._project(delta + alpha * self.direction(grad), p.eps)
        return delta.detach()

    def _start(self, p: Problem) -> Tensor:
        """delta's starting point: U(-eps, eps) per pixel (L-inf) or a random direction at a U(0, eps)
        radius (L2); zero without a random start."""
        shape, g = (1, *p.x.shape[1:]), p.generator
        if not self.uses_random_start(p.objective):
            return torch.zeros(shape, device=p.x.device)
        noise = torch.rand(shape, generator=g, device=g.device) * 2 - 1
        if self.norm == "l2":
            noise = torch.randn(shape, generator=g, device=g.device)
            noise = noise / noise.norm().clamp_min(1e-12) * float(torch.rand(1, generator=g, device=g.device))
        return (noise * p.eps).to(p.x.device)

    def _project(self, delta: Tensor, eps: float) -> Tensor:
        """delta onto the eps-ball of the attack's norm."""
        if self.norm == "linf":
            return delta.clamp(-eps, eps)
        return delta * (eps / delta.norm().clamp_min(1e-12)).clamp(max=1.0)
