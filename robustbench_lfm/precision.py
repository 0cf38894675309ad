"""Numeric precision of training, feature extraction and attacks (`--precision`, `--attack-precision`).

`fp32` runs everything in float32. `bf16` runs the forward passes under `torch.autocast` with
bfloat16 (convolutions and matrix products in bf16, reductions and the loss in float32), on CPU or
GPU; embeddings and logits are returned as float32. Attacks stay in fp32 unless asked: bfloat16
keeps 8 significant bits, so a pixel value near 1 is held to about 1/256, coarser than the 1/255
steps of an L-inf attack, and the gradient of a perturbation that small is partly rounding noise;
an attack in bf16 is a weaker attack, not the same one faster.

The CPU re-ID recipe (recipes/reid-cpu.toml) trains in bf16: on a CPU with AVX-512 (or AMX, or
Arm's BF16) oneDNN runs its convolutions 1.3-1.5x faster than fp32. A CPU without them has no fast
bf16 convolution and trains slower than in fp32; `slow_bf16` says so, and a run warns.
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


def slow_bf16(device: torch.device) -> bool:
    """Whether bf16 autocast is slower than fp32 on `device`: a CPU without the instructions
    oneDNN's bf16 convolutions need (AVX-512 BW/VL/DQ, AMX or Arm BF16), where torch falls back
    to its reference convolution."""
    import torch

    if device.type != "cpu":
        return False
    try:
        return not torch.ops.mkldnn._is_mkldnn_bf16_supported()
    except (AttributeError, RuntimeError):  # a build without oneDNN's probe: nothing known, no warning
        return False
