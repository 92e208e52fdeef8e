"""The ranges every self-blending draw comes from, written once (docs/self_blending.md explains each).

Fractions are of the crop's side unless said; the values follow Shiohara & Yamasaki's SBI code where it
has one (translation, scale, blend ratios, RGB shift, brightness/contrast), with the differences the docs
list (a minimum colour change, so that a pseudo-fake always differs from its source inside the mask).
"""
from __future__ import annotations

from dataclasses import dataclass

from rccl.defaults import DEFAULTS


@dataclass(frozen=True)
class BlendParams:
    # -- the source copy's jitters (the target is the crop itself, unchanged) --
    translate: tuple[float, float] = (0.03, 0.015)   # |shift| up to this fraction of the side (x, y)
    scale: tuple[float, float] = (0.95, 1 / 0.95)    # zoom about the centre
    rgb_shift: float = 20 / 255                      # per-channel offset up to this (with probability rgb_shift_p)
    rgb_shift_p: float = 0.3
    brightness: tuple[float, float] = (0.03, 0.10)   # additive offset, |b| in this range, random sign
    contrast: float = 0.10                           # factor 1 +- this about the crop's mean
    saturation: float = 0.30                         # factor 1 +- this towards / away from grey
    sharpen: tuple[float, float] = (0.2, 0.5)        # unsharp-mask strength (the sources not downscaled)
    downscale: tuple[int, ...] = (2, 4)              # the down-up factors (a resolution loss, as a generator's)
    downscale_p: float = DEFAULTS["data"]["blend_downscale_p"]  # the share of sources downscaled (config key)
    # the share of crops whose natural (the target) takes the colour and frequency jitters instead of the
    # source (SBI's 50/50; config key data.blend_target_p); 0: always the source
    target_p: float = DEFAULTS["data"]["blend_target_p"]
    # -- the mask, drawn at mask_size (<= the crop's side) and resized to the crop --
    mask_size: int = 64
    hull_directions: int = 64                        # the hull as the intersection of this many half-planes
    deform: float = 0.02                             # elastic displacement up to this fraction of the half-side
    deform_grid: int = 5                             # the displacement field's control points per side
    morph: float = 0.04                              # erode (-) or dilate (+) by up to this fraction of the side
    # Gaussian blur of the mask, sigma as a fraction of the side; its window (3 sigma) reaches ~8% of the side
    # at most, SBI's ~5% (kernels up to 25 px at 192-256 px); the floor keeps a 0-to-1 ramp >= ~3 mask pixels
    blur_sigma: tuple[float, float] = (0.015, 0.025)
    ratios: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0, 1.0, 1.0)  # the blend ratio, one drawn uniformly


DEFAULT_PARAMS = BlendParams()
