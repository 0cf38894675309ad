"""Start-up time of the command line: `lfm-bench --help` and friends against `import click`.

    python scripts/bench_cli_startup.py [--repeats 15]

Each command runs in a fresh interpreter, interleaved with the reference `python -c "import
click"` (the least any click program pays), `repeats` times; the medians and their ratio are
printed (target: `--help` within 3x the reference). `ls` loads the model and attack libraries
(torch) by design: it is shown for scale, not held to the target.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

REFERENCE = [sys.executable, "-c", "import click"]
COMMANDS = {
    "lfm-bench --help": ["--help"],
    "lfm-bench run --help": ["run", "--help"],
    "lfm-bench check --help": ["check", "--help"],
    "lfm-bench report --help": ["report", "--help"],
    "lfm-bench ls": ["ls"],
}


def _seconds(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    cli = [sys.executable, "-m", "robustbench_lfm"]
    times: dict[str, list[float]] = {"python -c 'import click'": [], **{name: [] for name in COMMANDS}}
    _seconds(REFERENCE), _seconds([*cli, "--help"])  # warm the file cache once
    for _ in range(args.repeats):
        times["python -c 'import click'"].append(_seconds(REFERENCE))
        for name, argv in COMMANDS.items():
            times[name].append(_seconds([*cli, *argv]))
    reference = statistics.median(times["python -c 'import click'"])
    print(f"median of {args.repeats} runs, interleaved, fresh interpreter each")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:<26} {1000 * median:7.0f} ms   {median / reference:5.2f}x the reference")


if __name__ == "__main__":
    main()
