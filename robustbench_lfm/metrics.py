"""Re-ID retrieval metrics under the Market-1501 protocol (docs/reference/reid.md B3, B4), vectorized.

For each query the gallery is ranked by ascending distance; gallery items with the query's pid
*and* camera are removed; a query left with no match is skipped and not counted. From the filtered
rank r_h of the h-th of a query's G matches:

- CMC(k): the fraction of valid queries with r_1 <= k (Rank-1 = CMC(1));
- AP, ``ap="plain"`` (torchreid, fast-reid, BoT): (1/G) sum_h h / r_h, non-interpolated;
- AP, ``ap="trapezoid"`` (the official Market-1501 MATLAB script, layumi's evaluate_gpu.py):
  (1/G) sum_h (1/2) [(h-1)/(r_h-1) + h/r_h], the first term taken as 1 when r_h = 1;
- INP (Ye et al., "Deep Learning for Person Re-identification: A Survey and Outlook"): G / r_G.

Where a query's filtered list is shorter than max_rank, its CMC stays at 1 past the end: it has
been matched. (torchreid's Python evaluator fails on such input, and its Cython loop reads values
left over from the previous query there.)

Speed. A full argsort of a Market-size matrix (3368 x 15913) costs several seconds on a 2-core CPU,
and only the ranks of the few matches matter. So each query's matches are sorted by distance (a
few dozen values), every kept non-match is located among them by a batched binary search, and
r_h = h + the number of kept non-matches closer than the h-th match. That is exact whenever no
non-match distance equals a match distance. When one does, the order of the tie decides the
numbers, so those rows (and only those) are ranked by numpy's default argsort — the very call
torchreid's evaluator makes — which reproduces torchreid's numbers on ties too. Queries are
processed in chunks so memory stays bounded at any gallery size.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from robustbench_lfm import metric_table

DISTANCES = ("cosine", "euclidean")
AP_FORMULAS = ("plain", "trapezoid")
APFormula = Literal["plain", "trapezoid"]
# Rough bytes of working memory per (query, gallery) cell of a chunk: a few masks, the int64 bucket
# index and the gathered neighbour distance. 64 MiB chunks ran fastest at Market size (cache-friendly).
_BYTES_PER_CELL = 24


@dataclass(frozen=True)
class RankResult:
    """The outcome of `evaluate_rank`.

    Attributes:
        cmc: CMC curve as fractions, index k-1 = Rank-k, length min(max_rank, n_gallery).
        mAP: mean AP over the valid queries (fraction).
        mINP: mean INP over the valid queries (fraction).
        num_valid: number of queries with at least one valid match.
        valid: (n_q,) bool, which queries were counted.
        first_match: (num_valid,) filtered rank (1-based) of each valid query's first match.
        ap: (num_valid,) AP of each valid query, float64; lets reports bootstrap over queries.
        inp: (num_valid,) INP of each valid query, float64.
    """

    cmc: Tensor
    mAP: float
    mINP: float
    num_valid: int
    valid: Tensor
    first_match: Tensor
    ap: Tensor
    inp: Tensor

    def query_index(self) -> list[int]:
        """The index of each valid query: the rows of its per-query record (queries.csv)."""
        return self.valid.nonzero().flatten().tolist()

    def as_metrics(self) -> dict[str, float]:
        """The CSV metrics of the re-ID task (robustbench_lfm.metric_table), fractions in [0, 1]."""
        return metric_table.compute_all("reid", self)

    def cmc_at(self, k: int) -> float:
        """CMC(k); past the end of the curve every valid query has been matched, so it stays at 1."""
        return float(self.cmc[min(k, len(self.cmc)) - 1])


def pairwise_distance(qf: Tensor, gf: Tensor, metric: str = "cosine") -> Tensor:
    """Distance matrix (n_q, n_g): `cosine` = 1 - cos, `euclidean` = squared L2 (as torchreid)."""
    # In place on the one product matrix: at Market size a gallery x gallery matrix is 1 GB.
    if metric == "cosine":
        return (F.normalize(qf, dim=1) @ F.normalize(gf, dim=1).T).neg_().add_(1.0)
    if metric == "euclidean":
        d = (qf @ gf.T).mul_(-2)
        return d.add_(qf.pow(2).sum(1, keepdim=True)).add_(gf.pow(2).sum(1)[None]).clamp_(min=0)
    raise ValueError(f"unknown distance {metric!r} (known: {', '.join(DISTANCES)})")


def chance_rank1(q_pids: Tensor, g_pids: Tensor, q_camids: Tensor, g_camids: Tensor) -> float:
    """Expected Rank-1 of a random ranking under the Market-1501 protocol (reid.md B2).

    Per valid query: (cross-camera matches) / (gallery images kept, i.e. not same identity and
    camera), averaged over valid queries. The floor an attack that destroys the embedding reaches.
    """
    same_id = q_pids.view(-1, 1) == g_pids.view(1, -1)
    junk = same_id & (q_camids.view(-1, 1) == g_camids.view(1, -1))
    matches = (same_id & ~junk).sum(1).double()
    kept = (~junk).sum(1).double()
    valid = matches > 0
    return float((matches[valid] / kept[valid]).mean()) if valid.any() else 0.0


def evaluate_rank(
    distmat: Tensor | np.ndarray,
    q_pids: Tensor | np.ndarray,
    g_pids: Tensor | np.ndarray,
    q_camids: Tensor | np.ndarray,
    g_camids: Tensor | np.ndarray,
    max_rank: int = 50,
    ap: APFormula = "plain",
    chunk_bytes: int = 64 << 20,
) -> RankResult:
    """Market-1501 CMC / mAP / mINP of a distance matrix (see the module docstring).

    Args:
        distmat: (n_q, n_g) distances, smaller = more similar; tensor or array, on any device.
        q_pids, g_pids: person ids of queries and gallery items (pid 0 distractors are ordinary
            ids that match no query; junk pid -1 must be dropped by the loader).
        q_camids, g_camids: camera ids of queries and gallery items.
        max_rank: length of the CMC curve, capped at n_g.
        ap: "plain" (torchreid's non-interpolated AP) or "trapezoid" (the official Market script).
        chunk_bytes: working-memory budget of one chunk of queries, in bytes.

    Raises:
        ValueError: shapes disagree, NaN distances, an unknown `ap`, or no query has a valid match.
    """
    dist, qp, gp, qc, gc = _as_tensors(distmat, q_pids, g_pids, q_camids, g_camids)
    if ap not in AP_FORMULAS:
        raise ValueError(f"unknown ap formula {ap!r} (known: {', '.join(AP_FORMULAS)})")
    nq, ng = dist.shape
    rows = max(1, chunk_bytes // max(1, ng * _BYTES_PER_CELL))
    parts = [
        _query_scores(*_match_ranks(dist[s : s + rows], qp[s : s + rows], gp, qc[s : s + rows], gc), ap)
        for s in range(0, nq, rows)
    ]
    first, aps, inps = (torch.cat(p) for p in zip(*parts, strict=True))
    valid = first > 0
    if not bool(valid.any()):
        raise ValueError(_NO_VALID_QUERY)
    ks = torch.arange(1, min(max_rank, ng) + 1)
    cmc = (first[valid, None] <= ks[None]).double().mean(0)
    return RankResult(
        cmc=cmc.float(),
        mAP=float(aps[valid].mean()),
        mINP=float(inps[valid].mean()),
        num_valid=int(valid.sum()),
        valid=valid,
        first_match=first[valid],
        ap=aps[valid],
        inp=inps[valid],
    )


def worst_case(results: Sequence[RankResult]) -> RankResult:
    """Each query at its worst over `results` (the same queries scored against the same gallery
    after different attacks): the largest first-match rank (Rank-k), the lowest AP (mAP) and INP
    (mINP); the three may come from different results. The attack ensemble's score (auto-reid)."""
    if not results:
        raise ValueError("worst_case needs at least one result")
    first = results[0]
    if any(not torch.equal(r.valid, first.valid) or len(r.cmc) != len(first.cmc) for r in results):
        raise ValueError("worst_case: the results score different queries or galleries")
    rank = torch.stack([r.first_match for r in results]).amax(0)
    ap = torch.stack([r.ap for r in results]).amin(0)
    inp = torch.stack([r.inp for r in results]).amin(0)
    ks = torch.arange(1, len(first.cmc) + 1)
    cmc = (rank[:, None] <= ks[None]).double().mean(0)
    return RankResult(cmc.float(), float(ap.mean()), float(inp.mean()), first.num_valid, first.valid, rank, ap, inp)


_NO_VALID_QUERY = (
    "no query has a match in the gallery from another camera, so every query was skipped; "
    "the usual cause is that all images share one camera id (check the camera parsing of the "
    "file names) or that query and gallery pids do not overlap"
)


def _as_tensors(*arrays: Tensor | np.ndarray) -> tuple[Tensor, ...]:
    """CPU tensors of the inputs, with their shapes and values checked."""
    dist, qp, gp, qc, gc = (torch.as_tensor(a).cpu() for a in arrays)
    if dist.dim() != 2:
        raise ValueError(f"distmat must be 2-D (n_query, n_gallery), got shape {tuple(dist.shape)}")
    nq, ng = dist.shape
    if (len(qp), len(qc), len(gp), len(gc)) != (nq, nq, ng, ng):
        raise ValueError(
            f"distmat is {nq}x{ng} but q_pids/q_camids have {len(qp)}/{len(qc)} entries "
            f"and g_pids/g_camids {len(gp)}/{len(gc)}"
        )
    if not dist.is_floating_point():
        dist = dist.double()
    if bool(torch.isnan(dist).any()):
        raise ValueError("distmat contains NaN; check the features (a diverged model gives NaN embeddings)")
    return dist, qp.long(), gp.long(), qc.long(), gc.long()


def _match_ranks(dist: Tensor, qp: Tensor, gp: Tensor, qc: Tensor, gc: Tensor) -> tuple[Tensor, Tensor]:
    """Filtered ranks of each query's matches.

    Returns:
        ranks: (c, H) int64, row i holds r_1 < ... < r_G of query i, then zeros.
        n_match: (c,) number of matches G per query (0: the query is skipped).
    """
    same_pid = gp[None] == qp[:, None]
    match = same_pid & (gc[None] != qc[:, None])
    n_match = match.sum(1)
    width = int(n_match.max()) if len(n_match) else 0
    if width == 0:
        return torch.zeros(len(qp), 0, dtype=torch.long), n_match
    match_d = _sorted_match_distances(dist, match, n_match, width)
    # bucket b of a distance v = how many matches are <= v; a non-match in bucket b precedes matches b, b+1, ...
    bucket = torch.searchsorted(match_d, dist, right=True)
    nonmatch = ~same_pid  # same-pid items are matches or removed (same camera)
    lower = torch.cat([torch.full_like(match_d[:, :1], -torch.inf), match_d], 1).gather(1, bucket)
    tied = ((lower == dist) & nonmatch).any(1)
    bucket.masked_fill_(same_pid, width + 1)  # a spare bucket for the same-pid items
    bucket += torch.arange(len(qp))[:, None] * (width + 2)
    counts = torch.bincount(bucket.view(-1), minlength=len(qp) * (width + 2)).view(len(qp), width + 2)
    h = torch.arange(1, width + 1)
    ranks = torch.where(h[None] <= n_match[:, None], h + counts[:, :width].cumsum(1), 0)
    if bool(tied.any()):
        rows = tied.nonzero().squeeze(1)
        ranks[rows] = _match_ranks_by_sort(dist[rows], qp[rows], gp, qc[rows], gc, width)
    return ranks, n_match


def _sorted_match_distances(dist: Tensor, match: Tensor, n_match: Tensor, width: int) -> Tensor:
    """(c, width) the distances of each query's matches in ascending order, padded with +inf."""
    row, col = match.nonzero(as_tuple=True)
    values = dist[row, col]
    order = torch.argsort(values, stable=True)
    order = order[torch.argsort(row[order], stable=True)]  # by row, ascending distance within a row
    row, values = row[order], values[order]
    slot = torch.arange(len(row)) - (n_match.cumsum(0) - n_match)[row]
    out = torch.full((len(n_match), width), torch.inf, dtype=dist.dtype)
    out[row, slot] = values
    return out


def _match_ranks_by_sort(dist: Tensor, qp: Tensor, gp: Tensor, qc: Tensor, gc: Tensor, width: int) -> Tensor:
    """`_match_ranks` by a full numpy argsort, whose tie order is torchreid's (slow, exact on ties)."""
    order = torch.from_numpy(_argsort_rows(dist.numpy()))
    same_pid = gp[order] == qp[:, None]
    keep = ~(same_pid & (gc[order] == qc[:, None]))
    position = keep.cumsum(1)
    marked = torch.where(same_pid & keep, position, torch.iinfo(torch.long).max)
    ranks = marked.sort(1).values[:, :width]
    return torch.where(ranks == torch.iinfo(torch.long).max, 0, ranks)


def _argsort_rows(a: np.ndarray) -> np.ndarray:
    """np.argsort(a, axis=1) with its default kind, the rows split over torch's intra-op threads.

    numpy sorts with the GIL released, and each row is sorted on its own, so the result is the same
    array as one call would give.
    """
    blocks = np.array_split(np.arange(len(a)), max(1, min(torch.get_num_threads(), len(a))))
    with ThreadPoolExecutor(len(blocks)) as pool:
        return np.concatenate(list(pool.map(lambda rows: np.argsort(a[rows], axis=1), blocks)))


def _query_scores(ranks: Tensor, n_match: Tensor, ap: APFormula) -> tuple[Tensor, Tensor, Tensor]:
    """Per query: first-match rank (0 = skipped), AP and INP (float64) from the match ranks."""
    if ranks.shape[1] == 0:
        zeros = torch.zeros(len(n_match), dtype=torch.float64)
        return torch.zeros(len(n_match), dtype=torch.long), zeros, zeros
    present = ranks > 0
    h = torch.arange(1, ranks.shape[1] + 1, dtype=torch.float64)[None]
    r = ranks.double().clamp(min=1)
    precision = h / r
    if ap == "trapezoid":
        before = torch.where(r > 1, (h - 1) / (r - 1).clamp(min=1), 1.0)
        precision = (before + precision) / 2
    g = n_match.double().clamp(min=1)
    aps = (precision * present).sum(1) / g
    last = ranks.amax(1).double().clamp(min=1)
    return ranks[:, 0], aps, n_match.double() / last


@dataclass(frozen=True)
class AccuracyResult:
    """Classification outcome of one cell.

    Attributes:
        correct: (n,) bool, which test images were classified correctly; lets reports bootstrap.
    """

    correct: Tensor

    @property
    def accuracy(self) -> float:
        """Fraction of test images classified correctly."""
        return float(self.correct.float().mean()) if len(self.correct) else 0.0

    def query_index(self) -> list[int]:
        """The index of every test image: the rows of its per-query record (queries.csv)."""
        return list(range(len(self.correct)))

    def as_metrics(self) -> dict[str, float]:
        """The CSV metrics of the classification task (robustbench_lfm.metric_table)."""
        return metric_table.compute_all("classification", self)


@dataclass(frozen=True)
class Repeated:
    """One cell scored in several passes (--score-repeats), for a model random in eval mode.

    Each pass is a fresh forward of the same clean and adversarial images, so the passes differ only
    by the model's own randomness; a metric is their mean (the expected score over that randomness,
    as Athalye et al., ICML 2018, score randomized defences) and `spread` their standard deviation.

    Attributes:
        passes: RankResult or AccuracyResult of each pass, all over the same scored queries.
    """

    passes: tuple[RankResult, ...] | tuple[AccuracyResult, ...]

    def __post_init__(self) -> None:
        if len(self.passes) < 2:
            raise ValueError("Repeated needs at least two scoring passes")
        first = self.passes[0].query_index()
        if any(p.query_index() != first for p in self.passes):
            raise ValueError("Repeated: the passes score different queries")

    @property
    def task(self) -> str:
        return "reid" if isinstance(self.passes[0], RankResult) else "classification"

    def query_index(self) -> list[int]:
        """The scored queries (or test images), the same in every pass."""
        return self.passes[0].query_index()

    def as_metrics(self) -> dict[str, float]:
        """Each CSV metric as its mean over the passes (fractions in [0, 1])."""
        per = [p.as_metrics() for p in self.passes]
        return {name: float(np.mean([m[name] for m in per])) for name in per[0]}

    def spread(self) -> dict[str, float]:
        """Each metric's standard deviation over the passes (n - 1 denominator)."""
        per = [p.as_metrics() for p in self.passes]
        return {name: float(np.std([m[name] for m in per], ddof=1)) for name in per[0]}

    def per_query(self) -> dict[str, list[float]]:
        """queries.csv columns: each query's outcome averaged over the passes (a hit becomes the
        share of passes that hit), so a column's mean is the metric's mean."""
        per = [metric_table.per_query_all(self.task, p) for p in self.passes]
        return {c: np.mean([p[c] for p in per], axis=0).tolist() for c in per[0]}

    @property
    def cmc(self) -> Tensor:
        """The CMC curve averaged over the passes (re-ID)."""
        return torch.stack([p.cmc for p in self.passes if isinstance(p, RankResult)]).mean(0)
