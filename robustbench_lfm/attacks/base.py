"""The attack base class: the invariants every attack obeys, enforced once (docs/contributing.md, An attack).

An attack is built without a model and called with one: `attack(model, x, context, eps=...)`.
Around `perturb`, the base class
  * checks the inputs: float images in [0, 1], 0 <= eps <= 1 for L-inf (eps >= 0 for L2), and that
    the attack applies to the context's task;
  * puts the model in eval mode and switches off parameter gradients, restoring both after,
    even when the attack raises;
  * runs on the input's device, with random draws from a generator seeded by `seed`;
  * projects the result onto the norm ball of radius eps around x (L-inf or L2, per image) and onto
    [0, 1], so the budget holds whatever `perturb` does, and returns a detached tensor.
eps = 0 runs the attack's own code path like any other budget (the projection then returns x), so
the sanity check that eps 0 reproduces the clean numbers tests the attack, not a shortcut.

`defaults()` reads every option's default from the constructor signatures (the one home of a
default) and `resolve_options` checks a user's options against them; `rescaled` gives the
schedule a sanity probe at a very large budget runs (the sweep's schedule, step scaled with eps).

Budgets are on the [0, 1] pixel scale: L-inf eps is written 8/255; L2 eps is the Euclidean norm of
the whole (C, H, W) perturbation of one image, e.g. 0.5 on CIFAR-10.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from robustbench_lfm.attacks.objectives import AttackContext, Objective, resolve_objective
from robustbench_lfm.lfm_registry import signature_defaults

NORMS = ("linf", "l2")
SIDES = ("query", "gallery")


@dataclass(frozen=True)
class Problem:
    """One attack call as `perturb` sees it.

    Attributes:
        model: the attacked model, in eval mode, parameter gradients off.
        x: the clean images in [0, 1], detached.
        objective: the resolved objective to maximize.
        context: the task, labels and guides.
        eps: the budget in the attack's norm (pixel scale).
        generator: the source of every random draw.
    """

    model: nn.Module
    x: Tensor
    objective: Objective
    context: AttackContext
    eps: float
    generator: torch.Generator


class AttackError(RuntimeError):
    """An attack's search raised, or returned images that are not finite or not shaped as its
    input: the cell it was crafting fails (recorded, exit 1), the run's other cells go on
    (`component_failure`: robustbench_lfm/faults.py, which this leaf library does not import)."""

    component_failure: ClassVar[bool] = True


def checked_output(name: str, x_adv: Any, clean: Tensor) -> Tensor:
    """`x_adv` when it is a tensor of `clean`'s shape with finite values; else AttackError naming `name`."""
    if not isinstance(x_adv, Tensor) or x_adv.shape != clean.shape:
        got = tuple(x_adv.shape) if isinstance(x_adv, Tensor) else type(x_adv).__name__
        raise AttackError(f"attack {name} returned {got}, not images shaped {tuple(clean.shape)}")
    bad = int((~torch.isfinite(x_adv)).sum())
    if bad:
        raise AttackError(f"attack {name} returned {bad} non-finite pixel value(s) (NaN or inf)")
    return x_adv


def _first_line(err: BaseException) -> str:
    return (str(err).splitlines() or [""])[0][:240]


class Attack:
    """Base class of every registered attack.

    Args:
        objective: objective name (`auto` = the task's default: `sma` for re-ID, `ce` for
            classification).
        norm: `linf` or `l2`, for attacks that offer both.
        side: which re-ID side is perturbed, `query` or `gallery` (classification: the input).
        seed: seed of the generator used for random draws when the caller passes none.
    """

    name: ClassVar[str] = "attack"
    # Whether its search keeps within the budget and [0, 1] itself. Minimum-norm searches (CW,
    # DeepFool) set False: the final projection is their design, not a repair of a bug.
    stays_in_budget: ClassVar[bool] = True
    # The largest pixel change (pixel scale) the final projection made to the search's output so
    # far; None until a search has run (the cell's CSV `projected`).
    projected: float | None = None
    tasks: ClassVar[tuple[str, ...]] = ("reid", "classification")
    default_side: ClassVar[str] = "query"
    budgeted: ClassVar[bool] = True  # False: a threat with no eps-ball (the corruptions)
    axis: ClassVar[str | None] = None  # the option that takes eps's place in tables and figures
    # Whether it follows the model's gradients: on a model random in eval mode such an attack needs
    # an `eot` option above 1 (Athalye et al. 2018). False: a corruption, a score-based search.
    uses_gradients: ClassVar[bool] = True
    # Options added after the first format, with their defaults: a spec leaves them out at these
    # values, so the attack_params and cell ids of earlier runs stand.
    added_defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, objective: str = "auto", norm: str = "linf", side: str | None = None, seed: int = 0) -> None:
        if norm not in NORMS:
            raise ValueError(f"norm={norm!r} is not one of {', '.join(NORMS)}")
        side = self.default_side if side is None else side
        if side not in SIDES:
            raise ValueError(f"side={side!r} is not one of {', '.join(SIDES)}")
        self.objective = objective
        self.norm = norm
        self.side = side
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
        self.check_task(context.task)
        _check_inputs(x, eps, self.norm)
        objective = resolve_objective(self.objective, context.task)
        if generator is None:
            generator = torch.Generator(x.device).manual_seed(self.seed)
        clean = x.detach()
        if eps == 0 and self.budgeted:  # the 0-ball holds x alone: any search, projected onto it, returns x
            return clean.clone()
        with attack_mode(model):  # the search gets a copy: an attack editing it in place cannot move the ball
            try:
                x_adv = self.perturb(Problem(model, clean.clone(), objective, context, eps, generator))
            except Exception as err:  # the attack's (or the model's) own code: this cell fails, not the run
                raise AttackError(f"attack {self.name} raised {type(err).__name__}: {_first_line(err)}") from err
        x_adv = checked_output(self.name, x_adv, clean)
        inside = project(x_adv.detach(), clean, eps, self.norm)
        moved = float((x_adv.detach() - inside).abs().amax()) if inside.numel() else 0.0
        self.projected = max(self.projected or 0.0, moved)
        return inside

    def perturb(self, p: Problem) -> Tensor:
        """The search itself; subclasses implement it (the model is in eval mode here)."""
        raise NotImplementedError

    @classmethod
    def expand(cls, options: dict[str, Any], task: str) -> list[dict[str, Any]]:
        """The option sets one command-line item stands for on `task` (an attack: itself; the
        corruptions: one per type and severity)."""
        return [options]

    @classmethod
    def task_defaults(cls, task: str) -> dict[str, Any]:
        """Options whose default (`auto`) resolves to a value that depends on the task."""
        return {}

    def sides(self) -> tuple[str, ...]:
        """The re-ID sides this attack perturbs."""
        return (self.side,)

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Every user option with its default, read from the constructor signatures.

        The signatures are walked along the MRO while a constructor passes `*args`/`**kwargs` on;
        `seed` is left out (the harness sets it from the training seed). `class_defaults` then
        fills in what a class fixes in class attributes (the side, a metric attack's objective).
        """
        out = signature_defaults(cls, ("seed",))
        return {**out, **cls.class_defaults(out)}

    @classmethod
    def class_defaults(cls, signature: dict[str, Any]) -> dict[str, Any]:
        """Defaults a class sets in class attributes rather than in its signature."""
        return {"side": cls.default_side} if "side" in signature else {}

    def rescaled(self, reference_eps: float, eps: float, task: str) -> Attack:
        """This attack as a large-eps sanity probe runs it: the schedule it runs at `reference_eps`
        (the sweep's largest budget) with every step scaled by eps / reference_eps. Attacks whose
        search already scales with eps (the torchattacks ones) return themselves."""
        return self

    def check_task(self, task: str) -> None:
        """ValueError when this attack cannot run on `task` (e.g. a logit attack on re-ID embeddings)."""
        if task not in self.tasks:
            raise ValueError(
                f"attack {self.name!r} runs on {' and '.join(self.tasks)} models only, not {task}; "
                f"on re-ID use fgsm, pgd or a metric attack (sma, fna, metric-ifgsm, metric-mifgsm, odfa)"
            )

    def schedule(self, eps: float) -> tuple[int, float]:
        """(steps, absolute step size on the pixel scale) at budget eps."""
        return 1, eps

    def schedule_for(self, eps: float, task: str) -> tuple[int, float]:
        """`schedule` as run on `task` (an objective may change it, e.g. FGSM's random start)."""
        return self.schedule(eps)

    def describe(self, eps: float, task: str) -> dict[str, Any]:
        """CSV fields of this attack at `eps` on `task`: objective, norm, steps, step_size, perturbed."""
        steps, step_size = self.schedule_for(eps, task)
        return {
            "objective": self.resolved_objective(task),
            "norm": self.norm,
            "steps": steps,
            "step_size": step_size,
            "perturbed": self.side if task == "reid" else "input",
        }

    def resolved_objective(self, task: str) -> str:
        """The objective name this attack uses on `task` (for the CSV `objective` column)."""
        return resolve_objective(self.objective, task).name  # type: ignore[arg-type]


def resolve_options(cls: type[Attack], options: dict[str, Any]) -> dict[str, Any]:
    """Every option of attack class `cls`: its defaults replaced by `options`, each checked.

    Raises:
        TypeError: an option the attack does not take (the message lists those it takes), the
            seed (it comes from the training seed), or a value of the wrong type.
    """
    known = cls.defaults()
    if "seed" in options:
        raise TypeError(f"{cls.name}: the attack seed is not an option; it follows the training seed (--seeds)")
    bad = sorted(set(options) - set(known))
    if bad:
        raise TypeError(
            f"{cls.name} has no option(s) {', '.join(bad)} (it takes: {', '.join(sorted(known)) or 'none'})"
        )
    for key, value in options.items():
        _check_type(cls.name, key, value, known[key])
    return {**known, **options}


def _check_type(name: str, key: str, value: Any, default: Any) -> None:
    """A value of the default's type (an int where an int is expected, a finite number, ...)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise TypeError(f"{name}: {key}={value} must be a finite number")
    if default is None:
        return
    wanted = type(default)
    ok = (
        isinstance(value, bool)
        if wanted is bool
        else isinstance(value, int) and not isinstance(value, bool)
        if wanted is int
        else isinstance(value, (int, float)) and not isinstance(value, bool)
        if wanted is float
        else isinstance(value, wanted)
    )
    if not ok:
        raise TypeError(f"{name}: {key}={value!r} must be of type {wanted.__name__} (default {default!r})")


def project(x_adv: Tensor, x: Tensor, eps: float, norm: str) -> Tensor:
    """Onto the `norm` ball of radius eps around x (per image), then onto [0, 1].

    For L2 the clamp to [0, 1] can only shrink each coordinate of the perturbation towards 0
    (x itself lies in [0, 1]), so the budget still holds after it.
    """
    delta = x_adv - x
    if norm == "linf":
        delta = delta.clamp(-eps, eps)
    else:
        norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
        delta = delta * (eps / norms).clamp(max=1.0).view(-1, *[1] * (x.dim() - 1))
    return (x + delta).clamp_(0.0, 1.0)


def budget(x_adv: Tensor, x: Tensor, norm: str) -> Tensor:
    """Per-image size of the perturbation in `norm` (pixel scale)."""
    delta = (x_adv - x).flatten(1)
    return delta.abs().amax(dim=1) if norm == "linf" else delta.norm(dim=1)


def quantize(x_adv: Tensor, x: Tensor, eps: float, norm: str) -> Tensor:
    """x_adv rounded to 8 bits (what a saved PNG would hold), still within the budget.

    Rounds to the nearest k/255. x comes from 8-bit images, so under L-inf the rounded image is
    clamped to x +- floor(255 eps)/255, which stays on the grid; under L2 an image whose rounded
    perturbation leaves the ball is rounded towards x instead (|delta| only shrinks).
    """
    # On the integer grid, divided by 255 once: the result is exactly the float an 8-bit image gives.
    grid_x, rounded = torch.round(x * 255), torch.round(x_adv * 255)
    if norm == "linf":
        k = math.floor(eps * 255 + 1e-6)
        return torch.min(torch.max(rounded, grid_x - k), grid_x + k).clamp_(0, 255) / 255
    toward_x = grid_x + torch.trunc((x_adv - x) * 255)
    over = budget(rounded / 255, x, norm) > eps * (1 + 1e-6)
    return torch.where(over.view(-1, *[1] * (x.dim() - 1)), toward_x, rounded).clamp_(0, 255) / 255


def gradient(model: nn.Module, x_adv: Tensor, objective: Objective, state: Any) -> Tensor:
    """d objective / d x_adv, with no parameter gradient left behind."""
    x_adv = x_adv.detach().requires_grad_(True)
    loss = objective.per_sample(model, x_adv, state).sum()
    (grad,) = torch.autograd.grad(loss, x_adv)
    return grad


def random_start(x: Tensor, eps: float, norm: str, generator: torch.Generator) -> Tensor:
    """A random point of the eps-ball around x: U(-eps, eps) per pixel (L-inf), or a uniformly
    random direction at a U(0, eps) radius (L2, as torchattacks' PGDL2), clamped to [0, 1]."""
    shape, dev = x.shape, generator.device
    if norm == "linf":
        delta = (2 * torch.rand(shape, generator=generator, device=dev, dtype=x.dtype) - 1) * eps
    else:
        direction = torch.randn(shape, generator=generator, device=dev, dtype=x.dtype)
        direction = direction / direction.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (x.dim() - 1))
        radius = torch.rand(shape[0], generator=generator, device=dev, dtype=x.dtype) * eps
        delta = direction * radius.view(-1, *[1] * (x.dim() - 1))
    return project(x + delta.to(x.device), x, eps, norm)


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


def _check_inputs(x: Tensor, eps: float, norm: str) -> None:
    if not x.is_floating_point():
        raise TypeError(f"attacks take float images in [0, 1]; got dtype {x.dtype}")
    limit = 1.0 if norm == "linf" else math.sqrt(x[0].numel()) if x.numel() else 1.0
    if not 0.0 <= float(eps) <= limit:
        hint = "e.g. 8/255" if norm == "linf" else "the L2 norm of one image's perturbation, e.g. 0.5"
        raise ValueError(f"eps={eps} is outside [0, {limit:.4g}] for {norm}; write budgets on the pixel scale, {hint}")
    if x.numel() and (float(x.min()) < 0.0 or float(x.max()) > 1.0):
        raise ValueError("attack inputs must lie in [0, 1]; normalization belongs inside the model")
