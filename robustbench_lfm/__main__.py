"""`python -m robustbench_lfm` is `lfm-bench`."""

from robustbench_lfm.cli import main

main()
