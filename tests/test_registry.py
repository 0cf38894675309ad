"""Contract tests of the one registry class, over every registry of the project."""

from __future__ import annotations

import importlib
import inspect

import pytest

import robustbench_lfm.methods  # noqa: F401  (registers the training methods)
from robustbench_lfm import attacks, models
from robustbench_lfm.attacks.objectives import OBJECTIVES
from robustbench_lfm.datasets import DATASETS
from robustbench_lfm.lfm_registry import DuplicateNameError, Registry, UnknownNameError
from robustbench_lfm.metric_table import METRICS

REGISTRIES = {
    "backbone": models.registry.BACKBONES,
    "regularizer": models.registry.REGULARIZERS,
    "model": models.registry.MODELS,
    "training method": models.registry.METHODS,
    "attack": attacks.registry.ATTACKS,
    "objective": OBJECTIVES,
    "dataset": DATASETS,
    "metric": METRICS,
}


@pytest.mark.parametrize("kind", REGISTRIES)
def test_every_entry_names_the_project_module_that_registered_it(kind: str) -> None:
    registry = REGISTRIES[kind]
    assert registry.kind == kind and len(registry) > 0
    for name in registry:
        module = importlib.import_module(registry.source(name))
        assert module.__name__.split(".")[0] in ("models", "attacks", "robustbench_lfm"), (name, module)


@pytest.mark.parametrize("kind", REGISTRIES)
def test_an_unknown_name_lists_close_matches(kind: str) -> None:
    registry = REGISTRIES[kind]
    name = registry.names()[0]
    with pytest.raises(UnknownNameError, match=f"unknown {kind} '{name}x'; did you mean '{name}'"):
        registry[name + "x"]
    with pytest.raises(UnknownNameError, match=f"unknown {kind} '{name.upper()}'; did you mean '{name}'"):
        registry[name.upper()]  # names are lower case: a name in capitals is a typo with an answer
    with pytest.raises(KeyError):  # UnknownNameError stays a KeyError for callers that catch one
        registry.source(name + "x")


@pytest.mark.parametrize("kind", REGISTRIES)
def test_a_name_registered_twice_names_both_sources(kind: str) -> None:
    registry = REGISTRIES[kind]
    name = registry.names()[0]
    first = registry.source(name)
    with pytest.raises(DuplicateNameError, match=f"registered twice: by {first} and by {__name__}"):
        registry.add(name, registry[name])
    assert registry.source(name) == first


def test_decorator_registers_the_object_under_its_module_and_remove_undoes_it() -> None:
    registry: Registry[type] = Registry("widget")

    @registry.register("w")
    class Widget:
        pass

    assert registry["w"] is Widget and registry.source("w") == __name__ and registry.items() == [("w", Widget)]
    assert registry.remove("w") is Widget and "w" not in registry


def test_model_registration_records_the_caller_not_the_wrapper() -> None:
    entry = models.ModelEntry("test-only-plain")
    try:
        models.registry.register_model(entry)
        assert models.registry.MODELS.source("test-only-plain") == __name__
    finally:
        models.registry.MODELS.remove("test-only-plain")


def test_backbone_default_strides_come_from_the_factory_signature() -> None:
    for name in models.list_backbones():
        declared = inspect.signature(models.registry.get_backbone(name)).parameters["strides"].default
        assert models.registry.get_default_strides(name) == tuple(declared)


def test_a_composed_model_joins_an_architecture_a_regularizer_and_a_method() -> None:
    rcm_at = models.get_model_entry("rcm-up+pgd-at")
    assert rcm_at.arch == {"upsample": 2} and rcm_at.method == "pgd-at" and rcm_at.regularizer == "none"
    lfm_at = models.get_model_entry("lfm+pgd-at")
    assert lfm_at.regularizer == "lfm" and {"p", "eps", "steps"} <= set(lfm_at.defaults())
    assert models.registry.model_parts("lfm+pgd-at") == ["lfm", "pgd-at"]


@pytest.mark.parametrize(
    ("name", "problem"),
    [("pgd-at+gwi", "two training methods"), ("lfm+dropout", "two regularizers"), ("rcm-up+", "empty part")],
)
def test_conflicting_or_empty_parts_are_refused(name, problem) -> None:
    with pytest.raises(ValueError, match=problem):
        models.get_model_entry(name)
