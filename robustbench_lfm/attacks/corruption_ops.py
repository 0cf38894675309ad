"""Image operations the common corruptions are built from (robustbench_lfm/attacks/corruptions.py), in torch.

Every function takes float images (N, C, H, W) in [0, 1] on any device and works on the whole
batch at once; random draws come from the caller's generator, one independent draw per image.
Each stands for the library call of the reference implementation (Hendrycks & Dietterich, ICLR
2019, as packaged by imagecorruptions, Michaelis et al. 2019) and says which:

* `pad` — the border modes: `edge` (scipy `nearest`, OpenCV REPLICATE), `mirror` (OpenCV's
  default REFLECT_101, scipy `mirror`) and `symmetric` (scipy `reflect`, half-sample).
* `gaussian_filter` — scipy/skimage `gaussian` (kernel radius int(truncate sigma + 0.5)).
* `disk_kernel` and `filter2d` — OpenCV's `GaussianBlur` of an aliased disk and `filter2D`.
* `motion_blur` — the line kernel of imagecorruptions' `_motion_blur` (ImageMagick's
  MotionBlurImage, which ImageNet-C called): a one-sided Gaussian along a random angle, edges
  replicated.
* `clipped_zoom` — a centre crop zoomed back with scipy's `zoom(order=1)` (corner-aligned).
* `plasma_fractal` — the diamond-square height map of the fog corruption.
* `brighten` — skimage's HSV round trip with V + c, in closed form: every channel scales by V'/V.
* `box_resize`, `nearest_resize` — Pillow's BOX and NEAREST `resize`.
* `jpeg` — a baseline JPEG round trip as Pillow/libjpeg does it: YCbCr, 4:2:0 chroma, 8x8 DCT,
  the IJG quality-scaled Annex K tables, rounding half away from zero, triangle upsampling.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor

# ---- borders and linear filters ---------------------------------------------------------------


def _border_index(n: int, before: int, after: int, mode: str, device: torch.device) -> Tensor:
    """Source index of each padded position along an axis of length n."""
    i = torch.arange(-before, n + after, device=device)
    if mode == "edge" or n == 1:
        return i.clamp(0, n - 1)
    period = 2 * n - 2 if mode == "mirror" else 2 * n
    i = i.remainder(period)
    return torch.where(i < n, i, period - 1 - i + (1 if mode == "mirror" else 0))


def pad(x: Tensor, top: int, bottom: int, left: int, right: int, mode: str) -> Tensor:
    """`x` padded by the given pixels per side; any pad size, unlike `F.pad`'s reflect modes."""
    if top or bottom:  # an axis padded by nothing is not copied
        x = x.index_select(-2, _border_index(x.shape[-2], top, bottom, mode, x.device))
    if left or right:
        x = x.index_select(-1, _border_index(x.shape[-1], left, right, mode, x.device))
    return x


def separable(x: Tensor, k_rows: Tensor, k_cols: Tensor, mode: str) -> Tensor:
    """Correlation with the outer product of two odd 1-D kernels, per channel, borders by `mode`."""
    n, c, h, w = x.shape
    rh, rw = len(k_rows) // 2, len(k_cols) // 2
    flat = pad(x.reshape(n * c, 1, h, w), rh, rh, rw, rw, mode)
    flat = F.conv2d(flat, k_rows.to(x).view(1, 1, -1, 1))
    return F.conv2d(flat, k_cols.to(x).view(1, 1, 1, -1)).view(n, c, h, w)


def gaussian_kernel(sigma: float, truncate: float = 4.0) -> Tensor:
    """scipy's 1-D Gaussian: radius int(truncate sigma + 0.5), weights summing to 1 (float64)."""
    radius = int(truncate * sigma + 0.5)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * t**2 / sigma**2) if sigma > 0 else (t == 0).double()
    return k / k.sum()


def gaussian_filter(x: Tensor, sigma: float | tuple[float, float], mode: str = "edge", truncate: float = 4.0) -> Tensor:
    """skimage `gaussian` per channel (sigma per axis when a pair); its default border is `edge`."""
    sh, sw = sigma if isinstance(sigma, tuple) else (sigma, sigma)
    return separable(x, gaussian_kernel(sh, truncate), gaussian_kernel(sw, truncate), mode)


def opencv_gaussian(size: int, sigma: float) -> Tensor:
    """OpenCV's getGaussianKernel(size, sigma) for sigma > 0 (float64)."""
    t = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    k = torch.exp(-(t**2) / (2 * sigma**2))
    return k / k.sum()


def disk_kernel(radius: float, alias_blur: float) -> Tensor:
    """The defocus kernel: an aliased disk of `radius` pixels on a 17x17 grid (larger disks: their
    own), normalised, then smoothed by OpenCV's GaussianBlur (3x3, or 5x5 past radius 8)."""
    half, size = (8, 3) if radius <= 8 else (int(radius), 5)
    t = torch.arange(-half, half + 1, dtype=torch.float64)
    disk = ((t[None, :] ** 2 + t[:, None] ** 2) <= radius**2).double()
    disk = (disk / disk.sum())[None, None]
    k = opencv_gaussian(size, alias_blur)
    return separable(disk, k, k, "mirror")[0, 0]


def filter2d(x: Tensor, kernel: Tensor) -> Tensor:
    """OpenCV's filter2D per channel: correlation with an odd square kernel, REFLECT_101 borders.

    A kernel wider than FFT_FROM pixels goes through the DFT (the padded image's spectrum times the
    flipped kernel's, the wrapped-around border cropped away): a 17x17 defocus disk costs 289
    multiply-adds a pixel as a dense convolution and a few dozen this way (results within 1e-6)."""
    n, c, h, w = x.shape
    r = kernel.shape[0] // 2
    flat = pad(x.reshape(n * c, 1, h, w), r, r, r, r, "mirror")
    if kernel.shape[0] < FFT_FROM:
        return F.conv2d(flat, kernel.to(x)[None, None]).view(n, c, h, w)
    size = flat.shape[-2:]
    spectrum = torch.fft.rfft2(flat, s=size) * torch.fft.rfft2(kernel.flip(0, 1).to(x), s=size)
    return torch.fft.irfft2(spectrum, s=size)[..., 2 * r :, 2 * r :].reshape(n, c, h, w).contiguous()


FFT_FROM = 9  # kernel width from which filter2d multiplies spectra instead of convolving


# ---- geometric operations -----------------------------------------------------------------------


def shifted(x: Tensor, dy: Tensor, dx: Tensor) -> Tensor:
    """Each image moved by its own (dy, dx) pixels, the vacated border filled with the edge row or
    column (imagecorruptions' `shift`): out[y, x] = in[clamp(y - dy), clamp(x - dx)]."""
    n, c, h, w = x.shape
    rows = (torch.arange(h, device=x.device)[None] - dy[:, None]).clamp(0, h - 1)
    cols = (torch.arange(w, device=x.device)[None] - dx[:, None]).clamp(0, w - 1)
    flat = (rows[:, :, None] * w + cols[:, None, :]).view(n, 1, h * w)  # one gather of whole rows of pixels:
    return x.reshape(n, c, h * w).gather(2, flat.expand(n, c, h * w)).view(n, c, h, w)  # 6x two per-axis ones


def motion_blur(x: Tensor, radius: int, sigma: float, angle_deg: Tensor) -> Tensor:
    """A motion blur of each image along its own angle (degrees): 2 radius + 1 copies shifted one
    pixel further along the line each, weighted by a one-sided Gaussian of `sigma` pixels. Copies
    that would leave the image entirely are dropped, as the reference's loop stops there."""
    width = 2 * radius + 1
    k = torch.exp(-(torch.arange(width, dtype=torch.float64) ** 2) / (2 * sigma**2))
    k = (k / k.sum()).to(x)
    angle = torch.deg2rad(angle_deg.double())
    h, w = x.shape[-2:]
    out = torch.zeros_like(x)
    alive = torch.ones_like(angle, dtype=torch.bool)
    for i in range(width):
        dy = -torch.ceil(i * torch.sin(angle) - 0.5).long()
        dx = -torch.ceil(i * torch.cos(angle) - 0.5).long()
        alive &= (dy.abs() < h) & (dx.abs() < w)
        out.addcmul_((k[i] * alive.to(x)).view(-1, 1, 1, 1), shifted(x, dy, dx))
    return out


def zoom_linear(x: Tensor, out_h: int, out_w: int) -> Tensor:
    """scipy's `zoom(order=1)` to (out_h, out_w): bilinear with the corner pixels aligned."""
    return F.interpolate(x, size=(out_h, out_w), mode="bilinear", align_corners=True)


def clipped_zoom(x: Tensor, factor: float, centred: bool) -> Tensor:
    """The centre ceil(H / factor) x ceil(W / factor) crop zoomed by `factor` (scipy's output size:
    round(side x factor)), then cut to H x W: from the top left (imagecorruptions) or the centre
    (CIFAR-10-C's make_cifar_c.py)."""
    h, w = x.shape[-2:]
    ch, cw = math.ceil(h / factor), math.ceil(w / factor)
    top, left = (h - ch) // 2, (w - cw) // 2
    zoomed = zoom_linear(x[..., top : top + ch, left : left + cw], round(ch * factor), round(cw * factor))
    if not centred:
        return zoomed[..., :h, :w]
    th, tw = (zoomed.shape[-2] - h) // 2, (zoomed.shape[-1] - w) // 2
    return zoomed[..., th : th + h, tw : tw + w]


def sample_bilinear(x: Tensor, rows: Tensor, cols: Tensor, align: str) -> Tensor:
    """x sampled at fractional pixel coordinates (rows, cols: (N, H, W)) by bilinear interpolation.
    `align="symmetric"`: scipy `map_coordinates(order=1, mode="reflect")` (half-sample reflection);
    `align="mirror"`: OpenCV's warpAffine with REFLECT_101 borders."""
    h, w = x.shape[-2:]
    corners = align == "mirror"
    if corners:
        gy, gx = 2 * rows / max(h - 1, 1) - 1, 2 * cols / max(w - 1, 1) - 1
    else:
        gy, gx = (2 * rows + 1) / h - 1, (2 * cols + 1) / w - 1
    grid = torch.stack([gx, gy], dim=-1).to(x)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=corners)


# ---- procedural layers -------------------------------------------------------------------------


def plasma_fractal(n: int, size: int, decay: float, generator: torch.Generator, device: torch.device) -> Tensor:
    """n diamond-square height maps of side `size` (a power of two) in [0, 1]; each level's
    random displacement is wibble x U(-wibble, wibble), wibble = 100 divided by `decay` per level."""
    m = torch.zeros(n, size, size, dtype=torch.float64, device=device)
    step, wibble = size, 100.0

    def wibbled(a: Tensor) -> Tensor:
        noise = torch.rand(a.shape, generator=generator, device=device, dtype=torch.float64) * 2 - 1
        return a / 4 + wibble * wibble * noise

    while step >= 2:
        half = step // 2
        corner = m[:, ::step, ::step]
        acc = corner + corner.roll(-1, 1)
        m[:, half::step, half::step] = wibbled(acc + acc.roll(-1, 2))
        dr, ul = m[:, half::step, half::step], m[:, ::step, ::step]
        m[:, ::step, half::step] = wibbled(dr + dr.roll(1, 1) + ul + ul.roll(-1, 2))
        m[:, half::step, ::step] = wibbled(dr + dr.roll(1, 2) + ul + ul.roll(-1, 1))
        step, wibble = half, wibble / decay
    m = m - m.amin(dim=(1, 2), keepdim=True)
    return m / m.amax(dim=(1, 2), keepdim=True).clamp_min(1e-12)


def next_power_of_two(n: int) -> int:
    """The smallest power of two >= n."""
    return 1 if n <= 1 else 2 ** (n - 1).bit_length()


# ---- colour ---------------------------------------------------------------------------------------

LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, OpenCV's RGB2GRAY and JPEG's Y


def gray(x: Tensor) -> Tensor:
    """BT.601 luma (N, 1, H, W) of RGB images."""
    weights = torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * weights).sum(1, keepdim=True)


def brighten(x: Tensor, amount: float) -> Tensor:
    """skimage's rgb2hsv, V + amount clipped to [0, 1], hsv2rgb: hue and saturation stay, so each
    pixel's channels scale by V'/V (a black pixel becomes grey V')."""
    v = x.amax(dim=1, keepdim=True)
    v_new = (v + amount).clamp(0, 1)
    return torch.where(v > 0, x * v_new / v.clamp_min(1e-12), v_new.expand_as(x))


# ---- Pillow resampling and JPEG -----------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _box_weights(n_in: int, n_out: int) -> Tensor:
    """Pillow's BOX resampling matrix (n_out, n_in): an input pixel counts when its centre falls in
    the output pixel's box of `n_in / n_out` input pixels (float64, rows summing to 1)."""
    scale = n_in / n_out
    support = 0.5 * max(scale, 1.0)
    weights = torch.zeros(n_out, n_in, dtype=torch.float64)
    for o in range(n_out):
        centre = (o + 0.5) * scale
        lo, hi = max(int(centre - support + 0.5), 0), min(int(centre + support + 0.5), n_in)
        for i in range(lo, hi):
            t = (i - centre + 0.5) / max(scale, 1.0)
            weights[o, i] = 1.0 if -0.5 < t <= 0.5 else 0.0
        weights[o] /= weights[o].sum().clamp_min(1e-12)
    return weights


def box_resize(x: Tensor, out_h: int, out_w: int) -> Tensor:
    """Pillow's `resize(..., Image.BOX)`, rounded to 8 bits as Pillow stores the result."""
    rows = _box_weights(x.shape[-2], out_h).to(x)
    cols = _box_weights(x.shape[-1], out_w).to(x)
    return to_8bit(rows @ x @ cols.T)  # two batched products: 1.35x the three-operand einsum at 128x64


def nearest_resize(x: Tensor, out_h: int, out_w: int) -> Tensor:
    """Pillow's `resize(..., Image.NEAREST)`: the source pixel under each output pixel's centre."""
    return F.interpolate(x, size=(out_h, out_w), mode="nearest-exact")


def to_8bit(x: Tensor) -> Tensor:
    """Rounded to the nearest k/255 (what an 8-bit image holds)."""
    return x.clamp(0, 1).mul_(255).round_().div_(255)  # in place on clamp's fresh copy: one buffer, not three


# The JPEG standard's example quantization tables (ITU-T T.81, Annex K.1), in zigzag-free row order.
_LUMA_TABLE = (
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
)  # fmt: skip
_CHROMA_TABLE = (
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99, *([99] * 32),
)  # fmt: skip


def quality_table(base: tuple[int, ...], quality: int) -> Tensor:
    """The IJG library's table for `quality` (1-100), baseline-limited to 1..255, as (8, 8)."""
    quality = min(max(int(quality), 1), 100)
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    table = [min(max((b * scale + 50) // 100, 1), 255) for b in base]
    return torch.tensor(table, dtype=torch.float64).view(8, 8)


def _dct_matrix() -> Tensor:
    """The orthonormal 8-point DCT-II matrix (float64)."""
    k, n = torch.arange(8, dtype=torch.float64)[:, None], torch.arange(8, dtype=torch.float64)[None]
    d = torch.cos((2 * n + 1) * k * math.pi / 16) * math.sqrt(2 / 8)
    d[0] /= math.sqrt(2)
    return d


@functools.lru_cache(maxsize=1)
def _dct_2d() -> Tensor:
    """The 2-D DCT of a row-major flattened 8x8 block as one (64, 64) matrix: vec(D B D^T) = (D kron D) vec(B)."""
    d = _dct_matrix()
    return torch.kron(d, d)


def _blocks_roundtrip(plane: Tensor, table: Tensor) -> Tensor:
    """DCT, quantize (half away from zero), dequantize and inverse DCT of every 8x8 block of the
    samples (N, H, W) with H, W multiples of 8, level-shifted by 128 and back: every block at once,
    as one product with the (64, 64) 2-D DCT matrix each way (orthonormal: its inverse is its
    transpose). The shifts are made in place on the block copies, not as two more planes."""
    n, h, w = plane.shape
    k = _dct_2d().to(plane)
    blocks = plane.view(n, h // 8, 8, w // 8, 8).transpose(2, 3).reshape(-1, 64)
    if blocks.untyped_storage().data_ptr() == plane.untyped_storage().data_ptr():  # a view: not shifted in place
        blocks = blocks.clone()
    coef = blocks.sub_(128) @ k.T
    q = table.to(plane).reshape(64)
    coef = torch.copysign(coef.abs().div_(q).add_(0.5).floor_().mul_(q), coef)  # half away from zero, in place
    return (coef @ k).view(n, h // 8, w // 8, 8, 8).transpose(2, 3).reshape(n, h, w).add_(128)


def jpeg(x: Tensor, quality: int) -> Tensor:
    """A baseline JPEG round trip at `quality`, as Pillow's `save(..., "JPEG", quality=q)` then
    decoding: 8-bit RGB to YCbCr (JFIF), chroma averaged over 2x2 (4:2:0), edges replicated to
    whole blocks, quantized 8x8 DCT, chroma upsampled by the triangle filter (bilinear), back to
    8-bit RGB. libjpeg's integer DCT and fixed-point colour maths may differ by a level. In float32:
    as close to Pillow's output as float64 (0.63-0.83 levels mean absolute difference at quality
    8-80 on 128x64 synthreid images, against 0.64-0.85), at half the time."""
    n, _, h, w = x.shape
    rgb = x.float().clamp(0, 1).mul_(255).round_()
    ycc = _mix(_RGB_TO_YCC, rgb)
    ycc[:, 1:] += 128
    ycc = pad(ycc.round_(), 0, -h % 16, 0, -w % 16, "edge")
    chroma = _halved(ycc[:, 1:]).round_()
    y = _blocks_roundtrip(ycc[:, 0], quality_table(_LUMA_TABLE, quality))
    chroma = _blocks_roundtrip(chroma.flatten(0, 1), quality_table(_CHROMA_TABLE, quality))
    chroma = chroma.view(n, 2, *chroma.shape[-2:]).clamp_(0, 255)
    up = F.interpolate(chroma, scale_factor=2, mode="bilinear", align_corners=False)
    ycc = torch.empty(n, 3, h, w)  # written in place: no concatenated copy
    ycc[:, 0] = y[:, :h, :w].clamp_(0, 255).round_()
    torch.sub(up[..., :h, :w], 128, out=ycc[:, 1:])
    return _mix(_YCC_TO_RGB, ycc).round_().clamp_(0, 255).div_(255).to(x.dtype)


def _halved(x: Tensor) -> Tensor:
    """The mean of every 2x2 block of `x` (..., H, W), H and W even: `F.avg_pool2d(x, 2)`, as two
    strided sums (9.9x avg_pool2d's time on a channel slice of a 64x3x128x64 batch, 1 thread: 0.20 ms
    against 1.95), identical on the integer levels it is given."""
    rows = x[..., ::2, :] + x[..., 1::2, :]
    return (rows[..., ::2] + rows[..., 1::2]).mul_(0.25)


def _mix(matrix: Tensor, x: Tensor) -> Tensor:
    """`matrix` (3, 3) applied to the channels of every pixel of `x` (N, 3, H, W): one batched
    product, not nine passes over the planes (nor einsum's permuted copies, twice as slow)."""
    n, c, h, w = x.shape
    return (matrix.to(x) @ x.view(n, c, h * w)).view(n, c, h, w)


# JFIF's colour conversion (ITU-T T.871): YCbCr from RGB (Cb, Cr then offset by 128), and back.
_RGB_TO_YCC = torch.tensor([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])
_YCC_TO_RGB = torch.tensor([[1.0, 0.0, 1.402], [1.0, -0.344136, -0.714136], [1.0, 1.772, 0.0]])
