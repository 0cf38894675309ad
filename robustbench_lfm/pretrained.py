"""`--pretrained PATH`: read a torchvision-layout ResNet state dict from a file the user names.

Nothing is downloaded. The file is safetensors (parsing runs no code) or a PyTorch `.pth`/`.pt`
read with `torch.load(weights_only=True)`, which refuses any pickle that would build an object
other than tensors and containers (a planted pickle never runs). It must be a flat mapping of
names to tensors (a checkpoint that wraps it in `{"state_dict": ...}` or `{"model": ...}` is
unwrapped once). Its sha256 is the pretrained weights' identity: it joins the checkpoint key of
every model initialised from it and the CSV column `pretrained_sha256`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor

from models.backbones import ResNetBackbone
from models.pretrained import PretrainedError, load_torchvision
from robustbench_lfm.hashing import file_sha256

WRAPPERS = ("state_dict", "model")


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """The tensors of `path` by name (PretrainedError naming the problem and the fix otherwise)."""
    if not path.is_file():
        raise PretrainedError(
            f"--pretrained {path} is not a file; give a torchvision ResNet state dict (.pth or .safetensors)"
        )
    try:
        if path.suffix == ".safetensors":
            state: object = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # not a state dict file, or a pickle that would run code
        raise PretrainedError(
            f"--pretrained {path} is not a readable state dict ({type(err).__name__}: "
            f"{(str(err).splitlines() or [''])[0][:160]}); give a .safetensors file or a .pth of tensors only"
        ) from None
    if isinstance(state, dict):
        for wrapper in WRAPPERS:
            if isinstance(state.get(wrapper), dict):
                state = state[wrapper]
                break
    if not isinstance(state, dict) or not state or not all(isinstance(v, Tensor) for v in state.values()):
        raise PretrainedError(f"--pretrained {path} holds no mapping of names to tensors; give a ResNet state dict")
    return {str(k).removeprefix("module."): v for k, v in state.items()}


def initialise(backbone: ResNetBackbone, path: Path, sha256: str) -> None:
    """Load `path` into `backbone` after checking it is still the file the run was started with."""
    if file_sha256(path) != sha256:
        raise PretrainedError(f"--pretrained {path} changed since the run started (sha256 differs); rerun the command")
    load_torchvision(backbone, read_state_dict(path))
