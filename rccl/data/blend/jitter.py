"""The source copy's jitters, on a batch of float images in [0, 1] (B, 3, H, W): colour, frequency (blur
or sharpen), and the small zoom and shift. Each sample draws its own values; every op is one batched call."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from rccl.data.blend import draws
from rccl.data.blend.params import DEFAULT_PARAMS, BlendParams

_GREY = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)


def _signed(n: int, lo: float, hi: float, generator=None) -> torch.Tensor:
    """n values with |v| uniform in [lo, hi] and a random sign."""
    u = draws.rand(generator, n, 2)
    return (lo + (hi - lo) * u[:, 0]) * torch.where(u[:, 1] < 0.5, -1.0, 1.0)


def colour(images: torch.Tensor, params: BlendParams = DEFAULT_PARAMS, generator=None) -> torch.Tensor:
    """RGB shift (with probability rgb_shift_p), saturation, contrast about the image's mean, brightness
    offset (never below params.brightness[0], so the source always differs from the crop). All four are
    linear in the pixel: one 3x3 matrix and offset per sample, applied in one batched product."""
    b, _, h, w = images.shape
    u = draws.rand(generator, b, 6)
    shift = (2 * u[:, :3] - 1) * params.rgb_shift * (u[:, 3:4] < params.rgb_shift_p)
    saturation = 1 + (2 * u[:, 4] - 1) * params.saturation
    contrast = 1 + (2 * u[:, 5] - 1) * params.contrast
    brightness = _signed(b, *params.brightness, generator=generator)
    grey = _GREY.view(1, 1, 3)
    eye = torch.eye(3).expand(b, 3, 3)
    # saturation: x -> g + s (x - g), g = grey(x); contrast: y -> m + c (y - m), m = the mean grey level
    sat = saturation.view(-1, 1, 1) * eye + (1 - saturation.view(-1, 1, 1)) * grey.expand(b, 3, 3)
    matrix = contrast.view(-1, 1, 1) * sat
    mean = (images.mean(dim=(2, 3)) * _GREY.view(1, 3)).sum(dim=1)                # (B,)
    offset = (1 - contrast) * mean
    offset = offset.view(-1, 1) + shift + brightness.view(-1, 1)                    # (B, 3)
    flat = images.reshape(b, 3, h * w)
    out = torch.baddbmm(offset.unsqueeze(2), matrix, flat)
    return out.clamp_(0, 1).view(b, 3, h, w)


def frequency_and_move(images: torch.Tensor, theta: torch.Tensor, params: BlendParams = DEFAULT_PARAMS,
                       generator=None) -> torch.Tensor:
    """A share params.downscale_p of the samples (default half) lose resolution (area down by a factor of
    params.downscale), the others are sharpened (x + a * (x - blur(x)), a in params.sharpen); then every sample is zoomed and shifted by its
    `theta` (rccl.data.blend.mask.source_affine), the border repeated outward so that the copy has no black
    edge for the mask to pick up. One bilinear resampling per sample: a lowered sample is resampled from its
    small copy directly (bilinear back up and the move in one grid_sample)."""
    b, c, h, w = images.shape
    u = draws.rand(generator, b, 3)
    grid = F.affine_grid(theta, (b, c, h, w), align_corners=False)
    out = torch.empty_like(images)
    sharpen_it = u[:, 0] < 1 - params.downscale_p  # at 0.5, the draws of the fixed half-and-half
    n = len(params.downscale)
    factors = torch.tensor(params.downscale)[(u[:, 2] * n).long().clamp(max=n - 1)]
    factors = torch.where(sharpen_it | (factors * 2 > min(h, w)), 1, factors)
    idx = sharpen_it.nonzero().squeeze(1)
    if len(idx):
        x = images.index_select(0, idx)
        a = (params.sharpen[0] + (params.sharpen[1] - params.sharpen[0]) * u[idx, 1]).view(-1, 1, 1, 1)
        # the unsharp mask's blur: a 2x down-up (a 3x3 window measured 8x slower on the CPU)
        smooth = F.interpolate(F.avg_pool2d(x, 2, ceil_mode=True), size=(h, w), mode="bilinear", align_corners=False)
        out[idx] = _resample((x + a * (x - smooth)).clamp_(0, 1), grid[idx])
    for f in set(factors[~sharpen_it].tolist()):
        idx = (~sharpen_it & (factors == f)).nonzero().squeeze(1)
        x = images.index_select(0, idx)
        small = x if f == 1 else F.interpolate(x, size=(h // f, w // f), mode="area")
        out[idx] = _resample(small, grid[idx])
    return out


def move(images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """The zoom and shift alone (no colour or frequency change): the source copy of a crop whose target
    takes the jitters; the same bilinear resampling and repeated border as frequency_and_move."""
    b, c, h, w = images.shape
    return _resample(images, F.affine_grid(theta, (b, c, h, w), align_corners=False))


def _resample(images: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
