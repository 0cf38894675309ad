"""The model registry: registry names are public API (CLI, config files, CSV).

A registry entry is a `ModelEntry`: a backbone name, a regularizer name and its default keyword
arguments. `create_model(name, num_classes, **overrides)` builds the network; overrides replace
regularizer defaults (`p=0.3`) or the backbone (`backbone="resnet50"`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from torch import nn

from robustbench_lfm.lfm_registry import Registry, UnknownNameError, calling_module, did_you_mean, signature_defaults

if TYPE_CHECKING:
    from robustbench_lfm.models.backbones import SplitBackbone

__all__ = ["UnknownNameError", "did_you_mean"]


@dataclass(frozen=True)
class ModelEntry:
    """What a registered model name means: a backbone, a regularizer, architecture options and a
    training method, each with its parameters.

    A default is written once, in the constructor signature of the regularizer class or of the
    training method's class (registered by the harness with `register_method`); an entry lists
    only where it departs from them (`spatial-dropout` at the stem) and what no class holds (its
    architecture options, MixACM's teacher). Parameter names are unique across regularizer,
    architecture and method, so a user override (`lfm:p=0.3`, `rcm-up:upsample=3`,
    `pgd-at:steps=5`) goes to the one place that declares it.

    Attributes:
        name: the registry name.
        regularizer: regularizer name (`"none"`: no regularizer module).
        backbone: backbone name, or None for the training recipe's backbone.
        params: regularizer keyword arguments that differ from the class's defaults.
        arch: architecture options of the network: `upsample` (integer input upsampling inside the
            model) and `strides` (one digit per residual stage; "rcm" = RCM's setting for the backbone).
        method: the training method the harness runs ("standard", "gwi", "pgd-at", "mixacm").
        method_params: method keyword arguments that differ from (or are absent in) the method class's
            signature, e.g. MixACM's teacher model name (a training recipe may override them).
        description: one line shown by `lfm-bench ls`.
    """

    name: str
    regularizer: str = "none"
    backbone: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    arch: dict[str, Any] = field(default_factory=dict)
    method: str = "standard"
    method_params: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    def __post_init__(self) -> None:
        clash = (set(self.params) & set(self.arch)) | (set(self.params) | set(self.arch)) & set(self.method_params)
        if clash:
            raise ValueError(f"model {self.name!r}: parameter name(s) {sorted(clash)} declared twice")

    def regularizer_params(self) -> dict[str, Any]:
        """The regularizer's parameters: its class signature's defaults, then the entry's."""
        if self.regularizer == "none":
            return dict(self.params)
        return {**method_parameters(get_regularizer(self.regularizer)), **self.params}

    def training_params(self) -> dict[str, Any]:
        """The training method's parameters: its class signature's defaults, then the entry's."""
        return {**method_defaults(self.method), **self.method_params}

    def defaults(self) -> dict[str, Any]:
        """Every parameter with its default value."""
        return {**self.regularizer_params(), **self.arch, **self.training_params()}


NOT_PARAMETERS = ("self", "seed", "recipe", "device", "teacher_model")  # set by the harness, not by users


@dataclass(frozen=True)
class Backbone:
    """A registered backbone: its factory (`strides` -> module; the signature's default is the
    backbone's default stride of each residual stage) and the (height, width) in pixels that
    re-ID images read from a dataset folder are resized to."""

    factory: Callable[..., SplitBackbone]
    input_size: tuple[int, int]
    rcm: tuple[int, ...] | None = None  # RCM's strides when not the ResNet rule (first stride 2 -> 1)

    @property
    def strides(self) -> tuple[int, ...]:
        """The default stride of each residual stage (the factory's `strides` default)."""
        return tuple(signature_defaults(self.factory)["strides"])


MODELS: Registry[ModelEntry] = Registry("model")
BACKBONES: Registry[Backbone] = Registry("backbone")
REGULARIZERS: Registry[Callable[..., nn.Module]] = Registry("regularizer")
METHODS: Registry[Callable[..., Any]] = Registry("training method")


class StandardTraining:
    """The standard method: the task loss alone; no parameters (the harness runs its step)."""


METHODS.add("standard", StandardTraining)


def method_parameters(obj: Callable[..., Any]) -> dict[str, Any]:
    """A regularizer's or training method's user parameters: its signature's defaults, less what
    the harness sets (seed, recipe, device, the teacher model)."""
    return signature_defaults(obj, NOT_PARAMETERS)


def register_method(name: str, cls: Callable[..., Any]) -> None:
    """Register a training method class (its signature's defaults are its parameters) as `name`."""
    METHODS.add(name, cls, cls.__module__)


def method_defaults(name: str) -> dict[str, Any]:
    """The parameters of training method `name` with their defaults."""
    if name not in METHODS:
        raise UnknownNameError(
            did_you_mean("training method", name, METHODS.names())
            + "; importing robustbench_lfm.methods registers the harness's methods"
        )
    return method_parameters(METHODS[name])


def register_model(entry: ModelEntry) -> ModelEntry:
    """Register a model name; a duplicate name raises DuplicateNameError (a ValueError)."""
    return MODELS.add(entry.name, entry, calling_module())


def register_backbone(
    name: str, input_size: tuple[int, int], rcm_strides: tuple[int, ...] | None = None
) -> Callable[[Callable[..., SplitBackbone]], Callable[..., SplitBackbone]]:
    """Decorator registering a backbone factory under `name`.

    Args:
        name: the registry name.
        input_size: (height, width) in pixels that re-ID images read from a dataset folder are resized to.
        rcm_strides: RCM's stride setting for this backbone, when it is not the ResNet rule (the
            first stride-2 stage set to 1), e.g. VGG-16's (1, 1, 2, 2, 2).
    """

    def wrap(factory: Callable[..., SplitBackbone]) -> Callable[..., SplitBackbone]:
        if "strides" not in signature_defaults(factory):
            raise TypeError(f"backbone {name!r}: its factory needs a `strides` argument with a default")
        BACKBONES.add(name, Backbone(factory, input_size, rcm_strides), factory.__module__)
        return factory

    return wrap


def register_regularizer(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Decorator registering a regularizer module class under `name`."""

    def wrap(cls: type[nn.Module]) -> type[nn.Module]:
        REGULARIZERS.add(name, cls, cls.__module__)
        return cls

    return wrap


COMPOSE = "+"


def get_model_entry(name: str) -> ModelEntry:
    """The entry registered as `name`, or the composition of `a+b+...` (`compose`);
    UnknownNameError lists close matches."""
    if COMPOSE in name and name not in MODELS.names():
        return compose(name)
    return MODELS[name]


def model_parts(name: str) -> list[str]:
    """The registered entries a model name is made of: itself, or each part of `a+b`."""
    return [p.strip() for p in name.split(COMPOSE)] if COMPOSE in name and name not in MODELS.names() else [name]


def compose(name: str) -> ModelEntry:
    """One entry joining registered ones (`rcm-up+pgd-at`, `lfm+pgd-at`): at most one regularizer,
    one training method and one backbone among the parts; their architecture options and
    parameters together (a name two parts set to different values is a conflict).

    Raises:
        UnknownNameError: a part is not registered.
        ValueError: an empty part, or two parts that conflict (named, with the fix).
    """
    parts = [p.strip() for p in name.split(COMPOSE)]
    if any(not p for p in parts):
        raise ValueError(f"{name!r} has an empty part; join registered names, e.g. rcm-up+pgd-at")
    entries = [MODELS[p] for p in parts]
    return ModelEntry(
        name,
        regularizer=_one("regularizer", [(e.name, e.regularizer) for e in entries], "none"),
        backbone=_one("backbone", [(e.name, e.backbone) for e in entries], None),
        params=_merged([(e.name, e.params) for e in entries]),
        arch=_merged([(e.name, e.arch) for e in entries]),
        method=_one("training method", [(e.name, e.method) for e in entries], "standard"),
        method_params=_merged([(e.name, e.method_params) for e in entries]),
        description="composed: " + " + ".join(e.description or e.name for e in entries),
    )


def _one(kind: str, values: list[tuple[str, Any]], default: Any) -> Any:
    """The one non-default value among the parts (or the default); two different ones conflict."""
    chosen = {(part, v) for part, v in values if v != default}
    if len({v for _, v in chosen}) > 1:
        listed = ", ".join(f"{v} (from {part})" for part, v in sorted(chosen, key=str))
        raise ValueError(f"it joins two {kind}s, {listed}; a composed model takes one of each")
    return next(iter(chosen))[1] if chosen else default


def _merged(dicts: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """The parts' options together; one option set to two values conflicts."""
    out: dict[str, Any] = {}
    for part, d in dicts:
        for key, value in d.items():
            if key in out and out[key] != value:
                raise ValueError(f"{part} sets {key}={value!r} and another part {out[key]!r}; give one value")
            out[key] = value
    return out


def get_backbone(name: str) -> Callable[..., SplitBackbone]:
    """The backbone factory registered as `name`."""
    return BACKBONES[name].factory


def get_input_size(backbone: str) -> tuple[int, int]:
    """(height, width) in pixels the backbone `backbone` expects from real (folder) datasets."""
    return BACKBONES[backbone].input_size


def get_default_strides(backbone: str) -> tuple[int, ...]:
    """The default stride of each residual stage of `backbone`."""
    return BACKBONES[backbone].strides


def get_regularizer(name: str) -> Callable[..., nn.Module]:
    """The regularizer class registered as `name`."""
    return REGULARIZERS[name]


def list_models() -> list[str]:
    """Registered model names, sorted."""
    return MODELS.names()


def list_backbones() -> list[str]:
    """Registered backbone names, sorted."""
    return BACKBONES.names()


def get_rcm_strides(backbone: str) -> tuple[int, ...] | None:
    """RCM's strides registered for `backbone`, or None when the ResNet rule applies."""
    return BACKBONES[backbone].rcm
