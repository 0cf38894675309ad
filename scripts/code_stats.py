"""Size of the code: files, lines, and the length of every function (median and largest).

Usage: ``python scripts/code_stats.py [PACKAGE ...]`` (default ``models attacks robustbench_lfm``).
A function's length is its line span, decorators and docstring included, nested functions counted on
their own too. The style guide asks for about 10 lines at the median, rarely over 40.
"""

from __future__ import annotations

import ast
import statistics
import sys
from pathlib import Path

PACKAGES = ("models", "attacks", "robustbench_lfm")


def function_spans(path: Path) -> list[tuple[int, str]]:
    """Every function in ``path`` as ``(lines, qualified name)``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    spans = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            spans.append((node.end_lineno - start + 1, f"{path}:{node.lineno} {node.name}"))
    return spans


def main(packages: list[str]) -> None:
    """Print the table of files, lines and function lengths."""
    files = sorted(p for package in packages for p in Path(package).rglob("*.py"))
    lines = {p: len(p.read_text().splitlines()) for p in files}
    spans = sorted(span for p in files for span in function_spans(p))
    print(
        f"files: {len(files)}  lines: {sum(lines.values())}  largest file: {max(lines, key=lines.get)} "
        f"({max(lines.values())} lines)  files over 400 lines: {sum(n > 400 for n in lines.values())}"
    )
    print(
        f"functions: {len(spans)}  median: {statistics.median(n for n, _ in spans):g} lines  "
        f"over 40 lines: {sum(n > 40 for n, _ in spans)}"
    )
    for n, name in spans[-5:][::-1]:
        print(f"  {n:4d}  {name}")


if __name__ == "__main__":
    main(sys.argv[1:] or list(PACKAGES))
