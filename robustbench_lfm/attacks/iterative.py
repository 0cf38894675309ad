"""The one iterative attack core: FGSM, PGD and every metric attack are settings of it (reid.md D6).

    x_0     = x, or a random point of the eps-ball (random start)
    G_{t+1} = mu * G_t + g_t / mean|g_t|          (momentum, MI-FGSM; mu = 0: G = g)
    x_{t+1} = Proj_{B(x, eps) ∩ [0, 1]}(x_t + alpha * s(G_{t+1}))

with g the gradient of the objective, s = sign for L-inf and s(G) = G / ||G||_2 (per image) for L2.
With `restarts` > 1 the search runs again from fresh random starts and each image keeps the run
with the highest objective. Units: eps and alpha on the [0, 1] pixel scale.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any, ClassVar

import torch
from torch import Tensor

from robustbench_lfm.attacks.backends import NATIVE, Backend
from robustbench_lfm.attacks.base import Attack, Problem, gradient, project, random_start
from robustbench_lfm.attacks.objectives import DISTANCES, Objective, resolve_objective
from robustbench_lfm.attacks.transfer import DiverseInputs, smooth_gradient


class IterativeAttack(Attack):
    """Gradient ascent on an objective with projection; subclasses set the published defaults.

    Args:
        objective: objective name, `auto` by task (re-ID: sma, classification: ce).
        norm: `linf` (sign steps) or `l2` (normalized-gradient steps).
        side: re-ID side perturbed, `query` or `gallery`.
        steps: number of gradient steps; `None` = the attack's default.
        step_size: absolute step alpha (pixel scale); `None` = the attack's default.
        rel_step: alpha as a fraction of eps (overrides the default, not `step_size`).
        random_start: start from a random point of the ball; `None` = when the objective needs it.
        momentum: MI-FGSM decay mu (0 = plain steps).
        restarts: independent runs, the strongest kept per image.
        geometry: the embedding geometry a metric objective works in, `cosine` or `euclidean`;
            `None` = the distance the ranking scores (the context's, i.e. the run's --distance).
        di_prob: input diversity (Xie et al. 2019; robustbench_lfm/attacks/transfer.py): the probability per step
            that the model sees a randomly resized and padded batch; 0 = off.
        di_scale: the largest resize factor of input diversity (330/299 in the paper).
        ti_kernel: translation invariance (Dong et al. 2019): the side in pixels of the Gaussian
            kernel the gradient is smoothed with, odd (15 in the paper); 0 = off.
        eot: expectation over transformation (Athalye et al., ICML 2018, "Obfuscated gradients give
            a false sense of security"): each step's gradient is the mean of `eot` forward and
            backward passes, for a model whose output is random in evaluation (a given model with
            dropout left on, a randomized defence); 1 = one pass.
        seed: generator seed for the random starts.
    """

    default_momentum: ClassVar[float] = 0.0
    default_random_start: ClassVar[bool | None] = None
    backend: Backend = NATIVE  # an attack that torchattacks implements may choose another
    added_defaults: ClassVar[dict[str, Any]] = {"di_prob": 0.0, "di_scale": 1.1, "ti_kernel": 0, "eot": 1}

    def __init__(
        self,
        objective: str = "auto",
        norm: str = "linf",
        side: str | None = None,
        steps: int | None = None,
        step_size: float | None = None,
        rel_step: float | None = None,
        random_start: bool | None = None,
        momentum: float | None = None,
        restarts: int = 1,
        geometry: str | None = None,
        di_prob: float = 0.0,
        di_scale: float = 1.1,
        ti_kernel: int = 0,
        eot: int = 1,
        seed: int = 0,
    ) -> None:
        super().__init__(objective, norm, side, seed)
        if isinstance(eot, bool) or not isinstance(eot, int) or eot < 1:
            raise ValueError(f"{self.name}: eot={eot!r} must be a whole number >= 1 (gradient passes per step)")
        self.eot = eot
        if not 0 <= di_prob <= 1 or not 1 < di_scale <= 2:
            raise ValueError(f"{self.name}: di_prob={di_prob} must lie in [0, 1] and di_scale={di_scale} in (1, 2]")
        if isinstance(ti_kernel, bool) or not isinstance(ti_kernel, int) or ti_kernel < 0 or ti_kernel in (1, 2):
            raise ValueError(f"{self.name}: ti_kernel={ti_kernel} must be 0 (off) or a kernel side >= 3 pixels")
        if ti_kernel % 2 == 0 and ti_kernel:  # an even kernel has no centre: the smoothed gradient changes size
            raise ValueError(f"{self.name}: ti_kernel={ti_kernel} must be odd (a centred kernel: 3, 5, 7, ..., 15)")
        self.di_prob, self.di_scale, self.ti_kernel = float(di_prob), float(di_scale), int(ti_kernel)
        if geometry not in (None, *DISTANCES):
            raise ValueError(f"{self.name}: geometry={geometry!r} is not one of {', '.join(DISTANCES)}")
        self.geometry = geometry
        if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool) or steps < 1):
            raise ValueError(f"{self.name}: steps={steps} must be an integer >= 1")
        if step_size is not None and not step_size > 0:
            raise ValueError(f"{self.name}: step_size={step_size} must be > 0 (pixel scale, e.g. 1/255)")
        if rel_step is not None and not rel_step > 0:
            raise ValueError(f"{self.name}: rel_step={rel_step} must be > 0 (a fraction of eps)")
        if int(restarts) < 1:
            raise ValueError(f"{self.name}: restarts={restarts} must be >= 1")
        self.steps = None if steps is None else int(steps)
        self.step_size = step_size
        self.rel_step = rel_step
        self.random_start = self.default_random_start if random_start is None else bool(random_start)
        self.momentum = self.default_momentum if momentum is None else float(momentum)
        self.restarts = int(restarts)

    @classmethod
    def class_defaults(cls, signature: dict[str, Any]) -> dict[str, Any]:
        out = super().class_defaults(signature)
        if "random_start" in signature:
            out["random_start"] = cls.default_random_start
        if "momentum" in signature:
            out["momentum"] = cls.default_momentum
        return out

    def default_schedule(self, eps: float, started: bool) -> tuple[int, float]:
        """The published (steps, alpha) at eps, given whether the search starts at random."""
        return 10, eps / 4

    def rescaled(self, reference_eps: float, eps: float, task: str) -> IterativeAttack:
        """The schedule run at `reference_eps`, its step scaled by eps / reference_eps.

        A schedule fixed in absolute steps (SMA's and FNA's 15 x 1/255) cannot leave a small ball,
        so at a very large eps it would measure mostly the random start; scaled, the probe is the
        sweep's attack enlarged, and the steps it runs are what the CSV records.
        """
        if reference_eps <= 0:
            return self
        steps, alpha = self.schedule_for(reference_eps, task)
        probe = copy.copy(self)
        probe.steps, probe.rel_step = steps, None
        probe.step_size = alpha * eps / reference_eps
        return probe

    def schedule(self, eps: float, started: bool = False) -> tuple[int, float]:
        steps, alpha = self.default_schedule(eps, started)
        steps = self.steps or steps
        if self.step_size is not None:
            alpha = self.step_size
        elif self.rel_step is not None:
            alpha = self.rel_step * eps
        return steps, alpha

    def schedule_for(self, eps: float, task: str) -> tuple[int, float]:
        return self.schedule(eps, self.uses_random_start(resolve_objective(self.objective, task)))  # type: ignore[arg-type]

    def uses_random_start(self, objective: Objective) -> bool:
        """Whether the search starts from a random point (default: when the objective needs it)."""
        return objective.needs_random_start if self.random_start is None else self.random_start

    def perturb(self, p: Problem) -> Tensor:
        return self.backend.perturb(self, p)

    def torchattacks_attack(self, model: torch.nn.Module, eps: float) -> Any:
        """The torchattacks attack that does what this one does, for `backend=torchattacks`."""
        raise ValueError(f"{self.name} has no torchattacks equivalent; use backend=native")

    def search(self, p: Problem) -> Tensor:
        """Our search: `ascend`, once per restart, each image keeping its strongest run."""
        if self.geometry is not None:  # an explicit geometry overrides the scored one
            p = dataclasses.replace(p, context=dataclasses.replace(p.context, distance=self.geometry))
        state = p.objective.prepare(p.model, p.x, p.context)
        best = self.ascend(p, state)
        if self.restarts == 1:
            return best
        best_value = _value(p, best, state)
        for _ in range(self.restarts - 1):
            candidate = self.ascend(p, state)
            value = _value(p, candidate, state)
            better = value > best_value
            best = torch.where(better.view(-1, *[1] * (p.x.dim() - 1)), candidate, best)
            best_value = torch.where(better, value, best_value)
        return best

    def ascend(self, p: Problem, state: Any) -> Tensor:
        """One run of the search from x or a random start; `state` is the prepared objective."""
        started = self.uses_random_start(p.objective)
        steps, alpha = self.schedule(p.eps, started)
        x_adv = random_start(p.x, p.eps, self.norm, p.generator) if started else p.x
        accumulated = torch.zeros_like(p.x) if self.momentum else None
        model = self.stepping_model(p)
        for _ in range(steps):
            g = self.smoothed(self.gradient(model, x_adv, p.objective, state))
            if accumulated is not None:
                g = accumulated.mul_(self.momentum).add_(g / _per_image(g.abs().mean, g).clamp_min(1e-12))
            x_adv = project(x_adv + alpha * self.direction(g), p.x, p.eps, self.norm)
        return x_adv

    def gradient(self, model: torch.nn.Module, x_adv: Tensor, objective: Objective, state: Any) -> Tensor:
        """d objective / d x_adv, the mean over `eot` passes (Athalye et al. 2018's EOT); one pass at eot 1."""
        g = gradient(model, x_adv, objective, state)
        for _ in range(self.eot - 1):
            g = g.add_(gradient(model, x_adv, objective, state))
        return g.div_(self.eot) if self.eot > 1 else g

    def stepping_model(self, p: Problem) -> torch.nn.Module:
        """The model the gradient steps see: p's, behind input diversity when `di_prob` > 0."""
        return DiverseInputs(p.model, self.di_prob, self.di_scale, p.generator) if self.di_prob else p.model

    def smoothed(self, g: Tensor) -> Tensor:
        """The gradient, smoothed for translation invariance when `ti_kernel` > 0."""
        return smooth_gradient(g, self.ti_kernel) if self.ti_kernel else g

    def direction(self, g: Tensor) -> Tensor:
        """The unit step: sign(g) under L-inf, g / ||g||_2 under L2 (per image)."""
        if self.norm == "linf":
            return g.sign()
        return g / _per_image(lambda dim: torch.linalg.vector_norm(g, dim=dim), g).clamp_min(1e-12)


def _value(p: Problem, x_adv: Tensor, state: Any) -> Tensor:
    with torch.no_grad():
        return p.objective.per_sample(p.model, x_adv, state)


def _per_image(reduce: Any, g: Tensor) -> Tensor:
    """`reduce` over all but the batch dimension, shaped to broadcast against g."""
    dims = tuple(range(1, g.dim()))
    return reduce(dim=dims).view(-1, *[1] * (g.dim() - 1)) if g.dim() > 1 else reduce(dim=0)


def kurakin_steps(eps: float, rounding: str = "floor") -> int:
    """T = min(eps + 4, 1.25 eps) with eps in 1/255 units (Kurakin et al. 2017), at least 1.

    Bai et al. take the floor (eps = 5 gives 6); U-turn rounds (eps = 16 gives 20).
    """
    t = min(eps * 255 + 4, 1.25 * eps * 255)
    return max(1, math.floor(t + 1e-9) if rounding == "floor" else round(t))


def l2_step(eps: float, steps: int) -> float:
    """The usual L2 step 2.5 eps / steps (Madry et al. 2018's robustness library)."""
    return 2.5 * eps / steps
