"""Re-ID retrieval metrics under the Market-1501 protocol (reference/reid.md B3), vectorized.

For each query the gallery is sorted by ascending distance (stable sort: ties keep gallery
order); gallery items with the query's pid *and* camera are removed; the query is skipped when no
match remains. CMC(k) is the fraction of valid queries whose first match is within the first k
kept items; AP is non-interpolated (mean of precision at each match); INP = #matches / position
of the last match (Ye et al., "Deep Learning for Person Re-identification: A Survey"). Queries
are processed in chunks so memory stays bounded at any gallery size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

DISTANCES = ("cosine", "euclidean")


@dataclass(frozen=True)
class RankResult:
    """CMC curve (fractions, index k-1 = Rank-k), mAP, mINP and the number of valid queries."""

    cmc: Tensor
    mAP: float
    mINP: float
    num_valid: int

    def as_metrics(self) -> dict[str, float]:
        """The CSV metrics: rank1, rank5, rank10, mAP, mINP (fractions in [0, 1])."""
        at = lambda k: float(self.cmc[min(k, len(self.cmc)) - 1])  # noqa: E731
        return {
            "rank1": at(1),
            "rank5": at(5),
            "rank10": at(10),
            "mAP": self.mAP,
            "mINP": self.mINP,
        }


def pairwise_distance(qf: Tensor, gf: Tensor, metric: str = "cosine") -> Tensor:
    """Distance matrix (n_q, n_g): `cosine` = 1 - cos, `euclidean` = squared L2."""
    if metric == "cosine":
        return 1.0 - F.normalize(qf, dim=1) @ F.normalize(gf, dim=1).T
    if metric == "euclidean":
        return (qf.pow(2).sum(1, keepdim=True) + gf.pow(2).sum(1)[None] - 2 * qf @ gf.T).clamp_(min=0)
    raise ValueError(f"unknown distance {metric!r} (known: {', '.join(DISTANCES)})")


def evaluate_rank(
    distmat: Tensor,
    q_pids: Tensor,
    g_pids: Tensor,
    q_camids: Tensor,
    g_camids: Tensor,
    max_rank: int = 50,
    chunk_bytes: int = 256 << 20,
) -> RankResult:
    """Market-1501 CMC / mAP / mINP of a distance matrix (see the module docstring).

    Args:
        distmat: (n_q, n_g) distances, smaller = more similar.
        q_pids, g_pids: person ids of queries and gallery items.
        q_camids, g_camids: camera ids of queries and gallery items.
        max_rank: length of the CMC curve (capped at n_g).
        chunk_bytes: rough memory budget of one chunk of queries.

    Raises:
        ValueError: shapes disagree, or no query has a valid match.
    """
    nq, ng = distmat.shape
    if (len(q_pids), len(q_camids), len(g_pids), len(g_camids)) != (nq, nq, ng, ng):
        raise ValueError(f"distmat is {nq}x{ng} but pids/camids have other lengths")
    max_rank = min(max_rank, ng)
    chunk = max(1, chunk_bytes // max(1, ng * 40))
    first, ap, inp = [], [], []
    for s in range(0, nq, chunk):
        f, a, i = _rank_chunk(distmat[s : s + chunk], q_pids[s : s + chunk], g_pids, q_camids[s : s + chunk], g_camids)
        first.append(f), ap.append(a), inp.append(i)
    first_hit, aps, inps = torch.cat(first), torch.cat(ap), torch.cat(inp)
    valid = first_hit > 0
    if not bool(valid.any()):
        raise ValueError("no query has a match in the gallery from another camera; check pids and camera ids")
    ks = torch.arange(1, max_rank + 1, dtype=first_hit.dtype)
    cmc = (first_hit[valid, None] <= ks[None]).double().mean(0)
    return RankResult(cmc.float(), float(aps[valid].mean()), float(inps[valid].mean()), int(valid.sum()))


def _rank_chunk(dist: Tensor, qp: Tensor, gp: Tensor, qc: Tensor, gc: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per query: filtered position of the first match (0 if none), AP and INP."""
    order = torch.argsort(dist, dim=1, stable=True)
    same_pid = gp[order] == qp[:, None]
    keep = ~(same_pid & (gc[order] == qc[:, None]))
    hit = same_pid & keep
    pos = keep.cumsum(1)  # 1-based position among kept items
    n_hits = hit.sum(1)
    precision = hit.cumsum(1).double() / pos.clamp(min=1)
    ap = (precision * hit).sum(1) / n_hits.clamp(min=1)
    first = torch.where(hit, pos, torch.iinfo(pos.dtype).max).amin(1)
    first = torch.where(n_hits > 0, first, 0)
    last = torch.where(hit, pos, 0).amax(1)
    inp = n_hits / last.clamp(min=1)
    return first, ap, inp.double()
