"""Who runs an attack's search: our iterative core, or torchattacks (a strategy, not a mixin).

An attack that torchattacks also implements (fgsm, pgd, pgd-l2) takes `backend=native|torchattacks`
and holds the chosen `Backend`; `IterativeAttack.perturb` hands the problem to it. `native` runs
our search (every task and objective); `torchattacks` runs the attack's `torchattacks_attack(model,
eps)` instead (Kim, arXiv 2010.01950), for cross-checks and the overhead benchmark: classification
with the cross-entropy, one restart, no momentum. `run_torchattacks` is shared with the wrapped
classification attacks (robustbench_lfm/attacks/wrapped.py): torchattacks' global-RNG draws happen inside
`torch.random.fork_rng`, seeded from our generator, so they are deterministic under our seed and
leave the caller's RNG untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from robustbench_lfm.attacks.base import Problem


class Searcher(Protocol):
    """What a backend needs of an attack: our search, and torchattacks' equivalent at eps."""

    objective: str
    restarts: int
    momentum: float
    di_prob: float
    ti_kernel: int
    eot: int

    def search(self, p: Problem) -> Tensor: ...

    def torchattacks_attack(self, model: torch.nn.Module, eps: float) -> Any: ...


class Backend(Protocol):
    """A way to run an attack's search."""

    name: str

    def check(self, attack: Searcher) -> None:
        """Raise ValueError when this backend cannot run `attack` as configured."""

    def perturb(self, attack: Searcher, p: Problem) -> Tensor:
        """The adversarial images of problem `p`."""


class NativeBackend:
    """Our iterative core: every task, objective, restart count and momentum."""

    name = "native"

    def check(self, attack: Searcher) -> None:
        return None

    def perturb(self, attack: Searcher, p: Problem) -> Tensor:
        return attack.search(p)


class TorchattacksRunner:
    """torchattacks' implementation of the same attack (classification, cross-entropy)."""

    name = "torchattacks"

    def check(self, attack: Searcher) -> None:
        if attack.objective not in ("auto", "ce") or attack.restarts != 1 or attack.momentum:
            raise ValueError("backend=torchattacks supports the cross-entropy objective, 1 restart, no momentum")
        if attack.di_prob or attack.ti_kernel or attack.eot > 1:
            raise ValueError("backend=torchattacks has no input diversity (DI), translation invariance (TI) or EOT")

    def perturb(self, attack: Searcher, p: Problem) -> Tensor:
        if p.context.task != "classification" or p.context.labels is None:
            raise ValueError("backend=torchattacks runs on classification models with labels only")
        return run_torchattacks(lambda model, seed, n: attack.torchattacks_attack(model, p.eps), p)


NATIVE = NativeBackend()
BACKENDS: dict[str, Backend] = {"native": NATIVE, "torchattacks": TorchattacksRunner()}


def choose_backend(attack: Searcher, name: str) -> Backend:
    """The backend `name` for `attack`, checked against its configuration (ValueError otherwise)."""
    if name not in BACKENDS:
        raise ValueError(f"backend={name!r} is not one of {', '.join(BACKENDS)}")
    backend = BACKENDS[name]
    backend.check(attack)
    return backend


def run_torchattacks(build: Callable[[nn.Module, int, int], Any], p: Problem) -> Tensor:
    """Build a torchattacks attack with `build(model, seed, n_classes)` and run it on p's images and labels.

    The seed comes from p's generator; torchattacks' global-RNG draws happen inside `fork_rng`.
    torchattacks assumes contiguous NCHW tensors (FAB-T and others `.view` images and gradients),
    while the harness hands channels-last batches to channels-last models: the images go in
    contiguous and the model is wrapped so every input gradient comes back contiguous too.
    """
    if p.context.labels is None:
        raise ValueError("torchattacks attacks need the true labels in the AttackContext")
    seed = int(torch.randint(2**31 - 1, (1,), generator=p.generator, device=p.generator.device))
    x = p.x.contiguous()
    with torch.no_grad():
        n_classes = int(p.model(x[:1]).shape[1])
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
        torch.manual_seed(seed)
        attack = build(ContiguousGradients(p.model), seed, n_classes)
        attack.set_device(x.device)
        return attack(x, p.context.labels.to(x.device))


class _ContiguousGrad(torch.autograd.Function):
    """Identity whose backward returns the gradient in contiguous NCHW layout."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return grad.contiguous()


class ContiguousGradients(nn.Module):
    """`model` as torchattacks needs it: whatever layout the model computes in, the gradient with
    respect to its input is contiguous NCHW. Holds no state of its own (eval mode follows the model)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.train(model.training)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(_ContiguousGrad.apply(x))
