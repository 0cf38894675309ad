"""What every figure shares: matplotlib without a display, one colour per model, atomic saves."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.transforms import Bbox

from robustbench_lfm.files import atomic_path


def save_figure(fig: Figure, path: Path, *, dpi: float, also: Sequence[Path] = ()) -> None:
    """`fig` cropped to what it draws (savefig's `bbox_inches="tight"`, with its padding) at `dpi`,
    into `path` and then each of `also`, each in the format its suffix names (a report's PNG and
    PDF), through atomic temp files. The crop is measured once for all of them ("tight" costs each
    savefig two more passes over the figure's layout), with the raster's text metrics: the PNG is
    what "tight" writes, the PDF's page within half a point of its own crop (tests/test_figures.py)."""
    crop = "tight" if not also else _tight_crop(fig, dpi)
    for target in (path, *also):
        with atomic_path(target) as tmp:
            fig.savefig(tmp, format=target.suffix.lstrip("."), dpi=dpi, bbox_inches=crop)


def _tight_crop(fig: Figure, dpi: float) -> Bbox:
    """The box, in inches, that `savefig(bbox_inches="tight")` crops `fig` to at `dpi`."""
    kept = fig.get_dpi()
    fig.set_dpi(dpi)  # text extents depend on the resolution they are laid out at
    try:
        fig.draw_without_rendering()  # places the ticks and texts, as savefig's first pass does
        box = fig.get_tightbbox()  # with the renderer of its canvas, at `dpi` now
    finally:
        fig.set_dpi(kept)
    pad = float(matplotlib.rcParams["savefig.pad_inches"])
    return box.padded(pad)


def model_colours(models: list[str]) -> dict[str, tuple]:
    """A distinct colour per model: tab10 up to ten models, tab20 beyond (the registry has 13)."""
    cmap = plt.get_cmap("tab10" if len(models) <= 10 else "tab20")
    return {m: cmap(i % cmap.N) for i, m in enumerate(models)}


def fitted_title(text: str, fig: Figure, points: float = 12.0) -> str:
    """`text` wrapped, line by line, to the figure's width at a font of `points` (a title wider than
    its figure is clipped in a PNG: the digits robustness figure lost both ends of its title)."""
    width = max(20, int(fig.get_figwidth() * 72 / (0.55 * points)))  # ~0.55 em per character
    return "\n".join(textwrap.fill(line, width) for line in text.splitlines())
