"""Each regularizer's own behaviour, with statistical tolerances of about 3.5 standard errors.

LFM against docs/reference/methods.md §1.3 (per-sample gate, distinct channels, rectangles, area) and
`lfm-code` against the released code's quirks of §1.5 (batch gate, 8 samples of a shuffled batch, shared
channels drawn with replacement, full-width row bands that vanish when x1 >= h).
"""

from __future__ import annotations

import math

import pytest
import torch

from robustbench_lfm.models.lfm import LocalFeatureMasking, LocalFeatureMaskingCode
from robustbench_lfm.models.regularizers import Cutout, DropBlock, HeadDropout, RandomErasing, SpatialDropout

BASE = -5.0  # fills and erasures lie in [0, 1], so any changed cell differs from BASE


def _lfm_masks(p: float, n: int = 4000, c: int = 16, h: int = 32, w: int = 16, seed: int = 0, **kw):
    lfm = LocalFeatureMasking(p=p, seed=seed, **kw).train()
    out = lfm(torch.full((n, c, h, w), BASE))
    return out != BASE, out


def test_lfm_gate_probability_and_channel_count():
    masked, _ = _lfm_masks(p=0.15)
    per_sample = masked.flatten(1).any(1).float()
    assert abs(per_sample.mean().item() - 0.15) < 3.5 * math.sqrt(0.15 * 0.85 / 4000)
    chans = masked[per_sample.bool()].flatten(2).any(2).sum(1)
    assert chans.max().item() <= 8 and chans.float().mean().item() > 7.5  # 8 = 0.5 x 16 distinct channels


@pytest.mark.parametrize("p", [0.3, 0.7])
def test_lfm_probability_knob_sets_the_masked_fraction(p):
    masked, _ = _lfm_masks(p=p, n=2000)
    frac = masked.flatten(1).any(1).float().mean().item()
    assert abs(frac - p) < 3.5 * math.sqrt(p * (1 - p) / 2000)


def test_lfm_channel_fraction_knob():
    masked, _ = _lfm_masks(p=1.0, n=200, channels=0.25)
    assert masked.flatten(2).any(2).sum(1).float().mean().item() == pytest.approx(4, abs=0.2)


def test_lfm_boxes_are_rectangles_with_one_fill_within_the_area_range():
    masked, out = _lfm_masks(p=1.0, n=300)
    rows, cols = masked.any(3), masked.any(2)
    for b, ch in masked.flatten(2).any(2).nonzero()[:200].tolist():
        m = masked[b, ch]
        h, w = rows[b, ch].sum().item(), cols[b, ch].sum().item()
        assert m.sum().item() == h * w  # a full rectangle
        assert 0.02 * 512 * 0.5 <= h * w <= 0.4 * 512 * 1.3  # area fraction [0.02, 0.4], rounding slack
        values = out[b, ch][m]
        assert torch.all(values == values[0]) and 0 <= values[0].item() < 1


@pytest.mark.parametrize(("area", "expected"), [((0.02, 0.4), 0.21), ((0.1, 0.2), 0.15)])
def test_lfm_mean_area_matches_configuration(area, expected):
    masked, _ = _lfm_masks(p=1.0, n=500, area=area)
    per_channel = masked.flatten(2).float().mean(2)
    area_seen = per_channel[per_channel > 0]
    assert abs(area_seen.mean().item() - expected) < 0.03  # E[s] = (low + high) / 2 before rejection


def test_lfm_aspect_range_knob_bounds_the_box_shape():
    masked, _ = _lfm_masks(p=1.0, n=300, aspect=(2.0, 3.0), area=(0.1, 0.2))
    rows, cols = masked.any(3).sum(2), masked.any(2).sum(2)
    on = rows > 0
    ratio = rows[on].float() / cols[on].float()
    assert ratio.min().item() > 1.5 and ratio.max().item() < 3.6  # h/w in [2, 3], integer rounding


def _code_masks(p: float, n_batches: int, b: int = 32, c: int = 16, h: int = 32, w: int = 16, **kw):
    lfm = LocalFeatureMaskingCode(p=p, seed=0, **kw).train()
    return [lfm(torch.full((b, c, h, w), BASE)) != BASE for _ in range(n_batches)]


def test_lfm_code_gates_whole_batches_and_touches_at_most_eight_random_samples():
    batches = _code_masks(p=0.3, n_batches=600)
    hit = torch.tensor([m.any().item() for m in batches]).float()
    assert abs(hit.mean().item() - 0.3) < 3.5 * math.sqrt(0.3 * 0.7 / 600)
    touched = torch.stack([m.flatten(1).any(1) for m in batches])  # (batches, 32)
    assert touched.sum(1).max().item() <= 8  # the code's `batchsize = 8`
    # ... drawn at random (the released loader shuffles; our P x K batches come in identity order):
    # every position of the batch is masked sometimes, not only the first 8 (two identities of K = 4)
    assert touched[:, 8:].any() and touched.float().mean(0).min().item() > 0


def test_lfm_code_shares_its_channels_and_draws_them_with_replacement():
    masked = [m for m in _code_masks(p=1.0, n_batches=40) if m.any()]
    distinct = []
    for m in masked:
        chans = m[m.flatten(1).any(1)].flatten(2).any(2)  # (masked samples, C)
        union = chans.any(0)
        assert torch.all(chans <= union)  # every sample's channels come from one shared set
        distinct.append(union.sum().item())
    # 8 draws with replacement from 16 channels: E[distinct] = 16 (1 - (15/16)^8) = 6.0 < 8
    assert sum(distinct) / len(distinct) < 7.0


def test_lfm_code_masks_full_width_row_bands():
    for m in _code_masks(p=1.0, n_batches=20):
        rows = m.any(3)  # (B, C, H)
        assert torch.equal(m, rows[..., None].expand_as(m))  # whole rows, full width


def test_lfm_code_band_is_empty_when_x1_reaches_h():
    """With area and aspect fixed, h is known; x1 >= h happens and then nothing is masked."""
    lfm = LocalFeatureMaskingCode(p=1.0, seed=0, channels=1 / 16, area=(0.1, 0.1), aspect=(1.0, 1.0)).train()
    # one channel slot; h = w = round(sqrt(0.1 * 64 * 16)) = 10 and x1 ~ U{0..54}: P(x1 >= 10) = 45/55
    per_sample = []
    for _ in range(100):
        m = lfm(torch.full((8, 16, 64, 16), BASE)) != BASE
        per_sample += m.flatten(1).any(1).tolist()
    rate = 1 - sum(per_sample) / len(per_sample)
    assert abs(rate - 45 / 55) < 3.5 * math.sqrt((45 / 55) * (10 / 55) / len(per_sample))


@pytest.mark.parametrize(
    "module",
    [LocalFeatureMasking(p=0.0), LocalFeatureMaskingCode(p=0.0), Cutout(p=0.0), HeadDropout(p=0.0),
     RandomErasing(p=0.0), SpatialDropout(p=0.0), DropBlock(p=0.0)],
)  # fmt: skip
def test_zero_probability_is_identity(module):
    x = torch.rand(8, 4, 16, 8) if module.site != "head" else torch.rand(8, 32)
    assert torch.equal(module.train()(x), x)


def test_cutout_zeroes_one_square_per_sample():
    out = Cutout(p=1.0, size=0.5).train()(torch.ones(200, 3, 64, 32))
    zeros = (out == 0).all(1)
    area = zeros.flatten(1).sum(1)
    assert area.max().item() == 16 * 16 and area.min().item() >= 8 * 8  # a square, at most half outside


def test_random_erasing_erases_one_mean_filled_rectangle_per_chosen_image():
    out = RandomErasing(p=0.5, seed=0).train()(torch.ones(2000, 3, 64, 32))
    erased = (out == 0).all(1)  # (N, H, W), 0 = the mean colour after normalisation
    hit = erased.flatten(1).any(1)
    assert abs(hit.float().mean().item() - 0.5) < 3.5 * math.sqrt(0.25 / 2000)
    for m in erased[hit][:100]:
        h, w = m.any(1).sum().item(), m.any(0).sum().item()
        assert m.sum().item() == h * w and 0.01 * 2048 <= h * w <= 0.45 * 2048


def test_spatial_dropout_zeroes_whole_channels_at_rate_p_and_keeps_the_expectation():
    out = SpatialDropout(p=0.2, seed=0).train()(torch.ones(500, 32, 8, 4))
    dropped = (out == 0).all(3).all(2)
    assert torch.equal((out == 0).any(3).any(2), dropped)  # all or nothing per channel
    assert abs(dropped.float().mean().item() - 0.2) < 3.5 * math.sqrt(0.16 / 16000)
    assert abs(out.mean().item() - 1.0) < 0.02


def test_dropblock_drops_square_blocks_at_about_rate_p():
    out = DropBlock(p=0.1, block_size=3, seed=0).train()(torch.ones(400, 4, 16, 16))
    dropped = out[:, 0] == 0
    assert torch.equal(dropped[:, None].expand_as(out), out == 0)  # one mask shared by the channels
    frac = dropped.float().mean().item()
    assert 0.06 < frac < 0.12  # gamma targets 0.1; overlapping blocks drop a little less
    assert abs(out.mean().item() - 1.0) < 0.02  # rescaled by count / kept
    isolated = [m for m in dropped if m.sum().item() == 9]
    assert isolated and all(m.any(1).sum() == 3 and m.any(0).sum() == 3 for m in isolated)


def test_head_dropout_keeps_the_expectation():
    out = HeadDropout(p=0.5).train()(torch.ones(1000, 64))
    assert abs((out == 0).float().mean().item() - 0.5) < 0.02
    assert abs(out.mean().item() - 1.0) < 0.05
