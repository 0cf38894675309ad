"""The lfm-bench version (pyproject.toml's), in a module of its own so that every part can read it
without importing the package's lazy `evaluate`."""

__version__ = "0.1.0"
