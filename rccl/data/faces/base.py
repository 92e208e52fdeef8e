"""What every face detector gives: Box, Detection, the FaceDetector base class, and the scaling helpers.

A detector maps an RGB uint8 frame to every face it finds, as `Detection`s in the frame's own pixels,
with a confidence and its own name (the manifest's `detector` column). The concrete detectors (dlib_hog,
dlib_cnn, mtcnn, cascade) import this module and never the registry (rccl.data.faces.registry), which
imports them: no import circle.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
from PIL import Image

from rccl.errors import RcclError

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in the frame's pixels, x1/y1 exclusive

class DetectorError(RcclError, RuntimeError):
    """A detector that cannot run here (package or weights missing, unknown name); the message says how to fix it."""


class Detection(NamedTuple):
    box: Box
    score: float   # the detector's confidence (dlib HOG: its SVM margin; MTCNN: the face probability)
    detector: str  # the name of the detector that found it


class FaceDetector:
    """Base of the detectors: `detect_many` defaults to `detect` frame by frame.

    detect_many's `positions` are the frames' indices in the video (None: unknown); a detector may use
    them to share work between neighbouring frames (the cascade does), never to invent a box."""

    name = "?"

    def detect(self, frame: np.ndarray) -> list[Detection]:
        raise NotImplementedError

    def detect_many(self, frames: Sequence[np.ndarray], positions: Sequence[int] | None = None
                    ) -> list[list[Detection]]:
        return [self.detect(f) for f in frames]


def scaled(frame: np.ndarray, scale: float, *, gray: bool = False) -> np.ndarray:
    """`frame` resized by `scale` (bilinear), optionally to grayscale; unchanged when scale is ~1."""
    img = Image.fromarray(frame)
    if gray:
        img = img.convert("L")
    h, w = frame.shape[:2]
    if abs(scale - 1.0) > 1e-3:
        img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR)
    return np.asarray(img)


def to_frame_box(x0: float, y0: float, x1: float, y1: float, scale: float, width: int, height: int) -> Box | None:
    """A box found on a frame resized by `scale`, in the original frame's pixels, clipped; None if degenerate."""
    bx0, by0 = max(0, int(round(x0 / scale))), max(0, int(round(y0 / scale)))
    bx1, by1 = min(width, int(round(x1 / scale))), min(height, int(round(y1 / scale)))
    if bx1 - bx0 < 2 or by1 - by0 < 2:
        return None
    return (bx0, by0, bx1, by1)
