"""lfm-bench attack library (leaf: imports torch; torchattacks only when a wrapped attack or backend runs).

Attacks are built without a model and called with one:
`create_attack("pgd", steps=10)(model, x, AttackContext("reid"), eps=8/255)`.
Adding an attack is one file plus one import line below.
"""

from robustbench_lfm.attacks import apgd_ce as _apgd_ce  # noqa: F401  (registers "apgd-ce")
from robustbench_lfm.attacks import apgd_dlr as _apgd_dlr  # noqa: F401  (registers "apgd-dlr")
from robustbench_lfm.attacks import autoattack as _autoattack  # noqa: F401  (registers "autoattack")
from robustbench_lfm.attacks import corrupt as _corrupt  # noqa: F401  (registers "corrupt", the common corruptions)
from robustbench_lfm.attacks import cw as _cw  # noqa: F401  (registers "cw")
from robustbench_lfm.attacks import deepfool as _deepfool  # noqa: F401  (registers "deepfool")
from robustbench_lfm.attacks import ensemble as _ensemble  # noqa: F401  (registers "auto-reid")
from robustbench_lfm.attacks import fgsm as _fgsm  # noqa: F401  (registers "fgsm")
from robustbench_lfm.attacks import fna as _fna  # noqa: F401  (registers "fna")
from robustbench_lfm.attacks import metric_ifgsm as _metric_ifgsm  # noqa: F401  (registers "metric-ifgsm")
from robustbench_lfm.attacks import metric_mifgsm as _metric_mifgsm  # noqa: F401  (registers "metric-mifgsm")
from robustbench_lfm.attacks import odfa as _odfa  # noqa: F401  (registers "odfa")
from robustbench_lfm.attacks import pgd as _pgd  # noqa: F401  (registers "pgd")
from robustbench_lfm.attacks import pgd_l2 as _pgd_l2  # noqa: F401  (registers "pgd-l2")
from robustbench_lfm.attacks import sma as _sma  # noqa: F401  (registers "sma")
from robustbench_lfm.attacks import square as _square  # noqa: F401  (registers "square")
from robustbench_lfm.attacks import uap as _uap  # noqa: F401  (registers "uap", the universal perturbation)
from robustbench_lfm.attacks.base import Attack, AttackError, attack_mode, budget, project, quantize, resolve_options
from robustbench_lfm.attacks.ensemble import Ensemble
from robustbench_lfm.attacks.objectives import OBJECTIVES, AttackContext, Fit, Guides, resolve_objective
from robustbench_lfm.attacks.registry import UnknownAttackError, create_attack, get_attack_class, list_attacks

__all__ = [
    "OBJECTIVES",
    "Attack",
    "AttackContext",
    "AttackError",
    "Ensemble",
    "Fit",
    "Guides",
    "UnknownAttackError",
    "attack_mode",
    "budget",
    "create_attack",
    "get_attack_class",
    "list_attacks",
    "project",
    "quantize",
    "resolve_objective",
    "resolve_options",
]
