"""MTCNN (facenet-pytorch; its wheel ships the P/R/O-net weights, nothing is downloaded).

Finds small and turned faces that dlib's HOG misses. Two things make it work on real rooms (DFDC):
frames larger than 540 pixels on their shorter side are brought down to 540 (a face of 40 px at 1080p
is still 20 px, MTCNN's smallest), as DFDC's winning solution scaled by resolution; and the frame's
contrast is stretched (1 % of pixels clipped at each end) before detection, which brings back faces in
dark rooms (the detector still returns boxes on the original frame). A face needs probability
>= min_score. Runs on the CPU with one thread (prep runs one process per core).
Install: `pip install --no-deps facenet-pytorch` (its metadata pins old torch versions) plus `requests`.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image, ImageOps

from rccl.data.faces.detection import Detection, DetectorError, FaceDetector, to_frame_box

MTCNN_SHORT_SIDE = 540
MTCNN_MIN_FACE = 20
MTCNN_MIN_SCORE = 0.9


class Mtcnn(FaceDetector):
    name = "mtcnn"

    def __init__(self, min_score: float = MTCNN_MIN_SCORE):
        try:
            from facenet_pytorch import MTCNN
        except ImportError as e:
            raise DetectorError(f"the mtcnn face detector needs facenet-pytorch ({e}); install it with "
                                "`pip install --no-deps facenet-pytorch requests`") from None
        if not 0.0 < min_score < 1.0:
            raise ValueError(f"min_score must be in (0, 1), got {min_score}")
        self.min_score = float(min_score)
        self._net = MTCNN(keep_all=True, device="cpu", min_face_size=MTCNN_MIN_FACE, post_process=False)

    @staticmethod
    def _input(frame: np.ndarray) -> tuple[np.ndarray, float]:
        h, w = frame.shape[:2]
        scale = min(1.0, MTCNN_SHORT_SIDE / min(h, w))
        img = Image.fromarray(frame)
        if scale < 1.0:
            img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR)
        return np.asarray(ImageOps.autocontrast(img, cutoff=1)), scale

    def detect(self, frame: np.ndarray) -> list[Detection]:
        return self.detect_many([frame])[0]

    def detect_many(self, frames: Sequence[np.ndarray]) -> list[list[Detection]]:
        import torch

        out = []
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            for frame in frames:
                img, scale = self._input(frame)
                with torch.inference_mode():
                    boxes, probs = self._net.detect(img)
                found = []
                h, w = frame.shape[:2]
                for b, p in zip(boxes if boxes is not None else [], probs if probs is not None else []):
                    if p is None or p < self.min_score:
                        continue
                    box = to_frame_box(*b, scale, w, h)
                    if box is not None:
                        found.append(Detection(box, float(p), self.name))
                out.append(found)
        finally:
            torch.set_num_threads(threads)
        return out
