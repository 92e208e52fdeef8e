"""Square face crops around a detected box, and the filling of frames where the face was lost.

FaceCropper.detect gives the largest face of one frame with the detector it was given (dlib's HOG by
default: rccl-synth's photo faces use it); videos go through rccl.data.faces.track instead, which keeps
one person per video.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image

from rccl.data.faces.base import Box, FaceDetector
from rccl.data.faces.registry import get_detector
from rccl.data.faces.dlib_hog import DLIB_DETECT_SIZE


class FaceCropper:
    """Detect the largest face of a frame, enlarge its box, crop and resize to a square.

    enlarge: the box's side is multiplied by this about its centre (the paper's conservative margin),
             then clipped to the frame.
    crop_size: side of the square crop written to disk (320 leaves room for a 299 training crop).
    detect_size, upsample: dlib HOG's frame size (longer side) and upsampling, when detector is "dlib"
             (the cascade's HOG stage too).
    detector: a name of rccl.data.faces.DETECTOR_NAMES or a FaceDetector.
    """

    def __init__(self, *, enlarge: float = 1.3, crop_size: int = 320, detect_size: int = DLIB_DETECT_SIZE,
                 upsample: int = 0, detector: str | FaceDetector = "dlib"):
        if enlarge < 1.0:
            raise ValueError(f"enlarge must be >= 1.0 (a margin around the face), got {enlarge}")
        if crop_size < 8:
            raise ValueError(f"crop_size must be at least 8 pixels, got {crop_size}")
        self.enlarge = float(enlarge)
        self.crop_size = int(crop_size)
        self.detect_size = int(detect_size)
        self.upsample = int(upsample)
        self._detector = detector

    @property
    def detector(self) -> FaceDetector:
        """The FaceDetector, built on first use (its model loads in seconds; a cropper is cheap to pickle)."""
        if isinstance(self._detector, str):
            hog = {"detect_size": self.detect_size, "upsample": self.upsample}
            self._detector = get_detector(self._detector, **(hog if self._detector in ("dlib", "dlib+mtcnn") else {}))
        return self._detector

    @property
    def detector_name(self) -> str:
        return self._detector if isinstance(self._detector, str) else self._detector.name

    def detect(self, frame: np.ndarray) -> Box | None:
        """The largest face's tight box in frame pixels (not enlarged), or None when there is no face."""
        found = self.detector.detect(frame)
        if not found:
            return None
        best = max(found, key=lambda d: (d.box[2] - d.box[0]) * (d.box[3] - d.box[1]))
        return best.box

    def enlarge_box(self, box: Sequence[float], width: int, height: int) -> Box:
        """`box` grown by `enlarge` about its centre (as a square of the larger side), clipped to the frame."""
        x0, y0, x1, y1 = box
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        half = max(x1 - x0, y1 - y0) * self.enlarge / 2
        ex0, ey0 = max(0, int(round(cx - half))), max(0, int(round(cy - half)))
        ex1, ey1 = min(width, int(round(cx + half))), min(height, int(round(cy + half)))
        if ex1 - ex0 < 1 or ey1 - ey0 < 1:
            raise ValueError(f"box {list(box)} lies outside the {width}x{height} frame")
        return (ex0, ey0, ex1, ey1)

    def crop(self, frame: np.ndarray, box: Sequence[int]) -> np.ndarray:
        """The region `box` (already enlarged) of `frame`, resized to crop_size x crop_size, uint8 RGB."""
        x0, y0, x1, y1 = (int(v) for v in box)
        region = Image.fromarray(np.ascontiguousarray(frame[y0:y1, x0:x1]))
        if region.size != (self.crop_size, self.crop_size):
            region = region.resize((self.crop_size, self.crop_size), Image.BICUBIC)
        return np.asarray(region)


def fill_missing_boxes(boxes: Sequence[Box | None], positions: Sequence[int] | None = None
                       ) -> tuple[list[Box | None], list[bool]]:
    """Each None takes the box of the nearest frame that has one (nearest by `positions`, the frame
    indices, or by place in the list); ties go to the earlier frame. Returns (boxes, detected flags).
    All None stays all None: the video has no face."""
    pos = np.asarray(positions if positions is not None else range(len(boxes)))
    have = np.array([i for i, b in enumerate(boxes) if b is not None])
    detected = [b is not None for b in boxes]
    if have.size == 0:
        return list(boxes), detected
    out = []
    for i, b in enumerate(boxes):
        if b is None:
            b = boxes[int(have[np.argmin(np.abs(pos[have] - pos[i]))])]
        out.append(b)
    return out, detected
