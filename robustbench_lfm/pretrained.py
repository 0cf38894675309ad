"""`--pretrained PATH`: read a torchvision-layout ResNet state dict from a file the user names.

Nothing is downloaded. The file is safetensors (parsing runs no code) or a PyTorch `.pth`/`.pt`
read with `torch.load(weights_only=True)`, which refuses any pickle that would build an object
other than tensors and containers (a planted pickle never runs). It must be a flat mapping of
names to tensors (a checkpoint that wraps it in `{"state_dict": ...}` or `{"model": ...}` is
unwrapped once). Its sha256 is the pretrained weights' identity: it joins the checkpoint key of
every model initialised from it and the CSV column `pretrained_sha256`.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load_file
from torch import Tensor

from robustbench_lfm import models
from robustbench_lfm.hashing import file_sha256
from robustbench_lfm.models.backbones import SplitBackbone
from robustbench_lfm.models.pretrained import PretrainedError, load_torchvision
from robustbench_lfm.parsing import SpecError

if TYPE_CHECKING:
    from robustbench_lfm.modelspec import ModelSpec
    from robustbench_lfm.recipe import TrainRecipe

WRAPPERS = ("state_dict", "model")


def read_state_dict(path: Path, what: str = "--pretrained ") -> dict[str, Tensor]:
    """The tensors of `path` by name (PretrainedError naming the problem and the fix otherwise);
    `what` names the option in messages (`--pretrained `, `ckpt:`)."""
    if not path.is_file():
        raise PretrainedError(f"{what}{path} is not a file; give a state dict file (.pth or .safetensors)")
    try:
        if path.suffix == ".safetensors":
            state: object = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # not a state dict file, or a pickle that would run code
        raise PretrainedError(
            f"{what}{path} is not a readable state dict ({type(err).__name__}: "
            f"{(str(err).splitlines() or [''])[0][:160]}); give a .safetensors file or a .pth of tensors only"
        ) from None
    if isinstance(state, dict):
        for wrapper in WRAPPERS:
            if isinstance(state.get(wrapper), dict):
                state = state[wrapper]
                break
    if not isinstance(state, dict) or not state or not all(isinstance(v, Tensor) for v in state.values()):
        raise PretrainedError(f"{what}{path} holds no mapping of names to tensors; give a ResNet state dict")
    return {str(k).removeprefix("module."): v for k, v in state.items()}


def initialise(backbone: SplitBackbone, path: Path, sha256: str) -> None:
    """Load `path` into `backbone` after checking it is still the file the run was started with."""
    load_torchvision(backbone, verified_state(path, sha256))


@functools.lru_cache(maxsize=2)
def verified_state(path: Path, sha256: str, what: str = "--pretrained ") -> dict[str, Tensor]:
    """The file's tensors after checking it is still the file `sha256` the run was built with,
    read and hashed once per process (every model of a worker shares them; loading copies them)."""
    if not path.is_file() or file_sha256(path) != sha256:
        raise PretrainedError(f"{what}{path} changed or vanished since the run started (sha256 differs); rerun it")
    return read_state_dict(path, what)


def resolve_pretrained(
    given: str | Path | None, recipe: TrainRecipe, model_specs: tuple[ModelSpec, ...], surrogate: ModelSpec | None
) -> tuple[tuple[ModelSpec, ...], ModelSpec | None, Path | None]:
    """The models initialised from --pretrained (checked now against every backbone), or the
    models as they are; a recipe that expects ImageNet weights without them is refused."""
    trained = [m for m in (*model_specs, *((surrogate,) if surrogate else ())) if not m.given]
    if given is None:
        if recipe.init == "imagenet" and trained:
            raise SpecError(
                f"recipe {recipe.source} starts {recipe.backbone} from ImageNet weights: give --pretrained PATH, a "
                f"torchvision {recipe.backbone} state dict (e.g. resnet50-0676ba61.pth or .safetensors); nothing is "
                "downloaded"
            )
        return model_specs, surrogate, None
    path = Path(given).expanduser().resolve()
    try:
        state = read_state_dict(path)
    except PretrainedError as err:
        raise SpecError(str(err)) from None
    for backbone in dict.fromkeys(m.backbone for m in trained):
        try:
            load_torchvision(models.registry.get_backbone(backbone)(), state)
        except PretrainedError as err:
            raise SpecError(f"--pretrained {path} into {backbone}: {err}") from None
    sha = file_sha256(path)
    pretrained = tuple(m.initialised_from(sha) for m in model_specs)
    return pretrained, None if surrogate is None else surrogate.initialised_from(sha), path
