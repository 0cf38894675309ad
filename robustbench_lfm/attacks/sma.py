"""SMA: Self Metric Attack (Bouniot et al., CVPRW 2020).

"Vulnerability of Person Re-Identification Models to Metric Adversarial Attacks".

Threat model: white-box, queries perturbed (gallery with side=gallery), L-inf (default) or L2;
the attacker needs no other image and no label. Maximizes ||f^(x') - f^(x)||^2 on the normalized
embedding from a random start (its gradient is zero at x' = x).
Defaults (adv-reid's gen_adv.py): 15 steps of alpha = 1/255, random start U(-eps, eps); the paper
reports eps = 5/255.
"""

from __future__ import annotations

from robustbench_lfm.attacks.metric import MetricAttack
from robustbench_lfm.attacks.registry import register_attack


@register_attack("sma")
class SMA(MetricAttack):
    """Self metric attack; options as `IterativeAttack` (steps, step_size, norm, side, restarts, ...)."""

    metric_objective = "sma"
    fixed_steps = 15
    default_random_start = True
