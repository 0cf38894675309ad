"""lfm-bench: the harness (config, datasets, training, metrics, sweep runner, results, CLI).

It imports the leaf libraries `models` and `attacks`; they never import it.
"""

from robustbench_lfm.version import __version__

__all__ = ["__version__", "evaluate"]


def __getattr__(name: str) -> object:
    """`robustbench_lfm.evaluate`, imported on first use (it loads torch; the CLI's --help must not)."""
    if name == "evaluate":
        from robustbench_lfm.evaluation import evaluate

        return evaluate
    raise AttributeError(f"module 'robustbench_lfm' has no attribute {name!r}")
