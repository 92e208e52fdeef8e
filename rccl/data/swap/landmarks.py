"""68 landmarks of a whole photo (not a prepared crop): the face found by dlib's HOG detector, then dlib's
shape predictor in that box (rccl.data.faces.landmarks, the model rccl-prep uses), checked by the same rule.

Tight face crops (UTKFace's 200x200 photos) leave the detector little margin, so a photo where HOG finds no
face is searched again padded by PAD_SHARE of its longer side (edges repeated). `box="frame"` skips the
detector and fits in the whole frame (the face fills a tight crop; measured in docs/face_swap.md), and
"detect-or-frame" falls back to it where HOG finds nothing.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rccl.data.faces.dlib_hog import DLIB_DETECT_SIZE, DlibHog
from rccl.data.faces.landmarks import LandmarkPredictor, landmark_problem

BOX_MODES = ("detect", "frame", "detect-or-frame")
PAD_SHARE = 0.25


@dataclass(frozen=True)
class PhotoFit:
    landmarks: np.ndarray | None  # (68, 2) float32 x, y in the photo's pixels; None when unusable
    how: str                      # "dlib", "dlib, padded", "frame" or "" (nothing fitted)
    problem: str                  # "" or why this photo has no usable landmarks (one line)


class PhotoLandmarker:
    """fit(photo) -> PhotoFit. Pickles without its dlib objects (rebuilt in a worker on first use)."""

    def __init__(self, box: str = "detect", weights: str | None = None):
        if box not in BOX_MODES:
            raise ValueError(f"box must be one of {', '.join(BOX_MODES)}, got {box!r}")
        self.box = box
        self.predictor = LandmarkPredictor(weights)
        self._hogs: dict[int, DlibHog] = {}

    def __getstate__(self):
        return {"box": self.box, "predictor": self.predictor, "_hogs": {}}

    def _faces(self, image: np.ndarray):
        """HOG's boxes at the photo's own scale (at most DLIB_DETECT_SIZE on the longer side)."""
        size = min(max(image.shape[:2]), DLIB_DETECT_SIZE)
        if size not in self._hogs:  # a detector costs ~0.3 s to build: one per scale and process
            self._hogs[size] = DlibHog(detect_size=size)
        return [d.box for d in self._hogs[size].detect(image)]

    def _detected(self, image: np.ndarray) -> tuple[np.ndarray, str] | None:
        boxes = self._faces(image)
        if boxes:
            return self._fit_largest(image, boxes), "dlib"
        pad = int(round(PAD_SHARE * max(image.shape[:2])))
        padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
        boxes = self._faces(padded)
        if boxes:  # fitted on the padded photo, where the box lies, then moved back
            return self._fit_largest(padded, boxes) - pad, "dlib, padded"
        return None

    def _fit_largest(self, image: np.ndarray, boxes) -> np.ndarray:
        box = max(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))
        return self.predictor.predict(image, box)

    def fit(self, image: np.ndarray) -> PhotoFit:
        """The landmarks of the largest face of `image` (uint8 H x W x 3 RGB) and how they were found."""
        h, w = image.shape[:2]
        found = self._detected(image) if self.box != "frame" else None
        if found is None and self.box == "detect":
            return PhotoFit(None, "", f"dlib's HOG detector finds no face (in the photo, nor padded by "
                                      f"{PAD_SHARE:.0%} of its side)")
        pts, how = found if found is not None else (self.predictor.predict(image, (0, 0, w, h)), "frame")
        problem = landmark_problem(pts, w, h)
        if problem is not None:
            return PhotoFit(None, how, f"unusable landmark fit ({how}): {problem}")
        return PhotoFit(pts.astype(np.float32), how, "")
