"""lfm-bench model library (leaf: imports torch only): backbones, regularizers, model registry.

Refer to models by registry name: `create_model("lfm", num_classes)`, `list_models()`.
"""

from models.registry import (
    ModelEntry,
    UnknownNameError,
    get_input_size,
    get_model_entry,
    list_backbones,
    list_models,
)
from models.reid import FlipAveraged, ReIDNet, create_model

__all__ = [
    "FlipAveraged",
    "ModelEntry",
    "ReIDNet",
    "UnknownNameError",
    "create_model",
    "get_input_size",
    "get_model_entry",
    "list_backbones",
    "list_models",
]
