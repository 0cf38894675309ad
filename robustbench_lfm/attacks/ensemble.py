"""auto-reid: each query's worst case over a fixed ensemble of query-side metric attacks.

Why an ensemble. A robustness number is worth its strongest attack (Carlini et al. 2019, "On
evaluating adversarial robustness"; Tramèr et al., NeurIPS 2020, "On adaptive attacks"):
AutoAttack (Croce & Hein, ICML 2020) ended the overstated robustness of single weak attacks on
classification by scoring every image at its worst over a fixed, parameter-free ensemble. Re-ID
has no such standard, and a single metric attack flatters some models: under --distance
euclidean, SMA in the scored geometry was measured weaker (Rank-1 9.7%) than SMA in cosine (4.7%).

The members (fixed; `MEMBERS`), each under the run's budget and norm, on the query side:
  * `sma` in both geometries: the self metric attack (Bouniot et al., CVPRW 2020), label-free,
    random start; cosine and Euclidean so that neither --distance makes the ensemble weaker;
  * `fna` in both geometries: the furthest-negative attack (same paper), guided by the query
    set's identities, the strongest guided attack of that paper;
  * `odfa`: the opposite-direction feature attack (Zheng et al., IJCV 2022 "U-turn"), in cosine,
    the geometry it is defined in; another objective, so another failure mode of the model;
  * `metric-mifgsm:side=query` in Euclidean geometry: the momentum metric attack (Bai et al.,
    TPAMI 2020; momentum from Dong et al., CVPR 2018), a different optimiser, which escapes the
    poor local maxima of sign-gradient ascent that the others share.
Gallery-side attacks (metric-ifgsm, metric-mifgsm's default, sma:side=gallery) are not members:
a gallery perturbation changes every query's ranking at once, so it has no per-query worst case.

How it is scored. The sweep (robustbench_lfm/group.py) runs each member exactly as that attack
run alone in the same cell (same options, schedule, seed and generator), scores its attacked
queries against the clean gallery, and keeps each query's worst outcome over the members: the
largest first-match rank for Rank-k, the lowest AP for mAP, the lowest INP for mINP (the three
may come from different members). A query's ranking depends on its own embedding and the clean
gallery alone, so this is the ensemble's exact per-query worst case, never weaker than any
member alone. Each member's per-query outcome is kept in `members.csv`.

Called on images alone (`attack(model, x, context, eps=...)`, outside a sweep, with no gallery
to rank against), it returns per image the member output whose embedding moved farthest from the
clean one (cosine distance): a proxy for the sweep's score-level worst case, which needs the
gallery.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from robustbench_lfm.attacks import fna as _fna  # noqa: F401  (its members register before it)
from robustbench_lfm.attacks import metric_mifgsm as _metric_mifgsm  # noqa: F401
from robustbench_lfm.attacks import odfa as _odfa  # noqa: F401
from robustbench_lfm.attacks import sma as _sma  # noqa: F401
from robustbench_lfm.attacks.base import Attack, Problem
from robustbench_lfm.attacks.registry import create_attack, register_attack

# (attack, options): the fixed members, in the order ties are broken (the first member that
# reaches a query's worst outcome is said to decide it).
MEMBERS: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...] = (
    ("sma", (("geometry", "cosine"),)),
    ("sma", (("geometry", "euclidean"),)),
    ("fna", (("geometry", "cosine"),)),
    ("fna", (("geometry", "euclidean"),)),
    ("odfa", (("geometry", "cosine"),)),
    ("metric-mifgsm", (("geometry", "euclidean"), ("side", "query"))),
)


def members_text(members: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...] = MEMBERS) -> str:
    """The members as one option value: `sma:geometry=cosine;...` (the CSV `attack_params`)."""
    return ";".join(name + ":" + ",".join(f"{k}={v}" for k, v in options) for name, options in members)


MEMBERS_TEXT = members_text()


class Ensemble(Attack):
    """An attack scored at the worst over its members, per query, by the sweep (module docstring)."""

    members_of: ClassVar[tuple[tuple[str, tuple[tuple[str, Any], ...]], ...]] = ()

    def member_options(self) -> list[tuple[str, dict[str, Any]]]:
        """(attack name, options) of each member under this ensemble's norm."""
        return [(name, {**dict(options), "norm": self.norm}) for name, options in self.members_of]

    def perturb(self, p: Problem) -> Tensor:
        """Images alone: per image, the member output whose embedding moved farthest (cosine)."""
        with torch.no_grad():
            clean = F.normalize(p.model(p.x).float(), dim=1)
        best, moved = p.x.clone(), torch.full((len(p.x),), -1.0, device=p.x.device)
        for name, options in self.member_options():
            member = create_attack(name, seed=self.seed, **options)
            x_adv = member(p.model, p.x, p.context, eps=p.eps)  # its own generator, as when run alone
            with torch.no_grad():
                distance = 1 - (F.normalize(p.model(x_adv).float(), dim=1) * clean).sum(1)
            better = distance > moved
            best[better], moved[better] = x_adv[better], distance[better]
        return best


@register_attack("auto-reid")
class AutoReID(Ensemble):
    """The worst case per query over `MEMBERS` (module docstring).

    Args:
        norm: `linf` or `l2`, every member's.
        members: the fixed member list (recorded in `attack_params`; not a choice).
        seed: every member's seed (the training seed), as each would get when run alone.
    """

    tasks = ("reid",)
    members_of = MEMBERS

    def __init__(self, norm: str = "linf", members: str = MEMBERS_TEXT, seed: int = 0) -> None:
        if members != MEMBERS_TEXT:
            raise ValueError(
                f"auto-reid: the members are fixed ({MEMBERS_TEXT}); run other attacks on their own "
                "(--attacks sma:geometry=euclidean,...) to see them"
            )
        super().__init__("auto", norm, "query", seed)
        self.members = members

    def schedule(self, eps: float) -> tuple[int, float]:
        return 0, 0.0  # an ensemble: each member has its own schedule

    def resolved_objective(self, task: str) -> str:
        return "worst-case"

    def rescaled(self, reference_eps: float, eps: float, task: str) -> Attack:
        return self  # the sweep rescales each member (group.py builds them from member cells)
