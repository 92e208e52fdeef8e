"""68 facial landmarks per crop (dlib's shape predictor), in the crop's own pixel coordinates, and the check
that says why a landmark set cannot be used.

The model is dlib's `shape_predictor_68_face_landmarks.dat` (iBUG 300-W points: 0-16 jaw, 17-26 brows,
27-35 nose, 36-47 eyes, 48-67 mouth). Nothing is downloaded: `weights` is a path to that file or, by
default, the copy inside the `face_recognition_models` package (an sdist on PyPI, ~100 MB). The file is
found through the package's folder, not its __init__ (which needs pkg_resources, gone from setuptools >= 81).

The predictor runs on the crop itself, given the tight face box mapped into the crop: the landmarks are then
in crop pixels by construction (what self-blending needs), and a manifest made earlier can be given
landmarks from its crops alone.
"""
from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Sequence

import numpy as np

from rccl.errors import RcclError

N_LANDMARKS = 68
MODEL_FILE = "shape_predictor_68_face_landmarks.dat"
# A usable set's convex hull covers at least this share of the crop (a 1.3x-enlarged crop's face hull is
# ~35-45%; a set collapsed onto a few pixels is a failed fit, not a small face: the crop is the face).
MIN_HULL_SHARE = 0.05
# and at most this share of its points lies outside the crop (a fit that left the face)
MAX_OUTSIDE_SHARE = 0.25


class LandmarkError(RcclError, RuntimeError):
    """The landmark model cannot be found or loaded; the message says what to install or pass."""


def default_weights() -> Path:
    """shape_predictor_68_face_landmarks.dat inside the installed face_recognition_models package."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise LandmarkError("the 68-point landmark model ships in the face_recognition_models package: "
                            "`pip install face_recognition_models` (an sdist, ~100 MB), or pass the path of "
                            f"{MODEL_FILE}")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / MODEL_FILE
    if not path.is_file():
        raise LandmarkError(f"face_recognition_models is installed but has no {path}; reinstall it or pass the "
                            f"path of {MODEL_FILE}")
    return path


@functools.lru_cache(maxsize=2)
def _loaded_model(path: str):
    """One loaded model per file and process: the 100 MB file takes ~1 s to read, and rccl-prep's workers
    make a predictor per video."""
    import dlib

    try:
        return dlib.shape_predictor(path)
    except RuntimeError as e:
        raise LandmarkError(f"landmark model {path}: dlib cannot read it ({e})") from None


class LandmarkPredictor:
    """dlib's 68-point shape predictor, loaded on first use (a predictor is cheap to pickle to a worker)."""

    def __init__(self, weights: str | None = None):
        self.weights = weights
        self._predictor = None

    def _load(self):
        if self._predictor is None:
            path = Path(self.weights) if self.weights else default_weights()
            if not path.is_file():
                raise LandmarkError(f"landmark model {path}: no such file ({MODEL_FILE})")
            self._predictor = _loaded_model(str(path.resolve()))
        return self._predictor

    def __getstate__(self):
        return {"weights": self.weights, "_predictor": None}

    def predict(self, image: np.ndarray, box: Sequence[float]) -> np.ndarray:
        """(68, 2) float32 (x, y) in `image`'s pixels for the face in `box` = [x0, y0, x1, y1] (the tight
        face box, as a detector gives it). `image`: uint8 (H, W, 3) RGB or (H, W) grey."""
        import dlib

        x0, y0, x1, y1 = (int(round(v)) for v in box)
        shape = self._load()(np.ascontiguousarray(image), dlib.rectangle(x0, y0, x1 - 1, y1 - 1))
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)


def box_in_crop(tight: Sequence[float], crop_box: Sequence[float], crop_size: int) -> list[float]:
    """The tight face box (frame pixels) in the pixels of the crop cut from `crop_box` (frame pixels; the
    enlarged box) and resized to crop_size x crop_size."""
    cx0, cy0, cx1, cy1 = (float(v) for v in crop_box)
    sx, sy = crop_size / (cx1 - cx0), crop_size / (cy1 - cy0)
    x0, y0, x1, y1 = (float(v) for v in tight)
    return [(x0 - cx0) * sx, (y0 - cy0) * sy, (x1 - cx0) * sx, (y1 - cy0) * sy]


def _hull_area(points: np.ndarray) -> float:
    """Area of the convex hull of (N, 2) points (Andrew's monotone chain, then the shoelace formula)."""
    pts = sorted(set(map(tuple, points.tolist())))
    if len(pts) < 3:
        return 0.0

    def half(seq):
        out = []
        for p in seq:
            while len(out) >= 2 and ((out[-1][0] - out[-2][0]) * (p[1] - out[-2][1])
                                     - (out[-1][1] - out[-2][1]) * (p[0] - out[-2][0])) <= 0:
                out.pop()
            out.append(p)
        return out

    hull = np.array(half(pts)[:-1] + half(pts[::-1])[:-1])
    x, y = hull[:, 0], hull[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


def landmark_problem(landmarks, width: int | None, height: int | None) -> str | None:
    """Why `landmarks` (a manifest row's value) cannot shape a blending mask on a width x height crop, or
    None when it can (width None: the crop's size is unknown, its extent is not checked). The reason is one
    line, meant to follow the crop's name."""
    if landmarks is None:
        return "no landmarks"
    try:
        pts = np.asarray(landmarks, dtype=np.float64)
    except (TypeError, ValueError):
        return f"landmarks are not a list of numbers ({type(landmarks).__name__})"
    if pts.shape != (N_LANDMARKS, 2):
        return f"landmarks have shape {list(pts.shape)}, expected [{N_LANDMARKS}, 2] (x, y per point)"
    if not np.isfinite(pts).all():
        return "landmarks hold a non-finite value"
    if width is None or height is None:
        return None
    outside = ((pts[:, 0] < 0) | (pts[:, 0] > width) | (pts[:, 1] < 0) | (pts[:, 1] > height)).mean()
    if outside > MAX_OUTSIDE_SHARE:
        return f"{outside:.0%} of the landmarks lie outside the {width}x{height} crop (a failed fit)"
    share = _hull_area(pts) / (width * height)
    if share < MIN_HULL_SHARE:
        return f"the landmarks' hull covers {share:.1%} of the crop, under {MIN_HULL_SHARE:.0%} (a failed fit)"
    return None


def crop_landmarks(predictor: LandmarkPredictor, crop: np.ndarray, tight_box_in_crop: Sequence[float]
                   ) -> tuple[list[list[float]] | None, str]:
    """(landmarks rounded to 0.1 px, "") for a usable fit on `crop`, else (None, the reason)."""
    h, w = crop.shape[:2]
    pts = predictor.predict(crop, tight_box_in_crop)
    problem = landmark_problem(pts, w, h)
    if problem is not None:
        return None, problem
    return np.round(pts, 1).tolist(), ""
