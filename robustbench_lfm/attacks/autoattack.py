"""AutoAttack (Croce & Hein, ICML 2020, arXiv 2003.01690), assembled from torchattacks' members
with the settings of the authors' code.

Threat model: white-box plus black-box, L-inf (default; 8/255 on CIFAR-10) or L2 (0.5). The
standard ensemble runs APGD-CE, APGD-T (targeted DLR loss), FAB-T and Square in turn, each on the
images still classified correctly; an image counts as robust only if it survives all four. Needs
at least 3 classes (the targeted DLR loss).

The settings are those of the authors' code (github.com/fra31/auto-attack, `autoattack.py`):
100 iterations for each white-box member, the 9 most likely other classes as targets of APGD-T
and FAB-T, one restart each in the standard version, and Square's 5000 queries on the first
half of its 10000-query schedule (`resc_schedule=False`). torchattacks' own `AutoAttack` builds
the same members with torchattacks' defaults instead, 10 iterations each and a rescaled Square
schedule (torchattacks issue #196), which is a weaker attack than the one published numbers
come from. So the ensemble is built here, member by member.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from robustbench_lfm.attacks.registry import register_attack
from robustbench_lfm.attacks.wrapped import TorchattacksAttack

ITERATIONS = 100  # of APGD-CE, APGD-DLR, APGD-T and FAB(-T), per restart (fra31/auto-attack)
TARGETS = 9  # target classes of APGD-T and FAB-T: the most likely ones after the true class
QUERIES = 5000  # Square's, with p_init 0.8 on the schedule of its first 5000 queries
RAND_EOT = 20  # gradient samples per step in the version for randomized defenses
# Each version's members in the order they run, as the authors' code sets them: (member, its loss
# or whether FAB is targeted, restarts, EOT samples per step).
VERSIONS: dict[str, tuple[tuple[str, str | bool, int, int], ...]] = {
    "standard": (("apgd", "ce", 1, 1), ("apgd-t", "dlr", 1, 1), ("fab", True, 1, 1), ("square", "margin", 1, 1)),
    "plus": (("apgd", "ce", 5, 1), ("apgd", "dlr", 5, 1), ("fab", False, 5, 1), ("square", "margin", 1, 1),
             ("apgd-t", "dlr", 1, 1), ("fab", True, 1, 1)),
    "rand": (("apgd", "ce", 1, RAND_EOT), ("apgd", "dlr", 1, RAND_EOT)),
}  # fmt: skip


@register_attack("autoattack")
class AutoAttack(TorchattacksAttack):
    """The AutoAttack ensemble of Croce & Hein's code.

    Args:
        norm: `linf` or `l2`.
        version: `standard` (the published ensemble: APGD-CE, APGD-T, FAB-T, Square), `plus`
            (APGD-CE and APGD-DLR with 5 restarts, FAB with 5, Square, APGD-T, FAB-T) or `rand`
            (APGD-CE and APGD-DLR with 20-sample EOT, for randomized defenses).
        steps: iterations of each white-box member per restart; 100 in the published ensemble,
            fewer only for a quick, weaker look (it is part of the cell's identity).
        seed: generator seed (drawn into torchattacks' seed).
    """

    loss = "ensemble"

    def __init__(
        self, norm: str | None = None, version: str = "standard", steps: int = ITERATIONS, seed: int = 0
    ) -> None:
        super().__init__(norm, seed)
        if version not in VERSIONS:
            raise ValueError(f"autoattack: version={version!r} is not one of {', '.join(VERSIONS)}")
        if int(steps) < 1:
            raise ValueError(f"autoattack: need steps >= 1 (got {steps})")
        self.version, self.steps = version, int(steps)

    def build(self, model: nn.Module, eps: float, seed: int, n_classes: int) -> Any:
        if n_classes < 3:
            raise ValueError(f"autoattack needs at least 3 classes (the model has {n_classes})")
        import torchattacks  # only where it runs: importing it costs scipy.stats at start-up

        return torchattacks.MultiAttack(self.members(model, eps, seed, n_classes))

    def members(self, model: nn.Module, eps: float, seed: int, n_classes: int) -> list[Any]:
        """The version's torchattacks attacks (`VERSIONS`), in the order they run."""
        import torchattacks

        norm, steps, targets = self.ta_norm(), self.steps, min(TARGETS, n_classes - 1)
        built = []
        for member, loss, restarts, eot in VERSIONS[self.version]:
            common = {"norm": norm, "eps": eps, "n_restarts": restarts, "seed": seed}
            if member == "apgd":
                attack = torchattacks.APGD(model, steps=steps, loss=loss, eot_iter=eot, rho=0.75, **common)
            elif member == "apgd-t":
                attack = torchattacks.APGDT(model, steps=steps, eot_iter=eot, rho=0.75, n_classes=n_classes, **common)
            elif member == "fab":
                attack = torchattacks.FAB(model, steps=steps, multi_targeted=loss, n_classes=n_classes, **common)
            else:
                attack = torchattacks.Square(model, n_queries=QUERIES, p_init=0.8, resc_schedule=False, **common)
            if member in ("apgd-t", "fab"):
                attack.n_target_classes = targets  # torchattacks targets every other class
            built.append(attack)
        return built

    def passes(self, n_classes: int, most: bool = True) -> int:
        """Forward(-backward) passes per image: with `most`, as if every image reached every member
        (a model no member fools), the most the ensemble costs; else its first member alone, which
        every image runs. A later member runs only on the images the ones before it left. What the
        dry run's estimate counts; the CSV's `steps` stays 0."""
        targets = min(TARGETS, n_classes - 1)
        total = 0
        for member, loss, restarts, eot in VERSIONS[self.version] if most else VERSIONS[self.version][:1]:
            if member == "square":
                total += QUERIES * restarts
            else:
                per_target = targets if member == "apgd-t" or loss is True else 1
                total += self.steps * restarts * eot * per_target
        return total

    def schedule(self, eps: float) -> tuple[int, float]:
        return 0, 0.0  # an ensemble: steps differ per member
