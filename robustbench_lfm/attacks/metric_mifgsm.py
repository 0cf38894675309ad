"""Metric-MI-FGSM (Bai et al., TPAMI 2020; momentum from Dong et al., CVPR 2018).

Threat model and objective as metric-ifgsm: the gallery is perturbed, pushed away from the
same-identity queries. Each step accumulates G = mu G + g / mean|g| (per image) and steps on
sign(G). Defaults: mu = 1, T = floor(min(eps + 4, 1.25 eps)) steps of alpha = 1/255, no random start.
"""

from __future__ import annotations

from robustbench_lfm.attacks.metric import MetricAttack
from robustbench_lfm.attacks.registry import register_attack


@register_attack("metric-mifgsm")
class MetricMIFGSM(MetricAttack):
    """Momentum version of metric-ifgsm; options as `IterativeAttack` (momentum = mu)."""

    metric_objective = "bai"
    default_side = "gallery"
    default_random_start = False
    default_momentum = 1.0
