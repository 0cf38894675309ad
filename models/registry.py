"""The model registry: registry names are public API (CLI, config files, CSV).

A registry entry is a `ModelEntry`: a backbone name, a regularizer name and its default keyword
arguments. `create_model(name, num_classes, **overrides)` builds the network; overrides replace
regularizer defaults (`p=0.3`) or the backbone (`backbone="resnet50"`).
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn


class UnknownNameError(KeyError):
    """A registry lookup failed; the message lists the known names and close matches."""

    def __str__(self) -> str:
        return str(self.args[0])


def unknown_name_message(kind: str, name: str, known: list[str]) -> str:
    """One-line message for an unknown registry name, with a did-you-mean."""
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return f"unknown {kind} {name!r}{hint} (known: {', '.join(sorted(known))})"


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
        return {**signature_defaults(get_regularizer(self.regularizer)), **self.params}

    def training_params(self) -> dict[str, Any]:
        """The training method's parameters: its class signature's defaults, then the entry's."""
        return {**method_defaults(self.method), **self.method_params}

    def defaults(self) -> dict[str, Any]:
        """Every parameter with its default value."""
        return {**self.regularizer_params(), **self.arch, **self.training_params()}


_MODELS: dict[str, ModelEntry] = {}
_BACKBONES: dict[str, Callable[..., nn.Module]] = {}
_INPUT_SIZES: dict[str, tuple[int, int]] = {}
_STRIDES: dict[str, tuple[int, ...]] = {}
_REGULARIZERS: dict[str, Callable[..., nn.Module]] = {}
_METHODS: dict[str, dict[str, Any]] = {"standard": {}}
NOT_PARAMETERS = ("self", "seed", "recipe", "device", "teacher_model")  # set by the harness, not by users


def signature_defaults(cls: Callable[..., Any]) -> dict[str, Any]:
    """Keyword defaults of a class's constructor (or a function), including those it passes on
    to its base through `**kwargs` (lfm-code takes LFM's), less what the harness sets (seed, ...)."""
    out: dict[str, Any] = {}
    for klass in getattr(cls, "__mro__", (cls,)):
        init = klass.__dict__.get("__init__") if isinstance(klass, type) else klass
        if init is None:
            continue
        params = inspect.signature(init).parameters.values()
        for p in params:
            if p.default is not inspect.Parameter.empty and p.name not in NOT_PARAMETERS:
                out.setdefault(p.name, p.default)
        if not any(p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) for p in params):
            break
    return out


def register_method(name: str, cls: Callable[..., Any]) -> None:
    """Register a training method's parameters (the defaults of `cls`'s signature) under `name`."""
    _add(_METHODS, "training method", name, signature_defaults(cls))


def method_defaults(name: str) -> dict[str, Any]:
    """The parameters of training method `name` with their defaults."""
    if name not in _METHODS:
        raise UnknownNameError(
            f"training method {name!r} is not registered (known: {', '.join(sorted(_METHODS))}); "
            "importing robustbench_lfm.methods registers the harness's methods"
        )
    return dict(_METHODS[name])


def _add(table: dict, kind: str, name: str, value: Any) -> None:
    if name in table:
        raise ValueError(f"{kind} {name!r} is already registered")
    table[name] = value


def register_model(entry: ModelEntry) -> ModelEntry:
    """Register a model name; a duplicate name raises ValueError."""
    _add(_MODELS, "model", entry.name, entry)
    return entry


def register_backbone(
    name: str, input_size: tuple[int, int], strides: tuple[int, ...]
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering a backbone factory under `name`.

    Args:
        name: the registry name.
        input_size: (height, width) in pixels that re-ID images read from a dataset folder are resized to.
        strides: the default stride of each residual stage (the factory's `strides` argument).
    """

    def wrap(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _add(_BACKBONES, "backbone", name, factory)
        _INPUT_SIZES[name] = input_size
        _STRIDES[name] = strides
        return factory

    return wrap


def register_regularizer(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Decorator registering a regularizer module class under `name`."""

    def wrap(cls: type[nn.Module]) -> type[nn.Module]:
        _add(_REGULARIZERS, "regularizer", name, cls)
        return cls

    return wrap


def _lookup(table: dict, kind: str, name: str) -> Any:
    if name not in table:
        raise UnknownNameError(unknown_name_message(kind, name, list(table)))
    return table[name]


def get_model_entry(name: str) -> ModelEntry:
    """The entry registered as `name`; UnknownNameError lists close matches."""
    return _lookup(_MODELS, "model", name)


def get_backbone(name: str) -> Callable[..., nn.Module]:
    """The backbone factory registered as `name`."""
    return _lookup(_BACKBONES, "backbone", name)


def get_input_size(backbone: str) -> tuple[int, int]:
    """(height, width) in pixels the backbone `backbone` expects from real (folder) datasets."""
    _lookup(_BACKBONES, "backbone", backbone)
    return _INPUT_SIZES[backbone]


def get_default_strides(backbone: str) -> tuple[int, ...]:
    """The default stride of each residual stage of `backbone`."""
    _lookup(_BACKBONES, "backbone", backbone)
    return _STRIDES[backbone]


def get_regularizer(name: str) -> Callable[..., nn.Module]:
    """The regularizer class registered as `name`."""
    return _lookup(_REGULARIZERS, "regularizer", name)


def list_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_MODELS)


def list_backbones() -> list[str]:
    """Registered backbone names, sorted."""
    return sorted(_BACKBONES)
