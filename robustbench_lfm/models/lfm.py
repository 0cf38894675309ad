"""Local Feature Masking (Gong et al., "Beyond Dropout", IJCNN 2024, arXiv 2407.13646).

Two registered regularizers (docs/reference/methods.md §1):

* `lfm` — the paper-intended algorithm (§1.3): per-sample gate, distinct channels per sample,
  true Random-Erasing rectangles, train only.
* `lfm-code` — the released code's behaviour (§1.5), for comparison: one gate per batch, only the
  first `max_samples` samples, one channel subset (drawn with replacement) shared by the batch, and
  the chained-slicing write that masks full-width horizontal bands rather than rectangles. The
  code's missing train/eval guard (§1.5 e) is not reproduced: both are identity in eval.

Both default to the released code's hyper-parameters (§1.4): p = 0.15, channels = 0.5 (32 of 64),
area = (0.02, 0.4) of the map, aspect r1 = 0.3 (ratios 0.3..3.33), fill v ~ U(0, 1) per (sample,
channel), on the stem convolution's output before its BN (`at=stem`; `at=pool` is after the stem
pooling, `at=layer1` after the first stage).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from robustbench_lfm.models.registry import register_regularizer
from robustbench_lfm.models.regularizers import Range, Regularizer, box_masks, check_box_ranges, erasing_boxes


class _LFMBase(Regularizer):
    """Shared knobs of the two LFM variants."""

    site = "stem"
    movable = True

    def __init__(
        self,
        p: float = 0.15,
        channels: float = 0.5,
        area: Range = (0.02, 0.4),
        aspect: float | Range = 0.3,
        seed: int = 0,
        at: str | None = None,
    ) -> None:
        super().__init__(p, seed, at)
        if not 0.0 < channels <= 1.0:
            raise ValueError(f"{type(self).__name__}: channels={channels} must be a fraction of channels in (0, 1]")
        self.channels = float(channels)
        self.area, self.aspect_range = check_box_ranges(type(self).__name__, area, aspect)

    def n_channels(self, c: int) -> int:
        """K, the number of channels masked per sample."""
        return max(1, round(self.channels * c))


@register_regularizer("lfm")
class LocalFeatureMasking(_LFMBase):
    """LFM as the paper intends it (docs/reference/methods.md §1.3).

    For each sample, with probability p: choose K = channels x C distinct channels; in each, draw a
    Random-Erasing box at a uniform position and fill it with one value v ~ U(0, 1) per (sample,
    channel). A (sample, channel) with no accepted try is left alone, as Random Erasing does.
    Vectorized: no Python loop over samples or channels.
    """

    def apply_train(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        dev = x.device
        chosen = (self.rand(b, device=dev) < self.p).nonzero().flatten()
        if chosen.numel() == 0:
            return x
        n, k = len(chosen), self.n_channels(c)
        chans = self.rand(n, c, device=dev).argsort(dim=1)[:, :k]  # distinct channels
        mask_k = box_masks(*erasing_boxes(self, n, k, h, w, dev), h, w)  # (n, k, h, w)
        fill_k = self.rand(n, k, device=dev).to(x.dtype)
        rows = torch.arange(n, device=dev)[:, None]
        mask = torch.zeros(n, c, h, w, dtype=torch.bool, device=dev)
        mask[rows, chans] = mask_k
        fill = torch.zeros(n, c, dtype=x.dtype, device=dev)
        fill[rows, chans] = fill_k
        out = x.clone(memory_format=torch.preserve_format)  # keep channels_last: the next convs need it
        out[chosen] = torch.where(mask, fill[:, :, None, None], x[chosen])
        return out


@register_regularizer("lfm-code")
class LocalFeatureMaskingCode(_LFMBase):
    """LFM as the released code behaves (docs/reference/methods.md §1.5 a-d, f generalised to any shape).

    One draw u < p gates the whole batch; `max_samples` samples of it (default 8, the code's
    `batchsize = 8` constant) are masked, drawn at random: the released code masks the first 8
    of each batch, but its loader shuffles (layumi's baseline, `shuffle=True`), so those are 8
    random samples, whereas this harness's re-ID batches are P x K blocks in identity order,
    where the first 8 would always be the first two identities. K channel indices are drawn
    with replacement and shared by them; per (sample, channel slot) a Random-Erasing size (h, w)
    is drawn with offsets x1 ~ U{0..H-h} and y1 ~ U{0..W-w} (the code's swapped ranges), and the
    chained slices `[y1:y1+h][x1:x1+w]` both act on rows: the masked region is the full-width
    band of rows [y1+x1, y1+min(h, x1+w)), clipped to the map, empty when x1 >= h. Slots are
    written in order, so a channel drawn twice keeps the last slot's value where bands overlap.
    """

    def __init__(self, *args: Any, max_samples: int = 8, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if max_samples < 1:
            raise ValueError(f"lfm-code: max_samples={max_samples} must be >= 1")
        self.max_samples = int(max_samples)

    def apply_train(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        dev = x.device
        if self.rand(1, device=dev).item() >= self.p:
            return x
        n, k = min(self.max_samples, b), self.n_channels(c)
        picked = self.rand(b, device=dev).argsort()[:n]  # what the first n of a shuffled batch are
        chans = (self.rand(k, device=dev) * c).long()  # with replacement, shared by the batch
        _, _, bh, bw = erasing_boxes(self, n, k, h, w, dev)
        u = self.rand(2, n, k, device=dev)
        x1 = (u[0] * (h - bh + 1)).floor()  # the code draws x1 over the height range...
        y1 = (u[1] * (w - bw + 1)).floor()  # ... and y1 over the width range
        top = y1 + x1
        bottom = torch.minimum(y1 + torch.minimum(bh, x1 + bw), torch.full_like(y1, h))
        rows = torch.arange(h, device=dev)
        bands = (rows >= top[..., None]) & (rows < bottom[..., None]) & (bh * bw > 0)[..., None]  # (n, k, h)
        fill = self.rand(n, k, device=dev).to(x.dtype)
        out = x.clone(memory_format=torch.preserve_format)
        for j in range(k):  # in order: the last write to a channel wins, as in the code
            band = bands[:, j, :, None]
            out[picked, chans[j]] = torch.where(band, fill[:, j, None, None], out[picked, chans[j]])
        return out
