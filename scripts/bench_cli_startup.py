"""Start-up time of the command line: `lfm-bench --help` and friends against `import click`.

    python scripts/bench_cli_startup.py [--repeats 15]

Each command runs in a fresh interpreter, interleaved with the reference `python -c "import
click"` (the least any click program pays), `repeats` times; the medians and their ratio are
printed against both references, `import click` and `import torch` (targets: `--help` and a typo in a
name within 3x `import click`; `ls` within 1.1x `import torch`). `ls` runs twice: as it runs once
the registries were loaded for the installed code (it prints the listing it remembered in the
cache, robustbench_lfm/names.py), and as its first run after an install or an edit, which loads
them (torch), with an empty cache each time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

REFERENCE = [sys.executable, "-c", "import click"]
TORCH = [sys.executable, "-c", "import torch"]
COMMANDS = {
    "lfm-bench run --models lfmm (typo)": ["run", "--models", "lfmm", "--out", "/tmp/lfm-bench-typo"],
    "lfm-bench --help": ["--help"],
    "lfm-bench run --help": ["run", "--help"],
    "lfm-bench check --help": ["check", "--help"],
    "lfm-bench report --help": ["report", "--help"],
    "lfm-bench ls": ["ls"],
}
FIRST_LS = "lfm-bench ls (nothing remembered)"


def _seconds(argv: list[str], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=False, capture_output=True, env=env)  # the typo exits 2 by design
    return time.perf_counter() - start


def _first_ls(cli: list[str]) -> float:
    """`ls` with an empty cache: it loads the registries, as after an install or an edit."""
    with tempfile.TemporaryDirectory() as cache:
        return _seconds([*cli, "ls"], {**os.environ, "LFM_BENCH_CACHE": cache})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    cli = [sys.executable, "-m", "robustbench_lfm"]
    times: dict[str, list[float]] = {"python -c 'import click'": [], "python -c 'import torch'": []}
    times.update({name: [] for name in [*COMMANDS, FIRST_LS]})
    _seconds(REFERENCE), _seconds(TORCH), _seconds([*cli, "--help"]), _seconds([*cli, "ls"])  # warm the file cache once
    for _ in range(args.repeats):
        times["python -c 'import click'"].append(_seconds(REFERENCE))
        times["python -c 'import torch'"].append(_seconds(TORCH))
        for name, argv in COMMANDS.items():
            times[name].append(_seconds([*cli, *argv]))
        times[FIRST_LS].append(_first_ls(cli))
    click_s = statistics.median(times["python -c 'import click'"])
    torch_s = statistics.median(times["python -c 'import torch'"])
    print(f"median of {args.repeats} runs, interleaved, fresh interpreter each")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:<36} {1000 * median:7.0f} ms   {median / click_s:5.2f}x import click   "
              f"{median / torch_s:5.2f}x import torch")  # fmt: skip


if __name__ == "__main__":
    main()
