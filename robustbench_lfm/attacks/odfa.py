"""ODFA: Opposite-Direction Feature Attack (Zheng et al., IJCV 2022 "U-turn", arXiv 1809.02681).

docs/reference/reid.md D4.

Threat model: white-box, queries perturbed, L-inf (default) or L2; the attacker needs no other
image. Minimizes ||f^(x') + f^(x)||^2: the perturbed embedding is pulled towards the negated clean
one (a U-turn). adv-reid maximizes the same quantity, the wrong sign (D2); we descend.
Defaults (U-turn): T = round(min(1.25 eps, eps + 4)) steps with eps in 1/255 (10 at 8/255, 20 at
16/255), alpha = 1/255. U-turn starts at x by default, but the gradient of this loss is zero at
x' = x (the target -f^(x) is radial, and the normalization's Jacobian removes radial
directions), so a step from x follows round-off noise; we take a random start U(-eps, eps), as
U-turn's --randomstart does.
"""

from __future__ import annotations

from robustbench_lfm.attacks.metric import MetricAttack
from robustbench_lfm.attacks.registry import register_attack


@register_attack("odfa")
class ODFA(MetricAttack):
    """Opposite-direction feature attack; options as `IterativeAttack`."""

    metric_objective = "odfa"
    step_rule = "round"
    default_random_start = True
