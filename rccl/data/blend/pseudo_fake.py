"""Self-blended pseudo-fakes (Shiohara & Yamasaki, CVPR 2022) of a batch of natural crops.

target = the crop itself; source = the crop with its own colour, frequency and zoom/shift jitters;
pseudo-fake = mask * source + (1 - mask) * target, the mask from the crop's 68 landmarks
(rccl.data.blend.mask). Outside the mask's reach the pseudo-fake is the crop, bit for bit; inside, the
face carries a blending boundary and a statistical mismatch, the traces every face swap leaves.
"""
from __future__ import annotations

import torch

from rccl.data.blend import jitter
from rccl.data.blend.mask import blend_masks, source_affine
from rccl.data.blend.params import DEFAULT_PARAMS, BlendParams


def self_blend(crops: torch.Tensor, landmarks: torch.Tensor, params: BlendParams = DEFAULT_PARAMS,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """crops: uint8 (B, 3, S, S); landmarks: (B, 68, 2) x, y in crop pixels. Returns (pseudo-fakes uint8
    (B, 3, S, S), masks float (B, 1, S, S): the source's weight per pixel). `generator`: a torch.Generator
    for reproducible draws (None: torch's global one, seeded per DataLoader worker), or a
    rccl.data.blend.draws.RowDraws: these crops are rows of a larger batch, whose draws are made."""
    if crops.dim() != 4 or crops.shape[1] != 3 or crops.dtype != torch.uint8:
        raise ValueError(f"self_blend: crops must be uint8 (B, 3, S, S), got {crops.dtype} {list(crops.shape)}")
    b, _, h, w = crops.shape
    if h != w:
        raise ValueError(f"self_blend: crops must be square, got {h}x{w}")
    if landmarks.shape[0] != b or landmarks.dim() != 3 or landmarks.shape[2] != 2:
        raise ValueError(f"self_blend: landmarks must be ({b}, P, 2), got {list(landmarks.shape)}")
    target = crops.float() / 255
    theta = source_affine(b, params, generator)
    source = jitter.frequency_and_move(jitter.colour(target, params, generator), theta, params, generator)
    mask = blend_masks(landmarks, h, theta, params, generator)
    blended = target + mask * (source - target)  # exactly the target where the mask is 0
    return (blended * 255).round_().clamp_(0, 255).to(torch.uint8), mask
