"""The checkpoint cache: trained weights keyed by the hash of (model spec, recipe, data spec, seed).

Weights are stored as safetensors (loading never runs code) next to a JSON sidecar holding the
file's sha256 and what produced it. A checkpoint is verified by its sha256 before use; one that
fails is reported and retrained, never silently used. Writes are atomic (temp file + rename).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import nn

from robustbench_lfm.hashing import file_sha256


class CheckpointCache:
    """A directory of `<key>.safetensors` + `<key>.json` pairs."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root) / "checkpoints"

    def paths(self, key: str) -> tuple[Path, Path]:
        """(weights, sidecar) paths of `key`."""
        return self.root / f"{key}.safetensors", self.root / f"{key}.json"

    def load(self, key: str, model: nn.Module) -> dict[str, Any] | None:
        """Load `key` into `model` and return its sidecar, or None when absent or corrupted."""
        weights, sidecar = self.paths(key)
        if not weights.exists() or not sidecar.exists():
            return None
        try:
            meta = json.loads(sidecar.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            meta = None
        if not isinstance(meta, dict) or not isinstance(meta.get("sha256"), str):  # e.g. valid JSON `[]`
            warnings.warn(f"checkpoint sidecar {sidecar} is unreadable or malformed; retraining", stacklevel=2)
            return None
        sha = file_sha256(weights)
        if sha != meta.get("sha256"):
            warnings.warn(
                f"checkpoint {weights} fails its sha256 check (file changed or truncated); retraining",
                stacklevel=2,
            )
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
        weights, sidecar = self.paths(key)
        self.root.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        tmp = weights.with_suffix(f".tmp{os.getpid()}")
        save_file(state, tmp)
        sha = file_sha256(tmp)
        os.replace(tmp, weights)
        tmp_meta = sidecar.with_suffix(f".tmp{os.getpid()}")
        tmp_meta.write_text(json.dumps({**meta, "sha256": sha}, indent=2, default=str))
        os.replace(tmp_meta, sidecar)
        return sha
