"""`ModelSpec`: a model of a run, resolved (split out of robustbench_lfm/spec.py, which
re-exports it, so that checkpoints.py can build one without importing the spec's resolution)."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from typing import Any

from robustbench_lfm.parsing import Params, format_param

CHECKPOINT_PREFIX = "ckpt:"


@dataclass(frozen=True)
class ModelSpec:
    """A registered model name with its overrides, resolved parameters, backbone and training method.

    Attributes:
        name: the registry name.
        backbone: the resolved backbone.
        regularizer: the CSV `regularizer` value: the regularizer module's name, else the model's
            own name for methods and architecture changes, "none" for plain.
        params: the user's overrides (they make the label, `lfm:p=0.3`).
        resolved: every parameter after defaults, recipe and overrides (CSV `model_params`).
        method: the training method ("standard", "gwi", "pgd-at", "mixacm").
        teacher: MixACM's teacher model, trained first; None otherwise.
        pretrained: sha256 of the --pretrained file its backbone starts from ("" = random init).
        weights: for a model evaluated as given, not trained (method "checkpoint": `--models
            ckpt:PATH`; "external": `robustbench_lfm.evaluate`), the sha256 of its weights.
        base: a checkpoint's architecture: the registered model its file is loaded into.
        path: where a checkpoint is read; not part of the identity (its sha256 is).
    """

    name: str
    backbone: str
    regularizer: str
    params: Params = ()
    resolved: Params = ()
    method: str = "standard"
    teacher: ModelSpec | None = None
    pretrained: str = ""
    weights: str = ""
    base: ModelSpec | None = None
    path: str = field(default="", compare=False)

    def key(self) -> dict[str, Any]:
        """What identifies the model in checkpoint keys: every field but `path`; `pretrained`,
        `weights` and `base` only when set (so keys of trained models stay as they were)."""
        out = asdict(self)
        _drop_empty(out)
        return out

    @property
    def given(self) -> bool:
        """Evaluated as given (a checkpoint file or an in-process module), never trained here."""
        return self.method in GIVEN_METHODS

    def initialised_from(self, sha256: str) -> ModelSpec:
        """This model (and its teacher) with the backbone initialised from the file `sha256`;
        a given model is what it is."""
        if self.given:
            return self
        teacher = None if self.teacher is None else self.teacher.initialised_from(sha256)
        return dataclasses.replace(self, pretrained=sha256, teacher=teacher)

    @property
    def label(self) -> str:
        """The display/CSV name: 'lfm', 'lfm:p=0.3', 'ckpt:lfm@3fa91c2e' (a checkpoint: its
        architecture and the start of its sha256), or the name given to `evaluate`."""
        if self.method == "checkpoint" and self.base is not None:
            return f"ckpt:{self.base.label}@{self.weights[:8]}"
        if not self.params:
            return self.name
        return self.name + ":" + ",".join(f"{k}={format_param(v)}" for k, v in self.params)

    def overrides(self) -> dict[str, Any]:
        """Keyword arguments for `models.create_model`."""
        return {"backbone": self.backbone, **dict(self.resolved)}


GIVEN_METHODS = ("checkpoint", "external")


def _drop_empty(model: dict[str, Any]) -> None:
    model.pop("path", None)
    for name in ("pretrained", "weights", "base"):
        if not model.get(name):
            model.pop(name, None)
    for name in ("teacher", "base"):
        if isinstance(model.get(name), dict):
            _drop_empty(model[name])
