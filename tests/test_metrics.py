"""Market-1501 ranking metrics against the spec's toy vector and an independent per-query loop.

The reference below is written from the protocol text (docs/reference/reid.md B3, B4), one query at a
time, with no code shared with the vectorized evaluator. Like torchreid it ranks each row with
numpy's default argsort, so ties are ordered exactly as torchreid orders them.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robustbench_lfm.metrics import evaluate_rank, pairwise_distance


def reference_rank(distmat, q_pids, g_pids, q_cams, g_cams, max_rank, ap="plain"):
    """CMC, mAP, mINP and the valid count by a plain loop over queries."""
    distmat = np.asarray(distmat)
    max_rank = min(max_rank, distmat.shape[1])
    cmc_sum, aps, inps = np.zeros(max_rank), [], []
    for i in range(len(q_pids)):
        order = np.argsort(distmat[i])
        kept = [j for j in order if not (g_pids[j] == q_pids[i] and g_cams[j] == q_cams[i])]
        hits = [g_pids[j] == q_pids[i] for j in kept]
        ranks = [pos for pos, hit in enumerate(hits, start=1) if hit]
        if not ranks:
            continue  # skipped, not counted
        cmc_sum += [1.0 if ranks[0] <= k else 0.0 for k in range(1, max_rank + 1)]
        terms = []
        for h, r in enumerate(ranks, start=1):
            if ap == "plain":
                terms.append(h / r)
            else:  # trapezoid: mean of the precisions just before and at the h-th hit
                terms.append(0.5 * ((1.0 if r == 1 else (h - 1) / (r - 1)) + h / r))
        aps.append(sum(terms) / len(ranks))
        inps.append(len(ranks) / ranks[-1])
    return cmc_sum / len(aps), float(np.mean(aps)), float(np.mean(inps)), len(aps)


def random_problem(seed: int, nq: int, ng: int, ties: bool, n_ids: int = 12, n_cams: int = 3):
    rng = np.random.default_rng(seed)
    dist = rng.random((nq, ng)).astype(np.float32)
    if ties:
        dist = np.round(dist * 4) / 4  # five distinct values: ties everywhere
    q_pids = rng.integers(1, n_ids, nq)
    g_pids = rng.integers(0, n_ids, ng)  # pid 0: distractors that match no query
    return dist, q_pids, g_pids, rng.integers(0, n_cams, nq), rng.integers(0, n_cams, ng)


def assert_matches_reference(problem, max_rank=20, ap="plain", **kwargs):
    got = evaluate_rank(*problem, max_rank=max_rank, ap=ap, **kwargs)
    cmc, mAP, mINP, valid = reference_rank(*problem, max_rank, ap)
    assert got.num_valid == valid
    assert got.cmc.numpy() == pytest.approx(cmc, abs=1e-6)
    assert got.mAP == pytest.approx(mAP, abs=1e-6)
    assert got.mINP == pytest.approx(mINP, abs=1e-6)
    return got


def test_toy_vector_of_the_protocol_spec():
    dist = torch.tensor([[0.1, 0.2, 0.3, 0.4, 0.5, 0.9], [0.9, 0.1, 0.2, 0.3, 0.4, 0.05]])
    g_pids, g_cams = torch.tensor([1, 2, 1, 0, 1, 3]), torch.tensor([0, 1, 1, 2, 2, 0])
    args = (dist, torch.tensor([1, 3]), g_pids, torch.tensor([0, 0]), g_cams)
    r = evaluate_rank(*args, max_rank=5)
    assert r.num_valid == 1  # query 1's only match shares its camera: skipped
    assert r.valid.tolist() == [True, False]
    assert r.cmc.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0]
    assert r.mAP == pytest.approx(0.5)
    assert r.mINP == pytest.approx(0.5)
    assert r.first_match.tolist() == [2]
    assert evaluate_rank(*args, ap="trapezoid").mAP == pytest.approx(1 / 3)  # reid.md B3: 0.3333


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("ap", ["plain", "trapezoid"])
def test_matches_independent_loop_on_random_inputs(seed, ties, ap):
    problem = random_problem(seed, nq=40, ng=150, ties=ties)
    # a 7-query chunk budget: several chunks, the last one partial
    assert_matches_reference(problem, ap=ap, chunk_bytes=150 * 24 * 7)


def test_gallery_smaller_than_max_rank_caps_the_curve_and_ends_at_one():
    problem = random_problem(5, nq=30, ng=12, ties=False, n_ids=4)
    got = assert_matches_reference(problem, max_rank=50)
    assert len(got.cmc) == 12
    assert got.cmc[-1] == pytest.approx(1.0)  # every valid query is matched within the gallery


def test_float64_and_tensor_inputs_agree_with_numpy_inputs():
    problem = random_problem(2, nq=25, ng=80, ties=False)
    as_tensors = [torch.from_numpy(np.asarray(a)) for a in problem]
    as_tensors[0] = as_tensors[0].double()
    a, b = evaluate_rank(*problem), evaluate_rank(*as_tensors)
    assert torch.equal(a.cmc, b.cmc) and a.mAP == b.mAP and a.mINP == b.mINP


def test_tied_matches_and_non_matches_follow_numpy_argsort_order():
    # a tie between a match and a non-match: the evaluator must order it as np.argsort does
    dist = np.zeros((1, 40), dtype=np.float32)
    g_pids = np.where(np.arange(40) % 3 == 0, 7, 2)
    problem = (dist, np.array([7]), g_pids, np.array([0]), np.ones(40, dtype=int))
    assert_matches_reference(problem)


def test_all_queries_invalid_names_the_single_camera_cause():
    with pytest.raises(ValueError, match="one camera id"):
        evaluate_rank(torch.rand(2, 3), torch.tensor([1, 2]), torch.tensor([1, 2, 2]), torch.zeros(2), torch.zeros(3))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"distmat": torch.tensor([[0.1, float("nan")]])}, "NaN"),
        ({"q_pids": torch.tensor([1, 2])}, "entries"),
        ({"ap": "interpolated"}, "unknown ap formula"),
        ({"distmat": torch.rand(2)}, "2-D"),
    ],
)
def test_bad_input_is_a_clear_error(change, message):
    args = {
        "distmat": torch.rand(1, 2),
        "q_pids": torch.tensor([1]),
        "g_pids": torch.tensor([1, 1]),
        "q_camids": torch.tensor([0]),
        "g_camids": torch.tensor([1, 1]),
    }
    with pytest.raises(ValueError, match=message):
        evaluate_rank(**{**args, **change})


def test_cosine_distance_ignores_scale_and_euclidean_is_squared():
    q, gal = torch.tensor([[3.0, 4.0]]), torch.tensor([[6.0, 8.0], [0.0, 1.0]])
    assert pairwise_distance(q, gal, "cosine")[0].tolist() == pytest.approx([0.0, 0.2])
    assert pairwise_distance(q, gal, "euclidean")[0].tolist() == pytest.approx([25.0, 18.0])
