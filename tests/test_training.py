"""Training pieces: the P x K sampler, losses, schedule, and the verified checkpoint cache."""

from __future__ import annotations

import pytest
import torch

from robustbench_lfm import models
from robustbench_lfm.cache import CheckpointCache
from robustbench_lfm.spec import TrainRecipe
from robustbench_lfm.training import augment, batch_hard_triplet, lr_factor, pk_batches, train_model


def test_pk_batches_hold_p_identities_with_k_images_each():
    labels = torch.arange(20).repeat_interleave(torch.randint(1, 9, (20,), generator=torch.Generator().manual_seed(0)))
    batches = pk_batches(labels, p=4, k=3, g=torch.Generator().manual_seed(1))
    assert batches
    for idx in batches:
        counts = torch.bincount(labels[idx])
        assert len(idx) == 12 and sorted(counts[counts > 0].tolist()) == [3, 3, 3, 3]


def test_batch_hard_triplet_is_zero_when_classes_are_far_apart():
    feats = torch.tensor([[0.0, 0.0], [0.1, 0.0], [10.0, 0.0], [10.1, 0.0]])
    labels = torch.tensor([0, 0, 1, 1])
    assert batch_hard_triplet(feats, labels, margin=0.3).item() == 0.0
    assert batch_hard_triplet(feats, torch.tensor([0, 1, 0, 1]), margin=0.3).item() > 9


def test_warmup_then_step_decay():
    r = TrainRecipe(epochs=10, warmup_epochs=2, milestones=(6, 8), gamma=0.1)
    assert [round(lr_factor(r, e), 3) for e in range(10)] == [0.1, 0.55, 1, 1, 1, 1, 0.1, 0.1, 0.01, 0.01]


def test_augment_keeps_shape_and_content_scale():
    x = torch.rand(8, 3, 16, 8)
    out = augment(x, pad=2, flip=True, g=torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.max() <= 1 and not torch.equal(out, x)


def test_augment_flips_then_crops_each_image_at_its_own_offset():
    """The draws in their order (flip coins, then row and column offsets), each image done alone."""
    x, pad = torch.rand(16, 3, 12, 6), 3
    out = augment(x, pad=pad, flip=True, g=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    flipped = torch.rand(16, generator=g) < 0.5
    dy, dx = (torch.randint(0, 2 * pad + 1, (16,), generator=g) for _ in range(2))
    assert flipped.any() and not flipped.all() and len(set(dy.tolist())) > 1
    for i in range(16):
        image = x[i].flip(-1) if flipped[i] else x[i]
        window = torch.nn.functional.pad(image, (pad,) * 4)[:, dy[i] : dy[i] + 12, dx[i] : dx[i] + 6]
        assert torch.equal(out[i], window)


def test_training_lowers_the_loss_and_is_deterministic(tiny_reid):
    recipe = TrainRecipe().scaled_to(3)
    weights = []
    for _ in range(2):
        torch.manual_seed(0)
        net = models.create_model("lfm", tiny_reid.num_train_ids, seed=0)
        losses: list[float] = []
        cpu = torch.device("cpu")
        train_model(net, tiny_reid, recipe, 0, cpu, on_epoch=lambda e, loss, out=losses: out.append(loss))
        weights.append(net.state_dict()["classifier.weight"])
    assert losses[-1] < losses[0]
    assert torch.equal(weights[0], weights[1])


def test_checkpoint_round_trip_and_tamper_detection(tmp_path):
    cache = CheckpointCache(tmp_path)
    net = models.create_model("plain", 5)
    sha = cache.save("k1", net, {"note": "x"})
    fresh = models.create_model("plain", 5)
    meta = cache.load("k1", fresh)
    assert meta["sha256"] == sha and torch.equal(fresh.classifier.weight, net.classifier.weight)
    weights, _ = cache.paths("k1")
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.warns(UserWarning, match="sha256"):
        assert cache.load("k1", fresh) is None
