"""What every figure shares: matplotlib without a display, one colour per model, atomic saves."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from robustbench_lfm.files import atomic_path


def save_figure(fig: Figure, path: Path, **options: Any) -> None:
    """`fig.savefig` through an atomic temp file (the format named by `path`'s suffix)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip("."), **options)


def model_colours(models: list[str]) -> dict[str, tuple]:
    """A distinct colour per model: tab10 up to ten models, tab20 beyond (the registry has 13)."""
    cmap = plt.get_cmap("tab10" if len(models) <= 10 else "tab20")
    return {m: cmap(i % cmap.N) for i, m in enumerate(models)}


def fitted_title(text: str, fig: Figure, points: float = 12.0) -> str:
    """`text` wrapped, line by line, to the figure's width at a font of `points` (a title wider than
    its figure is clipped in a PNG: the digits robustness figure lost both ends of its title)."""
    width = max(20, int(fig.get_figwidth() * 72 / (0.55 * points)))  # ~0.55 em per character
    return "\n".join(textwrap.fill(line, width) for line in text.splitlines())
