"""lfm-bench attack library (leaf: imports torch, and torchattacks for wrapped attacks).

Attacks are built without a model and called with one:
`create_attack("pgd", steps=10)(model, x, AttackContext("reid"), eps=8/255)`.
Adding an attack is one file plus one import line below.
"""

from attacks import apgd_ce as _apgd_ce  # noqa: F401  (registers "apgd-ce")
from attacks import apgd_dlr as _apgd_dlr  # noqa: F401  (registers "apgd-dlr")
from attacks import autoattack as _autoattack  # noqa: F401  (registers "autoattack")
from attacks import corrupt as _corrupt  # noqa: F401  (registers "corrupt", the common corruptions)
from attacks import cw as _cw  # noqa: F401  (registers "cw")
from attacks import deepfool as _deepfool  # noqa: F401  (registers "deepfool")
from attacks import fgsm as _fgsm  # noqa: F401  (registers "fgsm")
from attacks import fna as _fna  # noqa: F401  (registers "fna")
from attacks import metric_ifgsm as _metric_ifgsm  # noqa: F401  (registers "metric-ifgsm")
from attacks import metric_mifgsm as _metric_mifgsm  # noqa: F401  (registers "metric-mifgsm")
from attacks import odfa as _odfa  # noqa: F401  (registers "odfa")
from attacks import pgd as _pgd  # noqa: F401  (registers "pgd")
from attacks import pgd_l2 as _pgd_l2  # noqa: F401  (registers "pgd-l2")
from attacks import sma as _sma  # noqa: F401  (registers "sma")
from attacks import square as _square  # noqa: F401  (registers "square")
from attacks import uap as _uap  # noqa: F401  (registers "uap", the universal perturbation)
from attacks.base import Attack, attack_mode, budget, project, quantize, resolve_options
from attacks.objectives import OBJECTIVES, AttackContext, Fit, Guides, resolve_objective
from attacks.registry import UnknownAttackError, create_attack, get_attack_class, list_attacks

__all__ = [
    "OBJECTIVES",
    "Attack",
    "AttackContext",
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
