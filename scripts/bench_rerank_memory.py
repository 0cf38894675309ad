"""Peak memory of k-reciprocal re-ranking at Market-1501 size: the gallery block written straight into
the joint buffer, against a gallery x gallery matrix held beside it (as the harness held the clean
gallery's distances, cached per model, until this script was written).

Usage: python scripts/bench_rerank_memory.py [--queries 3368] [--gallery 15913] [--dim 256]

Each variant runs in a fresh interpreter on the same random features (seeded), through the
harness's own `robustbench_lfm.rerank.rerank`: `matrix` computes the (n_g, n_g) distances first and
passes them in (as the cached clean gallery distances were), `rows` passes a function that gives
gallery rows chunk by chunk, written into the joint buffer. It prints each one's peak resident
memory (VmHWM) and wall time, their ratio, and the largest difference between the two results.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap

CHILD = textwrap.dedent(
    """
    import json, re, sys, time
    from pathlib import Path
    import torch
    from robustbench_lfm.metrics import pairwise_distance
    from robustbench_lfm.rerank import rerank

    variant, nq, ng, dim = sys.argv[1], *map(int, sys.argv[2:5])
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    qf, gf = torch.randn(nq, dim, generator=g), torch.randn(ng, dim, generator=g)
    Path("/proc/self/clear_refs").write_text("5")  # the peak from here on
    start = time.perf_counter()
    q_g, q_q = pairwise_distance(qf, gf, "cosine"), pairwise_distance(qf, qf, "cosine")
    if variant == "matrix":
        g_g = pairwise_distance(gf, gf, "cosine")
    else:
        g_g = lambda a, b: pairwise_distance(gf[a:b], gf, "cosine")
    out = rerank(q_g, q_q, g_g)
    wall = time.perf_counter() - start
    peak = int(re.search(r"VmHWM:\\s+(\\d+)", Path("/proc/self/status").read_text()).group(1)) / 1024
    torch.save(out[:64].clone(), sys.argv[5])
    print(json.dumps({"peak_mb": peak, "wall_s": wall}))
    """
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=3368)
    parser.add_argument("--gallery", type=int, default=15913)
    parser.add_argument("--dim", type=int, default=256)
    args = parser.parse_args()
    import tempfile

    import torch

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for variant in ("matrix", "rows"):
            argv = [sys.executable, "-c", CHILD, variant, str(args.queries), str(args.gallery), str(args.dim)]
            done = subprocess.run([*argv, f"{tmp}/{variant}.pt"], capture_output=True, text=True, check=True)
            results[variant] = json.loads(done.stdout.strip().splitlines()[-1])
        first, second = (torch.load(f"{tmp}/{v}.pt", weights_only=True) for v in ("matrix", "rows"))
        diff = float((first - second).abs().max())
    print(f"re-ranking, {args.queries} queries x {args.gallery} gallery, dim {args.dim}, 1 thread, fresh process each")
    for variant, r in results.items():
        print(f"  {variant:<7} peak {r['peak_mb']:8.0f} MiB   {r['wall_s']:6.1f} s")
    m, r = results["matrix"], results["rows"]
    print(f"  rows / matrix: peak {r['peak_mb'] / m['peak_mb']:.2f}x, time {r['wall_s'] / m['wall_s']:.2f}x; "
          f"largest difference of the first 64 query rows: {diff:.2g}")  # fmt: skip


if __name__ == "__main__":
    main()
