"""The attack base class: the invariants every attack obeys, enforced once (DESIGN.md step 5).

An attack is built without a model and called with one: `attack(model, x, context, eps=...)`.
Around `perturb`, the base class
  * checks the inputs: float images in [0, 1], 0 <= eps <= 1;
  * puts the model in eval mode and switches off parameter gradients, restoring both after,
    even when the attack raises;
  * runs on the input's device, with random draws from a generator seeded by `seed`;
  * projects the result onto the norm ball of radius eps around x and onto [0, 1], so the budget
    holds whatever `perturb` does, and returns a detached tensor.
eps = 0 returns a copy of x (clean), never calling `perturb`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from attacks.objectives import AttackContext, Objective, resolve_objective


class Attack:
    """Base class of every registered attack.

    Args:
        objective: objective name (`auto` = the task's default: `sma` for re-ID, `ce` for
            classification).
        seed: seed of the generator used for random starts when the caller passes none.
    """

    name: ClassVar[str] = "attack"
    norm: ClassVar[str] = "linf"

    def __init__(self, objective: str = "auto", seed: int = 0) -> None:
        self.objective = objective
        self.seed = int(seed)

    def __call__(
        self,
        model: nn.Module,
        x: Tensor,
        context: AttackContext,
        *,
        eps: float,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Adversarial version of `x` within `eps` (pixel scale, [0, 1] images)."""
        _check_inputs(x, eps)
        if eps == 0:
            return x.detach().clone()
        objective = resolve_objective(self.objective, context.task)
        if generator is None:
            generator = torch.Generator(x.device).manual_seed(self.seed)
        with attack_mode(model):
            state = objective.prepare(model, x, context)
            x_adv = self.perturb(model, x.detach(), objective, state, eps, generator)
        return self.project(x_adv.detach(), x.detach(), eps)

    def perturb(
        self,
        model: nn.Module,
        x: Tensor,
        objective: Objective,
        state: Any,
        eps: float,
        generator: torch.Generator,
    ) -> Tensor:
        """The search itself; subclasses implement it (the model is in eval mode here)."""
        raise NotImplementedError

    def project(self, x_adv: Tensor, x: Tensor, eps: float) -> Tensor:
        """Onto the L-inf ball of radius eps around x, then onto [0, 1]."""
        return torch.min(torch.max(x_adv, x - eps), x + eps).clamp_(0.0, 1.0)

    def describe(self, eps: float) -> dict[str, Any]:
        """CSV fields of this attack at `eps`: norm, steps, step_size (absolute, pixel scale)."""
        return {"norm": self.norm, "steps": 1, "step_size": eps}

    def resolved_objective(self, task: str) -> str:
        """The objective name this attack uses on `task` (for the CSV `objective` column)."""
        return resolve_objective(self.objective, task).name  # type: ignore[arg-type]


def gradient(model: nn.Module, x_adv: Tensor, objective: Objective, state: Any) -> Tensor:
    """d objective / d x_adv, with no parameter gradient left behind."""
    x_adv = x_adv.detach().requires_grad_(True)
    loss = objective.loss(model, x_adv, state)
    (grad,) = torch.autograd.grad(loss, x_adv)
    return grad


def uniform_noise(x: Tensor, eps: float, generator: torch.Generator) -> Tensor:
    """U(-eps, eps) noise shaped like x, from `generator`."""
    u = torch.rand(x.shape, generator=generator, device=generator.device, dtype=x.dtype)
    return (2 * u - 1).mul_(eps).to(x.device)


@contextmanager
def attack_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode and no parameter gradients inside; the previous state restored on exit."""
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)


def _check_inputs(x: Tensor, eps: float) -> None:
    if not x.is_floating_point():
        raise TypeError(f"attacks take float images in [0, 1]; got dtype {x.dtype}")
    if not 0.0 <= float(eps) <= 1.0:
        raise ValueError(f"eps={eps} is outside [0, 1]; write budgets on the pixel scale, e.g. 8/255")
    if x.numel() and (float(x.min()) < 0.0 or float(x.max()) > 1.0):
        raise ValueError("attack inputs must lie in [0, 1]; normalization belongs inside the model")
