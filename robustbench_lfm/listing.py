"""`lfm-bench ls`: every registry as plain values (for `--format json`) and as text.

Loads the model and attack libraries (torch): their registries are filled by importing them.
"""

from __future__ import annotations

import sys
from typing import Any

from robustbench_lfm.parsing import PIXEL_OPTIONS, format_eps, format_param

Listing = dict[str, dict[str, dict[str, Any]]]
FORMS = ("text", "json", "quiet")  # `ls`, `ls --format json`, `ls -q`


def registry_listing() -> Listing:
    """Every registry as plain values: kind -> name -> {description, parameters, source, ...}."""
    import robustbench_lfm.methods  # noqa: F401  (registers the training methods' parameters)
    from robustbench_lfm import attacks, metric_table, models
    from robustbench_lfm.datasets import DATASETS
    from robustbench_lfm.recipe import recipe_names

    model_reg, attack_reg = models.registry.MODELS, attacks.registry.ATTACKS
    return {
        "models": {n: {"description": e.description, "parameters": e.defaults(), "source": model_reg.source(n)}
                   for n, e in model_reg.items()},
        "regularizers": {n: {"source": models.registry.REGULARIZERS.source(n)}
                         for n, _ in models.registry.REGULARIZERS.items()},
        "backbones": {n: {"input_size": list(b.input_size), "strides": list(b.strides),
                          "source": models.registry.BACKBONES.source(n)} for n, b in models.registry.BACKBONES.items()},
        "attacks": {n: {"description": _attack_description(c, attack_reg.source(n)), "tasks": list(c.tasks),
                        "parameters": c.defaults(), "source": attack_reg.source(n)} for n, c in attack_reg.items()},
        "datasets": {n: {"description": d.description, "task": d.task, "source": DATASETS.source(n)}
                     for n, d in DATASETS.items()},
        "metrics": {n: {"label": m.label, "task": m.task, "headline": m.headline, "gated": m.gated,
                        "source": metric_table.METRICS.source(n)} for n, m in metric_table.METRICS.items()},
        "recipes": {task: {"names": recipe_names(task)} for task in models.TASKS},
    }  # fmt: skip


def rendered(listing: Listing) -> dict[str, str]:
    """What `ls` prints of `listing` in each of FORMS (robustbench_lfm/names.py remembers them)."""
    import json

    quiet = "\n".join("\n".join(f"{kind.rstrip('s')} {name}" for name in entries) for kind, entries in listing.items())
    return {"text": listing_text(listing), "json": json.dumps(listing, indent=2, default=str), "quiet": quiet}


def _attack_description(cls: type, source: str) -> str:
    """A built-in attack's module docstring (one attack per module), an outside one's class docstring."""
    doc = cls.__doc__ if _outside(source) else sys.modules[cls.__module__].__doc__
    return _first_line(doc)


def _first_line(doc: str | None) -> str:
    return (doc or "").strip().splitlines()[0] if (doc or "").strip() else ""


def _outside(source: str) -> str:
    """` [from plugin FILE (sha256 ...)]` for an entry registered outside lfm-bench, else nothing."""
    from robustbench_lfm.plugins import describe_source

    return "" if source.split(".")[0] == "robustbench_lfm" else f" [from {describe_source(source)}]"


def listing_text(listing: Listing) -> str:
    """The listing as `lfm-bench ls` prints it: parameters as the command line takes them."""
    lines = ["models (NAME:key=value overrides a parameter):"]
    for name, m in listing["models"].items():
        lines.append(f"  {name:<16} {m['description']}{_outside(m['source'])}")
        params = ", ".join(f"{k}={_show(k, v)}" for k, v in m["parameters"].items())
        if params:
            lines.append(f"  {'':<16}   {params}")
    lines.append(
        "regularizers: " + ", ".join(f"{n}{_outside(r['source'])}" for n, r in listing["regularizers"].items())
    )
    lines.append("backbones: " + ", ".join(f"{n}{_outside(b['source'])}" for n, b in listing["backbones"].items()))
    lines.append("attacks:")
    for name, a in listing["attacks"].items():
        lines.append(f"  {name:<14} [{'/'.join(a['tasks'])}] {a['description']}{_outside(a['source'])}")
        options = ", ".join(f"{k}={'default' if v is None else _show(k, v)}" for k, v in a["parameters"].items())
        lines.append(f"  {'':<14}   {options}")
    lines.append("datasets:")
    lines += [
        f"  {name:<12} ({d['task']}) {d['description']}{_outside(d['source'])}"
        for name, d in listing["datasets"].items()
    ]
    lines.append("metrics: " + ", ".join(f"{n} ({m['task']})" for n, m in listing["metrics"].items()))
    lines.append("recipes (--recipe):")
    lines += [f"  {task}: {', '.join(r['names'])}" for task, r in listing["recipes"].items()]
    return "\n".join(lines)


def _show(key: str, value: Any) -> str:
    """A parameter as it is written on the command line: 0.02..0.4, 8/255."""
    return format_eps(value) if key in PIXEL_OPTIONS else format_param(value)
