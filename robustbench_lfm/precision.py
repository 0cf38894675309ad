"""Numeric precision of training, feature extraction and attacks (`--precision`, `--attack-precision`).

`fp32` runs everything in float32. `bf16` runs the forward passes under `torch.autocast` with
bfloat16 (convolutions and matrix products in bf16, reductions and the loss in float32), on CPU or
GPU; embeddings and logits are returned as float32. Attacks stay in fp32 unless asked: bfloat16
keeps 8 significant bits, so a pixel value near 1 is held to about 1/256, coarser than the 1/255
steps of an L-inf attack, and the gradient of a perturbation that small is partly rounding noise;
an attack in bf16 is a weaker attack, not the same one faster.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

PRECISIONS = ("fp32", "bf16")


def check(precision: str, what: str) -> None:
    """ValueError naming the choices when `precision` is not one."""
    if precision not in PRECISIONS:
        raise ValueError(f"{what} {precision!r} is not one of {', '.join(PRECISIONS)}")


def autocast(device: torch.device, precision: str) -> AbstractContextManager:
    """bfloat16 autocast on `device` for "bf16"; a no-op context for "fp32"."""
    import torch  # here: the recipe reads PRECISIONS from this module without torch

    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
