"""One face swap: the donor's face warped onto the target's landmarks (warp), its colour matched to the
target's inside the face (colour), and blended into the target through a mask made from the target's
landmark hull (rccl.data.blend.mask.hull_masks, the self-blending mask's hull).

Two blends (measured in docs/face_swap.md; feather is the default):
  feather  the hull eroded by ERODE of the face's size, then blurred with a Gaussian of sigma FEATHER of it:
           the weight reaches 0 within `reach` pixels outside the hull;
  poisson  OpenCV's seamlessClone (Poisson image editing, NORMAL_CLONE) inside the hull; its solver also
           moves pixels outside the mask by up to 1 grey level, so only the hull's pixels are taken from it.
Outside the hull dilated by `reach` the result is the target, bit for bit.

An open mouth (mouth="target", the default): where the target's inner-lip polygon (points 60-67) covers
at least MOUTH_OPEN of the face's hull, it is cut out of the mask, so the target's own teeth and mouth show
between the donor's lips (warped onto the target's). Without it a closed donor mouth is stretched over
an open one, a smear no swap of a talking face would leave unnoticed, and one c40 does not erase: the
benchmark is about what blending leaves. mouth="donor" swaps the whole hull, as FF++'s FaceSwap does.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from rccl.data.blend.mask import hull_masks
from rccl.data.swap.colour import match_colour
from rccl.data.swap.warp import warp_face

BLENDS = ("feather", "poisson")
MOUTHS = ("target", "donor")
MOUTH_OPEN = 0.01  # inner-lip area / face hull area: UTKFace's closed mouths lie under 0.3 %, smiles at 2-4 %
INNER_LIPS = slice(60, 68)
ERODE = 0.06    # feather: the hull shrinks by this share of the face's size (sqrt of the hull's area) ...
FEATHER = 0.03  # ... and is blurred with a Gaussian of this share as sigma (window 3 sigma)


@dataclass(frozen=True)
class SwapResult:
    image: np.ndarray   # uint8 H x W x 3: the target with the donor's face
    weight: np.ndarray  # float32 H x W in [0, 1]: the donor's share in each pixel
    hull: np.ndarray    # bool H x W: the target landmarks' convex hull
    mask: np.ndarray    # bool H x W: what is swapped, the hull less an open mouth's inside (mouth="target")
    reach: int          # pixels beyond the hull where `weight` can be > 0


def face_hull(points: np.ndarray, height: int, width: int) -> np.ndarray:
    """bool H x W: pixels whose centre lies in the convex hull of `points` (68 x 2, x, y in pixels)."""
    side = max(height, width)  # hull_masks draws a square; a photo is its top-left corner
    # dlib's point (x, y) is the centre of pixel (x, y); hull_masks puts pixel i's centre at i + 0.5
    pts = torch.as_tensor(np.asarray(points, dtype=np.float32) + 0.5).unsqueeze(0)
    return hull_masks(pts, side, side)[0, 0, :height, :width].numpy() > 0.5


def _feather(mask: np.ndarray, hull: np.ndarray) -> tuple[np.ndarray, int]:
    size = math.sqrt(hull.sum())
    r, sigma = max(1, round(ERODE * size)), max(0.5, FEATHER * size)
    k = math.ceil(3 * sigma)
    core = cv2.erode(mask.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    weight = cv2.GaussianBlur(core.astype(np.float32), (2 * k + 1, 2 * k + 1), sigma, borderType=cv2.BORDER_CONSTANT)
    # the blur's square window reaches past k - r on the diagonals, with weights under 0.2 %: cut there, so
    # that the weight is 0 wherever the hull is farther than `reach` (one pixel for the hull's rounding)
    reach = max(0, k - r) + 1
    weight *= cv2.dilate(hull.astype(np.uint8), np.ones((2 * reach + 1, 2 * reach + 1), np.uint8))
    return weight, reach


def _poisson(face: np.ndarray, target: np.ndarray, hull: np.ndarray) -> np.ndarray:
    mask = hull.astype(np.uint8) * 255
    mask[0, :] = mask[-1, :] = mask[:, 0] = mask[:, -1] = 0  # seamlessClone needs a frame of zeros
    if not mask.any():
        return target.copy()
    x, y, w, h = cv2.boundingRect(mask)
    # OpenCV places the source's mask box at centre - size // 2: this centre keeps it where it is.
    # seamlessClone writes into its arguments: give it copies.
    cloned = cv2.seamlessClone(face.copy(), target.copy(), mask.copy(), (x + w // 2, y + h // 2), cv2.NORMAL_CLONE)
    return np.where((mask > 0)[..., None], cloned, target)


def swap_mask(target_points: np.ndarray, hull: np.ndarray, mouth: str) -> np.ndarray:
    """The hull, less the inside of an open mouth when mouth="target" (module docstring)."""
    if mouth == "donor":
        return hull
    inner = face_hull(np.asarray(target_points)[INNER_LIPS], *hull.shape)
    return hull & ~inner if inner.sum() >= MOUTH_OPEN * hull.sum() else hull


def swap_face(target: np.ndarray, target_points: np.ndarray, donor: np.ndarray, donor_points: np.ndarray,
              blend: str = "feather", mouth: str = "target", colour: bool = True) -> SwapResult:
    """The donor's face on the target (both uint8 RGB, any sizes; points (68, 2) in their own pixels)."""
    if blend not in BLENDS:
        raise ValueError(f"blend must be one of {', '.join(BLENDS)}, got {blend!r}")
    if mouth not in MOUTHS:
        raise ValueError(f"mouth must be one of {', '.join(MOUTHS)}, got {mouth!r}")
    h, w = target.shape[:2]
    face, covered = warp_face(donor, donor_points, target_points, (h, w))
    hull = face_hull(target_points, h, w) & covered
    mask = swap_mask(target_points, hull, mouth)
    if colour and mask.any():
        face = match_colour(face, target, mask)
    if blend == "poisson":
        return SwapResult(_poisson(face, target, mask), mask.astype(np.float32), hull, mask, 0)
    weight, reach = _feather(mask, hull)
    weight = weight * covered  # the warp reaches RING_SCALE beyond the hull, further than the feather
    a = weight[..., None]
    mixed = np.round(target * (1 - a) + face * a).astype(np.uint8)
    return SwapResult(np.where(a > 0, mixed, target), weight, hull, mask, reach)
