"""lfm-bench: the harness (config, datasets, training, metrics, sweep runner, results, CLI).

It imports the leaf libraries `models` and `attacks`; they never import it.
"""

__version__ = "0.1.0"
