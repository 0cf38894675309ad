"""k-reciprocal re-ranking against a per-item loop written from the paper's steps (Zhong et al. 2017)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robustbench_lfm.metrics import evaluate_rank, pairwise_distance
from robustbench_lfm.rerank import RerankParams, rerank


def reference_rerank(q_g, q_q, g_g, k1, k2, lam):
    """Sets and loops, one item at a time, following the module docstring's steps 1-7."""
    nq = q_g.shape[0]
    d = np.block([[q_q, q_g], [q_g.T, g_g]]).astype(np.float64) ** 2
    d = (d / d.max(axis=0)).T
    n = len(d)
    nearest = [list(np.argsort(d[i])) for i in range(n)]

    def reciprocal(i, k):
        return {j for j in nearest[i][: k + 1] if i in nearest[j][: k + 1]}

    v = np.zeros((n, n))
    for i in range(n):
        r = reciprocal(i, k1)
        expanded = set(r)
        for j in r:
            rj = reciprocal(j, round(k1 / 2))
            if len(rj & r) > 2 / 3 * len(rj):
                expanded |= rj
        idx = sorted(expanded)
        v[i, idx] = np.exp(-d[i, idx]) / np.exp(-d[i, idx]).sum()
    v = np.stack([v[nearest[i][:k2]].mean(0) for i in range(n)])
    out = np.zeros_like(q_g, dtype=np.float64)
    for i in range(nq):
        for j in range(q_g.shape[1]):
            a, b = v[i], v[nq + j]
            out[i, j] = (1 - lam) * (1 - np.minimum(a, b).sum() / np.maximum(a, b).sum()) + lam * d[i, nq + j]
    return out


@pytest.mark.parametrize(("k1", "k2", "lam"), [(20, 6, 0.3), (6, 3, 0.5), (4, 1, 0.0)])
def test_matches_the_per_item_reference(k1, k2, lam):
    g = torch.Generator().manual_seed(k1)
    qf, gf = torch.randn(12, 5, generator=g), torch.randn(40, 5, generator=g)
    dists = [pairwise_distance(a, b, "euclidean") for a, b in ((qf, gf), (qf, qf), (gf, gf))]
    got = rerank(*dists, RerankParams(k1, k2, lam))
    want = reference_rerank(*(x.double().numpy() for x in dists), k1, k2, lam)
    assert got.shape == (12, 40)
    np.testing.assert_allclose(got.numpy(), want, atol=2e-6)


def test_reranking_helps_on_clustered_features(monkeypatch):
    # identities as noisy clusters with several gallery images each: the setting re-ranking is built
    # for (neighbours of neighbours share the identity); mAP 0.685 -> 0.730 here
    g = torch.Generator().manual_seed(0)
    centres, cams = torch.randn(30, 16, generator=g), torch.randn(3, 16, generator=g) * 0.5

    def sample(pids, camids):
        return centres[pids] + cams[camids] + 0.6 * torch.randn(len(pids), 16, generator=g)

    q_pids, q_cams = torch.arange(30), torch.zeros(30, dtype=torch.long)
    g_pids, g_cams = torch.arange(30).repeat(6), torch.arange(1, 3).repeat_interleave(90)
    qf, gf = sample(q_pids, q_cams), sample(g_pids, g_cams)
    q_g = pairwise_distance(qf, gf, "euclidean")
    plain = evaluate_rank(q_g, q_pids, g_pids, q_cams, g_cams)
    reranked = rerank(q_g, pairwise_distance(qf, qf, "euclidean"), pairwise_distance(gf, gf, "euclidean"))
    assert evaluate_rank(reranked, q_pids, g_pids, q_cams, g_cams).mAP > plain.mAP
    from robustbench_lfm import rerank as module

    monkeypatch.setattr(module, "GALLERY_CHUNK", 7)  # 180 gallery rows in chunks of 7: a ragged last one

    def gallery_rows(start, stop):  # computed chunk by chunk into the buffer: no gallery matrix beside it
        return pairwise_distance(gf[start:stop], gf, "euclidean")

    chunked = rerank(q_g, pairwise_distance(qf, qf, "euclidean"), gallery_rows)
    assert torch.allclose(chunked, reranked, atol=1e-6)


def test_k_larger_than_the_items_is_a_clear_error():
    with pytest.raises(ValueError, match="k1"):
        rerank(torch.rand(2, 3), torch.rand(2, 2), torch.rand(3, 3))
