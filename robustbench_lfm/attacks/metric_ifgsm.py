"""Metric-I-FGSM: Bai et al.'s metric attack on the gallery (TPAMI 2020, arXiv 1901.10650).

"Adversarial Metric Attack and Defense for Person Re-identification"; docs/reference/reid.md D1.

Threat model: white-box, the **gallery** is perturbed (queries stay clean), L-inf (default) or L2;
the attacker knows the query set and identities. Each gallery image is pushed away from every
query of its identity: maximizes sum_q ||f^(q) - f^(g')||^2; distractors (no query of their
identity) stay clean.
Defaults (Bai's code): T = floor(min(eps + 4, 1.25 eps)) steps with eps in 1/255 (6 at 5/255, 10 at
8/255), alpha = 1/255, no random start; the paper reports eps = 5/255.
"""

from __future__ import annotations

from robustbench_lfm.attacks.metric import MetricAttack
from robustbench_lfm.attacks.registry import register_attack


@register_attack("metric-ifgsm")
class MetricIFGSM(MetricAttack):
    """Bai et al.'s iterative metric attack on the gallery; options as `IterativeAttack`."""

    metric_objective = "bai"
    default_side = "gallery"
    default_random_start = False
