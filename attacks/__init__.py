"""lfm-bench attack library (leaf: imports torch, and torchattacks for wrapped attacks).

Attacks are built without a model and called with one:
`create_attack("pgd", steps=10)(model, x, AttackContext("reid"), eps=8/255)`.
Adding an attack is one file plus one import line below.
"""

from attacks import fgsm as _fgsm  # noqa: F401  (registers "fgsm")
from attacks import pgd as _pgd  # noqa: F401  (registers "pgd")
from attacks.base import Attack, attack_mode
from attacks.objectives import OBJECTIVES, AttackContext, resolve_objective
from attacks.registry import UnknownAttackError, create_attack, get_attack_class, list_attacks

__all__ = [
    "OBJECTIVES",
    "Attack",
    "AttackContext",
    "UnknownAttackError",
    "attack_mode",
    "create_attack",
    "get_attack_class",
    "list_attacks",
    "resolve_objective",
]
