"""The public contract checks (robustbench_lfm.testing), which plugin authors call, hold for every
built-in entry: so a plugin is held to exactly what the project's own entries meet."""

from __future__ import annotations

import pytest

from robustbench_lfm import attacks, models, testing
from robustbench_lfm.datasets import DATASETS
from tests.test_attacks import FAST


@pytest.mark.parametrize("name", models.registry.REGULARIZERS.names())
def test_every_regularizer_keeps_the_contract(name):
    testing.check_regularizer(name)


@pytest.mark.parametrize("name", models.list_models())
def test_every_model_keeps_the_contract(name):
    testing.check_model(name)


@pytest.mark.parametrize("name", attacks.list_attacks())
def test_every_attack_keeps_the_contract(name):
    testing.check_attack(name, **FAST.get(name, {}))


@pytest.mark.parametrize("name", DATASETS.names())
def test_every_dataset_keeps_the_contract(name):
    testing.check_dataset(name, load=False)


def test_a_broken_regularizer_fails_the_contract_by_name():
    import torch

    from robustbench_lfm.models.regularizers import Regularizer

    @models.registry.register_regularizer("broken-in-eval")
    class Broken(Regularizer):
        def __init__(self, p: float = 0.5, seed: int = 0) -> None:
            super().__init__(p, seed)

        def forward(self, x):  # noise even in eval mode: breaks "identity outside training"
            return x + torch.rand_like(x)

    try:
        with pytest.raises(AssertionError, match="regularizer 'broken-in-eval': not the identity in eval mode"):
            testing.check_regularizer("broken-in-eval")
    finally:
        models.registry.REGULARIZERS.remove("broken-in-eval")
