"""The blending mask of a batch: the landmarks' convex hull, moved with the source copy, deformed, eroded or
dilated, blurred and scaled by a blend ratio; all in torch on the whole batch.

Everything is drawn at a small side R (params.mask_size, at most the crop's) and resized to the crop at the
end: the mask is smooth by construction, so nothing is lost, and a batch of 64 masks costs a few ms.
`reach()` bounds how far outside the hull any mask can be non-zero (the geometry test relies on it).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from rccl.data.blend import draws
from rccl.data.blend.params import DEFAULT_PARAMS, BlendParams


def mask_side(crop_side: int, params: BlendParams = DEFAULT_PARAMS) -> int:
    return max(8, min(int(crop_side), int(params.mask_size)))


def hull_masks(landmarks: torch.Tensor, side: int, crop_side: int, directions: int = 64) -> torch.Tensor:
    """(B, 1, side, side) float 0/1: 1 where a pixel centre lies in the convex hull of the landmarks
    ((B, P, 2) x, y in the pixels of a crop_side crop). The hull is the intersection of `directions`
    half-planes {x: <x, u> <= max_i <p_i, u>}: a polygon circumscribing it, within 0.12% of its radius
    for 64 directions. A convex region meets each row in one interval: its ends come from the half-planes
    in (B, D, side) operations, then one comparison per pixel, with no hull computed per crop."""
    pts = landmarks.float() * (side / crop_side)                               # (B, P, 2) in mask pixels
    angles = (torch.arange(directions, dtype=torch.float64) + 0.5) * (2 * math.pi / directions)
    cos, sin = angles.cos().float(), angles.sin().float()                      # no direction is vertical
    support = pts[..., 0:1] * cos + pts[..., 1:2] * sin                        # (B, P, D)
    h = support.amax(dim=1).unsqueeze(2)                                       # (B, D, 1)
    c = torch.arange(side, dtype=torch.float32) + 0.5
    bound = (h - c.view(1, 1, -1) * sin.view(1, -1, 1)) / cos.view(1, -1, 1)  # (B, D, side): x <= or >= this
    right = torch.where(cos.view(1, -1, 1) > 0, bound, torch.inf).amin(dim=1)  # (B, side) per row
    left = torch.where(cos.view(1, -1, 1) < 0, bound, -torch.inf).amax(dim=1)
    inside = (c.view(1, 1, -1) >= left.unsqueeze(2)) & (c.view(1, 1, -1) <= right.unsqueeze(2))  # (B, y, x)
    return inside.float().unsqueeze(1)


def _grow(mask: torch.Tensor, op) -> torch.Tensor:
    """One 3x3 dilation (op=torch.maximum) or erosion (torch.minimum) step, edges repeated: four elementwise
    ops on shifted slices (max_pool2d measured 20x slower on the CPU for these small masks)."""
    x = mask.clone()
    x[..., :, 1:] = op(x[..., :, 1:], mask[..., :, :-1])
    x[..., :, :-1] = op(x[..., :, :-1], mask[..., :, 1:])
    y = x.clone()
    y[..., 1:, :] = op(y[..., 1:, :], x[..., :-1, :])
    y[..., :-1, :] = op(y[..., :-1, :], x[..., 1:, :])
    return y


def _morph(mask: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """Per-sample erosion (radius < 0) or dilation (> 0) by |radius| pixels, with 3x3 steps: the r-th
    step's result is kept for the samples whose |radius| is r."""
    out = mask.clone()
    grown, shrunk = mask, mask
    for r in range(1, int(radius.abs().max().item()) + 1):
        grown, shrunk = _grow(grown, torch.maximum), _grow(shrunk, torch.minimum)
        out = torch.where((radius == r).view(-1, 1, 1, 1), grown, out)
        out = torch.where((radius == -r).view(-1, 1, 1, 1), shrunk, out)
    return out


def _blur(mask: torch.Tensor, sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """Per-sample Gaussian blur (sigma (B,) in pixels), separable, one grouped convolution per axis."""
    b = mask.shape[0]
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x.view(1, -1) / sigma.view(-1, 1)) ** 2)
    k = k / k.sum(dim=1, keepdim=True)                                         # (B, 2r+1)
    m = mask.view(1, b, *mask.shape[2:])
    m = F.conv2d(F.pad(m, (radius, radius, 0, 0)), k.view(b, 1, 1, -1), groups=b)
    m = F.conv2d(F.pad(m, (0, 0, radius, radius)), k.view(b, 1, -1, 1), groups=b)
    return m.view_as(mask)


def blur_radius(side: int, params: BlendParams = DEFAULT_PARAMS) -> int:
    return max(1, math.ceil(3 * params.blur_sigma[1] * side))


def morph_radius(side: int, params: BlendParams = DEFAULT_PARAMS) -> int:
    return int(round(params.morph * side))


def reach(crop_side: int, params: BlendParams = DEFAULT_PARAMS) -> int:
    """Crop pixels beyond the landmarks' hull where a mask can be non-zero: the source's shift and zoom, the
    elastic deformation, the dilation and the blur's window, at mask resolution, plus one mask pixel for the
    resize and one for the hull's polygon, scaled to the crop."""
    side = mask_side(crop_side, params)
    zoom = max(abs(params.scale[0] - 1), abs(params.scale[1] - 1)) / min(params.scale)
    move = [(zoom + 2 * t + params.deform) * side / 2 for t in params.translate]  # normalised -> pixels
    low = math.hypot(*move) + morph_radius(side, params) + blur_radius(side, params) + 2
    return math.ceil(low * crop_side / side)


def source_affine(n: int, params: BlendParams = DEFAULT_PARAMS, generator=None) -> torch.Tensor:
    """(n, 2, 3) affine_grid matrices: output pixel x samples the input at s * x + t (normalised coords),
    one zoom s and shift t per sample, shared by the source copy and its mask."""
    u = draws.rand(generator, n, 3)
    lo, hi = params.scale
    s = 1 / (lo + (hi - lo) * u[:, 0])
    t = (2 * u[:, 1:] - 1) * 2 * torch.tensor(params.translate, dtype=torch.float32)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = s
    theta[:, :, 2] = t
    return theta


def blend_masks(landmarks: torch.Tensor, crop_side: int, theta: torch.Tensor, params: BlendParams = DEFAULT_PARAMS,
                generator=None) -> torch.Tensor:
    """(B, 1, crop_side, crop_side) float in [0, 1]: the weight of the source copy in each pixel of the
    pseudo-fake. `theta`: the source's affine (source_affine), which the hull follows."""
    b = landmarks.shape[0]
    side = mask_side(crop_side, params)
    hull = hull_masks(landmarks, side, crop_side, params.hull_directions)
    # the hull moves with the source copy, then an elastic deformation: a smooth field from a coarse grid
    grid = F.affine_grid(theta, (b, 1, side, side), align_corners=False)
    g = params.deform_grid
    coarse = (2 * draws.rand(generator, b, 2, g, g) - 1) * params.deform
    field = F.interpolate(coarse, size=(side, side), mode="bicubic", align_corners=True)
    field = field.clamp(-params.deform, params.deform).permute(0, 2, 3, 1)
    mask = F.grid_sample(hull, grid + field, mode="bilinear", padding_mode="zeros", align_corners=False)
    mask = (mask > 0.5).float()
    r_max = morph_radius(side, params)
    radius = draws.randint(generator, -r_max, r_max + 1, b)
    mask = _morph(mask, radius)
    lo, hi = params.blur_sigma
    sigma = (lo + (hi - lo) * draws.rand(generator, b)) * side
    mask = _blur(mask, sigma, blur_radius(side, params))
    mask = mask / mask.amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)
    ratios = torch.tensor(params.ratios, dtype=torch.float32)
    ratio = ratios[draws.randint(generator, 0, len(ratios), b)]
    mask = mask * ratio.view(-1, 1, 1, 1)
    if side != crop_side:
        mask = F.interpolate(mask, size=(crop_side, crop_side), mode="bilinear", align_corners=False)
    return mask.clamp(0, 1)
