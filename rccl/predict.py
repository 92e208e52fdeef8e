"""Score a user's own files: detect the face, crop it as rccl-prep does, and give a fake probability.

An image gives one crop (its largest face); a video gives one crop per sampled frame (evenly spaced from
the first frame to the last) where a face is found, and its score is the mean of those crops' scores,
as video-level evaluation does. A file that cannot be read, or in which no face is found, is reported
(`on_skip`) and gets fake_probability None; the other files are still scored.
"""
from __future__ import annotations

import io
import json
import logging
import os
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm import tqdm

from rccl.data.faces import FaceCropper, find_subject
from rccl.data.video import VideoError, probe, read_frames
from rccl.errors import RcclError
from rccl.model import input_normalization
from rccl.report import report_names, write_report
from rccl.run import RunDir
from rccl.scoring import input_size, score_crops

VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".ts"}


class Prediction(NamedTuple):
    path: str
    fake_probability: float | None  # None: the file was skipped (unreadable, or no face found)
    n_faces: int                    # face crops scored: 1 for an image, sampled frames with a face for a video


class PredictionError(RcclError, ValueError):
    """Prediction cannot start (a bad run folder, bad settings); a single unreadable file is Skipped instead."""


class Skipped(Exception):
    """A file that cannot be scored; the message says why."""


log = logging.getLogger(__name__)


def _report_skip(path: str, reason: str) -> None:
    log.warning(f"skipped {path}: {reason}")


def sample_indices(n_frames: int, n_samples: int) -> list[int]:
    """`n_samples` frame indices evenly spaced from the first frame to the last (all of them if fewer)."""
    if n_frames <= 0 or n_samples <= 0:
        return []
    return sorted(set(np.linspace(0, n_frames - 1, min(n_samples, n_frames)).round().astype(int).tolist()))


def _image_frame(path: Path) -> tuple[np.ndarray | None, str]:
    """(the image as HxWx3 uint8 RGB with its EXIF rotation applied, "") or (None, why PIL cannot read it)."""
    try:
        with Image.open(path) as im:
            return np.asarray(ImageOps.exif_transpose(im).convert("RGB")), ""
    except UnidentifiedImageError:
        return None, "not a format PIL knows"
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        return None, f"{type(e).__name__}: {e}"


def _video_frames(path: Path, n_samples: int) -> list[np.ndarray]:
    info = probe(path)
    frames = read_frames(path, sample_indices(info.n_frames, n_samples))
    if not frames:
        raise Skipped(f"no frame could be decoded (the stream claims {info.n_frames})")
    return [frames[i] for i in sorted(frames)]


def load_frames(path: str | os.PathLike, n_samples: int = 32) -> list[np.ndarray]:
    """The frames to look for faces in: the image itself, or `n_samples` evenly spaced video frames.
    Raises Skipped with the reason when the file is neither a readable image nor a readable video."""
    path = Path(path)
    if not path.exists():
        raise Skipped("no such file")
    if not path.is_file():
        raise Skipped("not a file")
    if path.stat().st_size == 0:
        raise Skipped("empty file (0 bytes)")
    is_video = path.suffix.lower() in VIDEO_SUFFIXES
    image_error = ""
    if not is_video:
        frame, image_error = _image_frame(path)
        if frame is not None:
            return [frame]
    try:
        return _video_frames(path, n_samples)
    except (VideoError, Skipped) as e:
        video_error = str(e).removeprefix(f"{path}: ")
        if is_video:
            raise Skipped(video_error if video_error.startswith("not a readable video")
                          else f"not a readable video ({video_error})") from None
        raise Skipped(f"not an image or video that can be read (as an image: {image_error}; "
                      f"as a video: {video_error})") from None


class CropStyle(NamedTuple):
    """How the run's training crops were cut and stored, so a user's face is cut the same way."""
    cropper: FaceCropper
    jpeg_quality: int | None  # the crops were stored as JPEG at this quality; None: lossless PNG


def crop_style(manifest: str | os.PathLike | None) -> CropStyle:
    """Read from prep.json beside the run's manifest (rccl-prep's settings: enlarge, crop_size,
    detect_size, crop_format, jpeg_quality); FaceCropper's defaults (rccl-prep's too) where it is absent."""
    settings = {}
    prep = Path(manifest).parent / "prep.json" if manifest else None
    if prep is not None and prep.is_file():
        try:
            settings = json.loads(prep.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise PredictionError(f"{prep}: cannot be read as rccl-prep's settings ({e}); fix or remove it") from None
    kwargs = {k: settings[k] for k in ("enlarge", "crop_size", "detect_size") if settings.get(k) is not None}
    if prep is not None and prep.is_file():  # the run's crops were found with this detector (older OUTs: dlib)
        kwargs["detector"] = settings.get("detector") or "dlib"
    jpeg = int(settings.get("jpeg_quality") or 98) if settings.get("crop_format") == "jpg" else None
    return CropStyle(FaceCropper(**kwargs), jpeg)


def _stored(crop: np.ndarray, jpeg_quality: int | None) -> np.ndarray:
    """The crop as training read it back from disk: through the same JPEG encoding when it was JPEG."""
    if jpeg_quality is None:
        return crop
    buffer = io.BytesIO()
    Image.fromarray(crop).save(buffer, format="JPEG", quality=jpeg_quality, subsampling=0)
    buffer.seek(0)
    return np.asarray(Image.open(buffer).convert("RGB"))


def face_boxes(frames: Sequence[np.ndarray], style: CropStyle | FaceCropper) -> list[tuple | None]:
    """Per frame the subject's tight face box, or None where it is not found: one person per file, followed
    through the frames by box overlap (rccl.data.faces.track), found with the style's detector."""
    cropper = style if isinstance(style, FaceCropper) else style.cropper
    return [d.box if d is not None else None for d in find_subject(list(frames), cropper.detector)]


def face_crops(frames: Sequence[np.ndarray], style: CropStyle | FaceCropper,
               boxes: Sequence[tuple | None] | None = None) -> list[np.ndarray]:
    """The subject's face in each frame where it is found, enlarged, cropped and stored as rccl-prep does."""
    if isinstance(style, FaceCropper):
        style = CropStyle(style, None)
    crops = []
    for frame, box in zip(frames, boxes if boxes is not None else face_boxes(frames, style)):
        if box is not None:
            h, w = frame.shape[:2]
            crops.append(_stored(style.cropper.crop(frame, style.cropper.enlarge_box(box, w, h)), style.jpeg_quality))
    return crops


def predict_files(paths: Sequence[str | os.PathLike], run_dir: str | os.PathLike, *,
                  device: str | torch.device | None = None, frames: int = 32, batch_size: int = 32,
                  cropper: FaceCropper | None = None,
                  on_skip: Callable[[str, str], None] | None = _report_skip,
                  progress: bool = True, face_detector: str | None = None,
                  report_dir: str | os.PathLike | None = None,
                  on_faces: Callable[[str, int, int], None] | None = None) -> list[Prediction]:
    """One Prediction per path, in order. The detector is the run's stage-2 model (RunDir.load_detector);
    faces are cut as the run's training crops were (crop_style), unless a `cropper` is given.
    face_detector: a name of rccl.data.faces.DETECTOR_NAMES instead of the one the run's crops were made with;
    report_dir: write a picture per file there (rccl.report); on_faces(path, frames with a face, frames sampled)."""
    if frames < 1:
        raise PredictionError(f"frames must be at least 1, got {frames}")
    run = RunDir(run_dir)
    if not run.path.is_dir():
        raise PredictionError(f"run folder {run.path}: no such folder (pass the RUN folder given to rccl-train)")
    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, cfg = run.load_detector(map_location=device)
    model.to(device).eval()
    size = input_size(cfg, f"{run.config_path}")
    normalization = input_normalization(cfg["model"]["encoder"])
    style = CropStyle(cropper, None) if cropper is not None else crop_style(run.manifest(cfg))
    if face_detector is not None:
        c = style.cropper
        style = style._replace(cropper=FaceCropper(enlarge=c.enlarge, crop_size=c.crop_size, detect_size=c.detect_size,
                                                   upsample=c.upsample, detector=face_detector))

    results = []
    pictures = report_names(list(paths))  # distinct: two inputs never share a picture
    for k, path in enumerate(tqdm(list(paths), desc="predicting", unit="file", disable=not progress or len(paths) < 2,
                                  leave=False)):
        path = str(path)
        candidates, boxes = [], []
        try:
            candidates = load_frames(path, frames)
            boxes = face_boxes(candidates, style)
            crops = face_crops(candidates, style, boxes)
            if not crops:
                raise Skipped("no face found" + (f" in any of {len(candidates)} sampled frames"
                                                  if len(candidates) > 1 else ""))
        except Skipped as e:
            if on_skip is not None:
                on_skip(path, str(e))
            results.append(Prediction(path, None, 0))
            if report_dir is not None and candidates:
                write_report(report_dir, path, candidates, boxes or [None] * len(candidates),
                             [None] * len(candidates), None, str(e), name=pictures[k])
            continue
        scores = score_crops(model, crops, size, device, normalization=normalization, batch_size=batch_size)
        results.append(Prediction(path, float(scores.mean()), len(crops)))
        if on_faces is not None:
            on_faces(path, len(crops), len(candidates))
        if report_dir is not None:
            per_frame = iter(scores.tolist())
            write_report(report_dir, path, candidates, boxes, [next(per_frame) if b is not None else None for b in boxes],
                         float(scores.mean()), name=pictures[k])
    return results
