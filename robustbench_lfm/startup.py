"""The start of a command that needs torch: import it, then keep its objects out of the garbage
collector's passes.

torch's import leaves about 166,000 objects the collector tracks, alive for the whole process.
Every full collection walks them all (50-60 ms a pass on the 2-core development machine), and so
does the interpreter's exit. `gc.freeze()` moves the objects alive at that moment into a permanent
generation that no collection walks: `python -c "import torch, gc; gc.freeze()"` ends in 1.07 s
where `python -c "import torch"` takes 1.33 s, and `lfm-bench ls` loading the registries went from
1.23x to 0.95x `import torch` (interleaved, 11 runs each; `run --dry-run` of the main job from
2.25 to 1.80 s).
"""

from __future__ import annotations

import gc
import sys


def import_torch() -> None:
    """Import torch and, where this call is what imports it, freeze every object then alive
    (`gc.freeze`): the objects of the interpreter's start and of the imports so far, which live
    as long as the process does. Where torch is imported already (a test process, the program of
    a library user calling into the CLI), nothing is frozen: their objects, garbage waiting for
    its collection included, are not this command's to keep."""
    if "torch" in sys.modules:
        return
    import torch  # noqa: F401

    gc.freeze()
