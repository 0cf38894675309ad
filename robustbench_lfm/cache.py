"""The checkpoint cache: trained weights keyed by the hash of (model spec, recipe, data spec, seed).

Weights are stored as safetensors (loading never runs code) next to a JSON sidecar holding the
file's sha256 and what produced it. A checkpoint is verified by its sha256 before use; one that
fails is reported and retrained, never silently used. Writes and the sidecar format are those of
robustbench_lfm.files (atomic, the sidecar last).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import nn

from robustbench_lfm.files import UnverifiedFileError, read_sidecar, sidecar_path, write_verified


class CheckpointCache:
    """A directory of `<key>.safetensors` + `<key>.json` pairs."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root) / "checkpoints"

    def paths(self, key: str) -> tuple[Path, Path]:
        """(weights, sidecar) paths of `key`."""
        weights = self.root / f"{key}.safetensors"
        return weights, sidecar_path(weights)

    def load(self, key: str, model: nn.Module) -> dict[str, Any] | None:
        """Load `key` into `model` and return its sidecar, or None when absent or corrupted."""
        weights, _ = self.paths(key)
        try:
            meta = read_sidecar(weights)
        except UnverifiedFileError as err:
            warnings.warn(f"checkpoint: {err}; retraining", stacklevel=2)
            return None
        if meta is None:
            return None
        try:
            state = load_file(weights)  # safetensors: parsing never executes code
        except Exception as err:  # a file that is not safetensors (a planted pickle, garbage): retrain
            warnings.warn(f"checkpoint {weights} is not a readable safetensors file ({err}); retraining", stacklevel=2)
            return None
        try:
            model.load_state_dict(state)
        except (RuntimeError, KeyError) as err:
            warnings.warn(f"checkpoint {weights} does not fit the model ({err}); retraining", stacklevel=2)
            return None
        return meta

    def save(self, key: str, model: nn.Module, meta: dict[str, Any]) -> str:
        """Store `model`'s weights under `key`; returns the file's sha256."""
        weights, _ = self.paths(key)
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        return write_verified(weights, lambda tmp: save_file(state, tmp), meta)
