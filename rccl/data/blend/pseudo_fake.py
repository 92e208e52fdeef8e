"""Self-blended pseudo-fakes (Shiohara & Yamasaki, CVPR 2022) of a batch of natural crops.

Per crop, the colour and frequency jitters go to one of two copies (SBI's 50/50, `BlendParams.target_p`):
- source branch: natural = the crop itself; source = the crop jittered, zoomed and shifted;
- target branch: natural = the crop jittered in place (no move); source = the crop zoomed and shifted.
pseudo-fake = mask * source + (1 - mask) * natural, the mask from the crop's 68 landmarks, moved with the
source (rccl.data.blend.mask). Outside the mask's reach the pseudo-fake is its natural, bit for bit; inside,
the face carries a blending boundary and a statistical mismatch, the traces every face swap leaves. In the
target branch the natural the pseudo-fake pairs with is the jittered crop: a whole face that lost detail
(down-scaled) or gained it (sharpened) or changed colour is then natural as often as fake, so only the
mismatch between the inner face and its surroundings tells them apart (bench/RESULTS.md, "Self-blending on
real faces").
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from rccl.data.blend import draws, jitter
from rccl.data.blend.mask import blend_masks, source_affine
from rccl.data.blend.params import DEFAULT_PARAMS, BlendParams


class SelfBlend(NamedTuple):
    fakes: torch.Tensor     # uint8 (B, 3, S, S): the pseudo-fakes
    masks: torch.Tensor     # float (B, 1, S, S): the source's weight per pixel
    naturals: torch.Tensor  # uint8 (B, 3, S, S): the natural each pseudo-fake is blended into (the crop, or
                            # in the target branch the crop with the jitters): the same-frame natural to pair it with


def self_blend(crops: torch.Tensor, landmarks: torch.Tensor, params: BlendParams = DEFAULT_PARAMS,
               generator: torch.Generator | None = None) -> SelfBlend:
    """crops: uint8 (B, 3, S, S); landmarks: (B, 68, 2) x, y in crop pixels. Returns SelfBlend(fakes,
    masks, naturals). `generator`: a torch.Generator for reproducible draws (None: torch's global one,
    seeded per DataLoader worker), or a rccl.data.blend.draws.RowDraws: these crops are rows of a larger
    batch, whose draws are made. With params.target_p == 0 no draw is added: the draws of earlier
    versions (every jitter on the source)."""
    if crops.dim() != 4 or crops.shape[1] != 3 or crops.dtype != torch.uint8:
        raise ValueError(f"self_blend: crops must be uint8 (B, 3, S, S), got {crops.dtype} {list(crops.shape)}")
    b, _, h, w = crops.shape
    if h != w:
        raise ValueError(f"self_blend: crops must be square, got {h}x{w}")
    if landmarks.shape[0] != b or landmarks.dim() != 3 or landmarks.shape[2] != 2:
        raise ValueError(f"self_blend: landmarks must be ({b}, P, 2), got {list(landmarks.shape)}")
    crop = crops.float() / 255
    on_target = (draws.rand(generator, b) < params.target_p if params.target_p > 0
                 else torch.zeros(b, dtype=torch.bool))
    theta = source_affine(b, params, generator)
    # the jitters with the source's move, or in place (identity) for the crops whose target takes them
    still = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).expand(b, 2, 3)
    jittered = jitter.frequency_and_move(jitter.colour(crop, params, generator),
                                         torch.where(on_target.view(-1, 1, 1), still, theta), params, generator)
    mask = blend_masks(landmarks, h, theta, params, generator)
    natural, source = crop, jittered
    if on_target.any():
        t = on_target.view(-1, 1, 1, 1)
        natural = torch.where(t, jittered, crop)
        source = torch.where(t, jitter.move(crop, theta), jittered)
    natural = (natural * 255).round_().clamp_(0, 255)
    blended = natural / 255 + mask * (source - natural / 255)  # exactly the natural where the mask is 0
    fakes = (blended * 255).round_().clamp_(0, 255).to(torch.uint8)
    return SelfBlend(fakes, mask, natural.to(torch.uint8))
