"""dlib's HOG frontal face detector (ships inside dlib, no model file).

It finds faces of about 80 pixels and up, and its cost grows with the image area, so each frame is
brought to `detect_size` pixels on its longer side (down for large frames, up for tiny ones) and
converted to grayscale first. It misses faces turned from the camera and small faces in large frames.
"""
from __future__ import annotations

import numpy as np

from rccl.data.faces.base import Detection, FaceDetector, scaled, to_frame_box

DLIB_DETECT_SIZE = 640


class DlibHog(FaceDetector):
    name = "dlib"

    def __init__(self, detect_size: int = DLIB_DETECT_SIZE, upsample: int = 0):
        import dlib

        if detect_size < 16:
            raise ValueError(f"detect_size must be at least 16 pixels, got {detect_size}")
        self.detect_size, self.upsample = int(detect_size), int(upsample)
        self._hog = dlib.get_frontal_face_detector()

    def detect(self, frame: np.ndarray) -> list[Detection]:
        h, w = frame.shape[:2]
        scale = self.detect_size / max(h, w)
        rects, scores, _ = self._hog.run(scaled(frame, scale, gray=True), self.upsample, 0.0)
        out = []
        for r, s in zip(rects, scores):
            box = to_frame_box(r.left(), r.top(), r.right() + 1, r.bottom() + 1, scale, w, h)
            if box is not None:
                out.append(Detection(box, float(s), self.name))
        return out
