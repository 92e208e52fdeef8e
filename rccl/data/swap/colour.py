"""Colour transfer (Reinhard et al. 2001): the mean and spread of each channel of CIELAB, measured inside a
mask, moved from the image's to the reference's; the face-swap step that makes a donor's skin the target's."""
from __future__ import annotations

import cv2
import numpy as np


def match_colour(image: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """`image` (uint8 RGB) with its L*a*b* statistics inside `mask` (bool) set to `reference`'s there."""
    lab = cv2.cvtColor(image.astype(np.float32) / 255, cv2.COLOR_RGB2LAB)
    ref = cv2.cvtColor(reference.astype(np.float32) / 255, cv2.COLOR_RGB2LAB)
    mean, std = lab[mask].mean(axis=0), lab[mask].std(axis=0)
    ref_mean, ref_std = ref[mask].mean(axis=0), ref[mask].std(axis=0)
    # a flat channel (a grey photo's a*, b*) takes the reference's mean and keeps its own (zero) spread
    gain = np.where(std > 1e-3, ref_std / np.maximum(std, 1e-3), 1.0)
    out = cv2.cvtColor((lab - mean) * gain + ref_mean, cv2.COLOR_LAB2RGB)
    return np.clip(np.round(out * 255), 0, 255).astype(np.uint8)
