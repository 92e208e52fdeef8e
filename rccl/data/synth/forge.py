"""Forging a fake: identity Y's inner face rendered at X's pose and expression and blended into X's frames,
leaving the traces real face swapping leaves. Three kinds (SynthConfig.traces):

- "robust" (the demo's fakes): a generator's loss of resolution (blur, grain gone), a colour mismatch of
  8-16 levels (a per-video offset of random sign plus a per-frame flicker), a faint 2x2 upsampling
  checkerboard, a misalignment of up to 1.2 px, and a feathered mask that leaves a seam. Y keeps its own
  skin tone, so a colour step at the seam survives any compression: c40 does not hurt on this set.
- "fragile" (the compression benchmark): the generated face is colour-transferred to X's (mean matched
  under the mask, as face-swapping pipelines do), so what remains is what heavy compression erases: the
  missing camera grain and fine skin detail of a face generated at ~0.5-0.7x resolution and bicubically
  resampled (its interpolation traces), a thin high-frequency seam where a sharp mask (sigma ~0.4-0.8 px)
  crosses, a faint checkerboard, and a slight residual colour mismatch (1.5-3 levels, random sign) with a
  per-frame flicker. Every one is zero-mean or moves with the face, so a linear model on pixels does not see
  it; c40's quantiser removes grain, seams and checkerboards from natural and fake frames alike.

- "lookalike" (the compression benchmark since issue 10): the traces of "fragile", on a look-alike swap.
  In "fragile" the generated inner face brought Y's colouring into X's head: brows and beard in Y's hair
  colour, Y's iris and lip colour, Y's beard on a chin that has none; a mismatch of whole features, which
  c40 keeps (a CNN found it: bench/RESULTS.md, the probe table). Face-swap pairs are chosen as look-alikes
  (similar skin, hair and eye colour) and the generator reproduces the target's colouring, so here Y's face
  keeps its own shape (eye spacing and size, brows, nose, mouth) and skin detail but takes X's colours and
  beard: what tells the fake is meant to be only what blending leaves. The residual colour mismatch is
  0.5-1.5 levels. Measured (bench/RESULTS.md): the cross-entropy baseline still loses only 0.03-0.05 AUC
  to c40 on this set, so some trace here survives c40 in part (most likely the generated face's blur).

`artifact_strength` scales every trace (0: only the identity swap remains).
"""
from __future__ import annotations

import copy

import numpy as np
from PIL import Image, ImageFilter

from rccl.data.synth.params import SynthConfig, seeded_rng
from rccl.data.synth.render import Canvas, ellipse, light

INNER_FACE = (0, 0.22, 0.78, 0.92)  # the swapped region: an ellipse (cu, cv, a, b) in canonical face units
# what a look-alike swap takes from the target X (the rest of identity_params, the face's shape and skin
# detail, stays Y's)
LOOKALIKE_KEYS = ("skin", "hair", "iris", "lips", "beard")


def zero_mean_2x2(rng) -> np.ndarray:
    p = rng.normal(0, 1, (2, 2))
    p -= p.mean()
    return (p / (np.abs(p).max() + 1e-9)).astype(np.float32)


def fake_params(cfg: SynthConfig, video: str) -> dict:
    """The per-video parameters of a fake (drawn from the video's own generator, which then draws the
    per-frame noise)."""
    r = seeded_rng(cfg, "fake", video)
    direction = r.normal(0, 1, 3)
    if cfg.traces == "robust":  # the draw order is the demo's: its videos stay byte-identical
        return {"misalign": r.uniform(-1.2, 1.2, 2), "res_loss": r.uniform(0.7, 1.3),
                "feather": r.uniform(0.6, 1.4),
                "colour": direction / np.linalg.norm(direction) * r.uniform(8, 16) * r.choice([-1, 1]),
                "flicker": np.cumsum(r.normal(0, 1.0, (cfg.n_frames, 3)), 0) * 0.5,
                "checker": zero_mean_2x2(r) * r.uniform(2.0, 4.0), "frame_rng": r}
    mismatch = (1.5, 3.0) if cfg.traces == "fragile" else (0.5, 1.5)
    return {"misalign": r.uniform(-0.5, 0.5, 2), "down": r.uniform(*cfg.generator_down),
            "feather": r.uniform(0.4, 0.8),
            "colour": direction / np.linalg.norm(direction) * r.uniform(*mismatch) * r.choice([-1, 1]),
            "flicker": np.cumsum(r.normal(0, 0.3, (cfg.n_frames, 3)), 0) * 0.5,
            "checker": zero_mean_2x2(r) * r.uniform(1.5, 3.0) * cfg.checker_scale,
            "seam": r.uniform(5.0, 9.0) * cfg.seam_scale,
            "frame_rng": r}


def source_face(cfg: SynthConfig, face_x, face_y):
    """The face the generator renders into X's frames: Y's, or under "lookalike" Y's shape with X's colouring
    (a procedural face; a photo face is Y's photo, colour-transferred by the blend)."""
    if cfg.traces != "lookalike" or face_y.photo is not None:
        return face_y
    look = copy.copy(face_y)
    look.params = {**face_y.params, **{k: face_x.params[k] for k in LOOKALIKE_KEYS}}
    return look


def swap_face(cfg: SynthConfig, m: dict, fake_m: dict, face_y, geom, frame: np.ndarray, t_index: int) -> np.ndarray:
    """Paste the source face (source_face), generated at low resolution, into a natural frame of X."""
    if cfg.traces in ("fragile", "lookalike"):
        return _swap_fragile(cfg, m, fake_m, face_y, geom, frame, t_index)
    return _swap_robust(cfg, m, fake_m, face_y, geom, frame, t_index)


def _resample(rgb: np.ndarray, small: int, up=Image.BILINEAR) -> np.ndarray:
    s = rgb.shape[0]
    chans = [Image.fromarray(rgb[..., i].astype(np.float32), mode="F").resize((small, small), Image.BOX)
             .resize((s, s), up) for i in range(3)]
    return np.stack([np.asarray(ch) for ch in chans], -1)


def _blurred_mask(cv: Canvas, sigma: float) -> np.ndarray:
    mask = ellipse(cv.u, cv.v, *INNER_FACE, cv.px)
    return np.asarray(Image.fromarray((mask * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(sigma)),
                      np.float32) / 255


def _swap_robust(cfg, m, fake_m, face_y, geom, frame, t_index):
    s = cfg.size
    k = cfg.artifact_strength
    c, scale, roll, mouth, blink, hair_x = geom
    cv = Canvas(c, scale, roll, s, shift=fake_m["misalign"] * k)
    rgb, _, _ = face_y.render(cv, mouth, blink, with_hair=False)
    rgb = light(rgb, m, cv.u, cv.v)
    # the generator works at a lower resolution: downsample and back (blur, and the grain is gone)
    down = 1 + 0.8 * k * fake_m["res_loss"]
    if down > 1.05:
        rgb = _resample(rgb, max(4, int(round(s / down))))
    # colour mismatch: a per-video offset (its sign is random) plus a small per-frame flicker
    rgb = rgb + (fake_m["colour"] + fake_m["flicker"][t_index]) * k
    rgb = rgb + fake_m["frame_rng"].normal(0, m["grain"] * max(0.0, 1 - 0.8 * k), rgb.shape)
    # the generator's upsampling leaves a faint 2x2 checkerboard; its phase flips at random per frame
    checker = np.tile(fake_m["checker"], (s // 2, s // 2))[..., None]
    rgb = rgb + checker * k * fake_m["frame_rng"].choice([-1.0, 1.0])
    mask = _blurred_mask(cv, 0.3 + 1.7 * k * fake_m["feather"])
    mask = mask * (1 - hair_x)  # the swap replaces the face, not X's hair falling over it
    return frame * (1 - mask[..., None]) + rgb * mask[..., None]


def _swap_fragile(cfg, m, fake_m, face_y, geom, frame, t_index):
    s = cfg.size
    k = cfg.artifact_strength
    noise = fake_m["frame_rng"]
    c, scale, roll, mouth, blink, hair_x = geom
    cv = Canvas(c, scale, roll, s, shift=fake_m["misalign"] * k)
    rgb, _, _ = face_y.render(cv, mouth, blink, with_hair=False)
    rgb = light(rgb, m, cv.u, cv.v)
    mask = _blurred_mask(cv, 0.3 + 0.6 * fake_m["feather"] * max(k, 0.2))
    mask = mask * (1 - hair_x)  # the swap replaces the face, not X's hair falling over it
    # colour transfer: the generated face gets the mean colour of the face it replaces
    w = mask[..., None]
    area = max(float(w.sum()), 1.0)
    rgb = rgb + ((frame * w).sum((0, 1)) - (rgb * w).sum((0, 1))) / area
    # generated at a lower resolution, then resampled bicubically: no grain, no fine skin detail, and the
    # interpolation's periodic traces (the down factor is not an integer)
    down = 1 + (fake_m["down"] - 1) * k
    if down > 1.05:
        rgb = _resample(rgb, max(4, int(round(s / down))), Image.BICUBIC)
    rgb = rgb + (fake_m["colour"] + fake_m["flicker"][t_index]) * k  # a slight residual mismatch
    rgb = rgb + noise.normal(0, m["grain"] * max(0.0, 1 - 0.85 * k), rgb.shape)
    checker = np.tile(fake_m["checker"], (s // 2, s // 2))[..., None]
    rgb = rgb + checker * k * noise.choice([-1.0, 1.0])
    out = frame * (1 - w) + rgb * w
    # the seam: where the sharp mask crosses, the two images disagree pixel by pixel (misregistered edges,
    # blending of unmatched grain): a one- to two-pixel band of zero-mean high-frequency noise
    ring = (4 * mask * (1 - mask))[..., None]
    return out + ring * noise.normal(0, fake_m["seam"] * k, (s, s, 1))
