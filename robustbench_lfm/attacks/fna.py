"""FNA: Furthest-Negative Attack (Bouniot et al., CVPRW 2020).

Threat model: white-box, queries perturbed, L-inf (default) or L2; the attacker knows the query
set and its identities (the guides). Maximizes
sum_{same-identity queries g} ||f^(x') - g||^2 - ||f^(x') - c_far||^2, with c_far the prototype
(mean normalized feature) of the other identity farthest from f^(x).
Defaults (adv-reid): 15 steps of alpha = 1/255, no random start; the paper reports eps = 5/255.
"""

from __future__ import annotations

from robustbench_lfm.attacks.metric import MetricAttack
from robustbench_lfm.attacks.registry import register_attack


@register_attack("fna")
class FNA(MetricAttack):
    """Furthest-negative attack; options as `IterativeAttack`."""

    metric_objective = "fna"
    fixed_steps = 15
    default_random_start = False
