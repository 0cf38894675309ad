"""lfm-bench model library (leaf: imports torch only): backbones, regularizers, networks, registry.

Refer to models by registry name: `create_model("lfm", num_classes, task="reid")`, `list_models()`.
"""

from robustbench_lfm.models.nets import ClassifierNet, FlipAveraged, ReIDNet, SiteNet
from robustbench_lfm.models.registry import (
    ModelEntry,
    UnknownNameError,
    get_input_size,
    get_model_entry,
    list_backbones,
    list_models,
    method_defaults,
    method_parameters,
    register_method,
)
from robustbench_lfm.models.zoo import TASKS, create_model, resolve_params

__all__ = [
    "TASKS",
    "ClassifierNet",
    "FlipAveraged",
    "ModelEntry",
    "ReIDNet",
    "SiteNet",
    "UnknownNameError",
    "create_model",
    "get_input_size",
    "get_model_entry",
    "list_backbones",
    "list_models",
    "method_defaults",
    "method_parameters",
    "register_method",
    "resolve_params",
]
