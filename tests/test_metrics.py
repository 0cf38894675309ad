"""Market-1501 ranking metrics against the reference toy vector and an independent loop."""

from __future__ import annotations

import pytest
import torch

from robustbench_lfm.metrics import evaluate_rank, pairwise_distance


def reference_rank(distmat, q_pids, g_pids, q_cams, g_cams, max_rank):
    """Per-query loop written from reference/reid.md B3, independent of the vectorized code."""
    cmc_sum, aps, inps, valid = [0.0] * max_rank, [], [], 0
    for i in range(len(q_pids)):
        order = sorted(range(len(g_pids)), key=lambda j: (float(distmat[i][j]), j))
        kept = [j for j in order if not (g_pids[j] == q_pids[i] and g_cams[j] == q_cams[i])]
        hits = [1 if g_pids[j] == q_pids[i] else 0 for j in kept]
        if not any(hits):
            continue
        valid += 1
        first = hits.index(1) + 1
        for k in range(max_rank):
            cmc_sum[k] += 1.0 if first <= k + 1 else 0.0
        seen, precisions = 0, []
        for pos, h in enumerate(hits, start=1):
            if h:
                seen += 1
                precisions.append(seen / pos)
        aps.append(sum(precisions) / len(precisions))
        last = max(pos for pos, h in enumerate(hits, start=1) if h)
        inps.append(sum(hits) / last)
    return [c / valid for c in cmc_sum], sum(aps) / valid, sum(inps) / valid, valid


def test_toy_vector_of_the_protocol_spec():
    dist = torch.tensor([[0.1, 0.2, 0.3, 0.4, 0.5, 0.9], [0.9, 0.1, 0.2, 0.3, 0.4, 0.05]])
    g_pids, g_cams = torch.tensor([1, 2, 1, 0, 1, 3]), torch.tensor([0, 1, 1, 2, 2, 0])
    r = evaluate_rank(dist, torch.tensor([1, 3]), g_pids, torch.tensor([0, 0]), g_cams, max_rank=5)
    assert r.num_valid == 1  # query 1's only match shares its camera: skipped
    assert r.cmc.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0]
    assert r.mAP == pytest.approx(0.5)
    assert r.mINP == pytest.approx(0.5)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("ties", [False, True])
def test_matches_independent_loop_on_random_inputs(seed, ties):
    g = torch.Generator().manual_seed(seed)
    nq, ng = 40, 120
    dist = torch.rand(nq, ng, generator=g)
    if ties:
        dist = (dist * 4).round() / 4  # many exact ties: order must follow gallery index
    q_pids, g_pids = torch.randint(0, 15, (nq,), generator=g), torch.randint(0, 15, (ng,), generator=g)
    q_cams, g_cams = torch.randint(0, 3, (nq,), generator=g), torch.randint(0, 3, (ng,), generator=g)
    got = evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams, max_rank=20, chunk_bytes=ng * 40 * 7)
    cmc, mAP, mINP, valid = reference_rank(
        dist.tolist(), q_pids.tolist(), g_pids.tolist(), q_cams.tolist(), g_cams.tolist(), 20
    )
    assert got.num_valid == valid
    assert got.cmc.tolist() == pytest.approx(cmc, abs=1e-6)
    assert got.mAP == pytest.approx(mAP, abs=1e-6)
    assert got.mINP == pytest.approx(mINP, abs=1e-6)


def test_all_queries_invalid_is_a_clear_error():
    with pytest.raises(ValueError, match="another camera"):
        evaluate_rank(
            torch.rand(2, 3),
            torch.tensor([1, 2]),
            torch.tensor([1, 2, 2]),
            torch.tensor([0, 0]),
            torch.tensor([0, 0, 0]),
        )


def test_cosine_distance_ignores_scale_and_euclidean_is_squared():
    q, gal = torch.tensor([[3.0, 4.0]]), torch.tensor([[6.0, 8.0], [0.0, 1.0]])
    assert pairwise_distance(q, gal, "cosine")[0].tolist() == pytest.approx([0.0, 0.2])
    assert pairwise_distance(q, gal, "euclidean")[0].tolist() == pytest.approx([25.0, 18.0])
