"""Face boxes with dlib's frontal detector, and square face crops.

dlib's HOG detector ships inside dlib (no model file to download). It finds faces of about 80 pixels and
up, and its cost grows with the image area, so each frame is brought to `detect_size` pixels on its
longer side (down for large frames, up for tiny ones) and converted to grayscale before detection.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in the frame's pixels, x1/y1 exclusive


_DETECTOR = None


def frontal_face_detector():
    """dlib's HOG face detector, built once per process: building it takes ~1-3 s (it unpacks its model),
    and it cannot be pickled into worker processes."""
    global _DETECTOR
    if _DETECTOR is None:
        import dlib
        _DETECTOR = dlib.get_frontal_face_detector()
    return _DETECTOR


class FaceCropper:
    """Detect the largest face of a frame, enlarge its box, crop and resize to a square.

    enlarge: the box's side is multiplied by this about its centre (the paper's conservative margin),
             then clipped to the frame.
    crop_size: side of the square crop written to disk (320 leaves room for a 299 training crop).
    detect_size: longer side of the frame as the detector sees it.
    """

    def __init__(self, *, enlarge: float = 1.3, crop_size: int = 320, detect_size: int = 640, upsample: int = 0):
        if enlarge < 1.0:
            raise ValueError(f"enlarge must be >= 1.0 (a margin around the face), got {enlarge}")
        if crop_size < 8:
            raise ValueError(f"crop_size must be at least 8 pixels, got {crop_size}")
        self.enlarge = float(enlarge)
        self.crop_size = int(crop_size)
        self.detect_size = int(detect_size)
        self.upsample = int(upsample)

    @property
    def detector(self):
        return frontal_face_detector()

    def detect(self, frame: np.ndarray) -> Box | None:
        """The largest face's tight box in frame pixels (not enlarged), or None when there is no face."""
        h, w = frame.shape[:2]
        scale = self.detect_size / max(h, w)
        gray = Image.fromarray(frame).convert("L")
        if abs(scale - 1.0) > 1e-3:
            gray = gray.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR)
        rects = self.detector(np.asarray(gray), self.upsample)
        if len(rects) == 0:
            return None
        r = max(rects, key=lambda r: r.width() * r.height())
        box = (r.left() / scale, r.top() / scale, (r.right() + 1) / scale, (r.bottom() + 1) / scale)
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
        if x1 - x0 < 2 or y1 - y0 < 2:
            return None
        return (x0, y0, x1, y1)

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
