"""The frame plan of one video: which file each quality is read from (making c23/c40 copies where the
dataset ships raw only), which file faces are detected on, and the frame readers."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from rccl.data.compress import QUALITY_QUANTISER, compress_image, compress_video
from rccl.data.layouts import QUALITIES, VideoRecord
from rccl.data.video import VideoError, read_frames
from rccl.data.prep.config import PrepConfig, PrepError


def quality_source(cfg: PrepConfig, rec: VideoRecord, quality: str) -> Path:
    """The file to read `quality` from: FF++ ships its own; elsewhere raw is the tree's, the rest are ours
    (an image's: a one-frame MP4 beside the videos' copies, named IMAGE.mp4)."""
    if rec.ships_qualities:
        return rec.quality_path(cfg.root, quality)
    if quality == "raw":
        return Path(cfg.root) / rec.video
    return Path(cfg.out) / "videos" / quality / (rec.video + (".mp4" if rec.is_image else ""))


def ensure_copy(cfg: PrepConfig, rec: VideoRecord, quality: str, threads: int) -> Path:
    path = quality_source(cfg, rec, quality)
    if not rec.ships_qualities and quality != "raw" and not path.is_file() and rec.is_image:
        compress_image(image_reader(Path(cfg.root) / rec.video, [0])[0], path, quantiser=QUALITY_QUANTISER[quality],
                       mode=cfg.compression, preset=cfg.preset, threads=threads)
    elif not rec.ships_qualities and quality != "raw" and not path.is_file():
        compress_video(Path(cfg.root) / rec.video, path, quantiser=QUALITY_QUANTISER[quality],
                       mode=cfg.compression, preset=cfg.preset, threads=threads)
    return path


def frame_reader(decoder: str):
    """rccl.data.video.read_frames, or the DALI drop-in with the same contract (imported only if asked)."""
    if decoder == "pyav":
        return read_frames
    from rccl.data.dali_video import frame_reader as dali_frame_reader

    try:
        return dali_frame_reader(decoder)
    except (RuntimeError, ValueError) as e:
        raise PrepError(str(e)) from None


def image_reader(path, indices, threads: int = 0) -> dict[int, np.ndarray]:
    """An image as frame 0 (EXIF rotation applied), with read_frames' contract."""
    from PIL import ImageOps

    try:
        with Image.open(path) as im:
            return {0: np.asarray(ImageOps.exif_transpose(im).convert("RGB"))}
    except (OSError, ValueError) as e:
        raise VideoError(f"{path}: not a readable image ({type(e).__name__}: {e})") from None


def detection_source(cfg: PrepConfig, rec: VideoRecord) -> tuple[str, Path]:
    """Detect on raw (sharpest); FF++ trees without raw fall back to c23, then c40."""
    if not rec.ships_qualities:
        return "raw", Path(cfg.root) / rec.video
    for q in QUALITIES:
        p = rec.quality_path(cfg.root, q)
        if p.is_file():
            return q, p
    raise VideoError(f"no file for {rec.video} at any quality ({', '.join(QUALITIES)})")
