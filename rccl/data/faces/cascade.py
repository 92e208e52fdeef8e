"""dlib's HOG first, MTCNN only on the frames where HOG finds no face.

HOG is ~8x cheaper than MTCNN on the CPU and finds frontal faces of 80 px and up; MTCNN finds the turned,
small and dark faces it misses. On footage where HOG finds most faces this costs little more than HOG.

When the frames' positions in the video are known (`detect_many(frames, positions)`), a missed frame
next to a frame with faces (NEAR_GAP video frames apart: rccl-prep samples consecutive pairs) is searched
first only around those faces (`Mtcnn.detect_near`: a small pyramid per window; on the clip 40-90 CPU ms
against 95-185 ms for the whole frame); the whole frame is searched when that finds nothing. Every box
is still found on its own frame by the detector named in its Detection.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from rccl.data.faces.base import Detection, FaceDetector

# a missed frame this many video frames from one with faces is searched near those faces first: in
# 1/25 s a head moves and turns a little; farther apart a cut or a turn can change everything
NEAR_GAP = 1


def neighbours(k: int, positions: Sequence[int]) -> list[int]:
    """List places of the frames within NEAR_GAP video frames of frame k (not k itself), nearest first."""
    near = [j for j in range(len(positions)) if j != k and abs(positions[j] - positions[k]) <= NEAR_GAP]
    return sorted(near, key=lambda j: (abs(positions[j] - positions[k]), j))


class Cascade(FaceDetector):
    name = "dlib+mtcnn"

    def __init__(self, first: FaceDetector, fallback: FaceDetector):
        self.first, self.fallback = first, fallback

    def detect(self, frame: np.ndarray) -> list[Detection]:
        return self.detect_many([frame])[0]

    def detect_many(self, frames: Sequence[np.ndarray], positions: Sequence[int] | None = None
                    ) -> list[list[Detection]]:
        if positions is not None and len(positions) != len(frames):
            raise ValueError(f"{len(positions)} positions for {len(frames)} frames")
        out = self.first.detect_many(frames)
        missing = [k for k, found in enumerate(out) if not found]
        near = getattr(self.fallback, "detect_near", None)
        if positions is None or near is None:  # nothing known about neighbours: the whole of each frame
            for k, found in zip(missing, self.fallback.detect_many([frames[k] for k in missing])):
                out[k] = found
            return out
        for k in sorted(missing, key=lambda k: positions[k]):  # in time order: a pair's first helps its second
            known = [d.box for j in neighbours(k, positions) for d in out[j]]
            found = near(frames[k], known) if known else []
            out[k] = found or self.fallback.detect(frames[k])
        return out
