"""The layout of OUT (see rccl.data.prep): where crops, parts, skips and boxes go, the writers (through
rccl.fileio), and the manifest row of one crop."""
from __future__ import annotations

import io
import os
import signal
from pathlib import Path

import numpy as np
from PIL import Image

from rccl.data.compress import QUALITY_QUANTISER
from rccl.data.layouts import VideoRecord
from rccl.fileio import atomic_write


def _no_ext(video: str) -> str:
    return str(Path(video).with_suffix(""))


def crop_relpath(quality: str, video: str, frame: int, fmt: str) -> str:
    return f"crops/{quality}/{_no_ext(video)}/{frame:06d}.{fmt}"


def part_path(out: Path, quality: str, video: str) -> Path:
    return out / "parts" / quality / (video + ".jsonl")


def skip_path(out: Path, quality: str, video: str) -> Path:
    return out / "parts" / quality / (video + ".skip.json")


# Test-only hook (the resume tests): "N:kill" or "N:interrupt" makes this process die by SIGKILL, or
# raise KeyboardInterrupt, halfway through writing its N-th crop (half the bytes in the temporary file).
_DIE_AT_CROP_ENV = "RCCL_TEST_DIE_AT_CROP"
_crops_started = 0


def _maybe_die(f) -> None:
    global _crops_started
    hook = os.environ.get(_DIE_AT_CROP_ENV)
    if not hook:
        return
    _crops_started += 1
    n, how = hook.split(":")
    if _crops_started == int(n):
        f.flush()
        if how == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        raise KeyboardInterrupt


def save_image_atomic(path: Path, array: np.ndarray, fmt: str, jpeg_quality: int = 98) -> None:
    """Write a crop through rccl.fileio.atomic_write: never a half-written crop."""
    img, buf = Image.fromarray(array), io.BytesIO()
    if fmt == "png":
        img.save(buf, format="PNG", compress_level=1)  # lossless either way; level 1 is ~3x faster than 6
    else:
        img.save(buf, format="JPEG", quality=jpeg_quality, subsampling=0)  # 4:4:4: keep the chroma
    data = buf.getvalue()
    with atomic_write(path, "wb") as f:
        f.write(data[: len(data) // 2])
        _maybe_die(f)
        f.write(data[len(data) // 2:])


def manifest_row(cfg, rec: VideoRecord, quality, rel, frame, pair, box, box_source, detector) -> dict:
    if quality == "raw":
        compression = "raw"
    elif rec.ships_qualities:
        compression = "as distributed"
    else:
        compression = f"{cfg.compression}{QUALITY_QUANTISER[quality]}"
    return {"path": rel, "dataset": rec.dataset, "split": rec.split, "quality": quality, "video": rec.video,
            "label": rec.label, "frame": frame, "pair": pair, "source": rec.source, "target": rec.target,
            "identity": rec.identity, "box": [int(v) for v in box],
            "method": rec.method, "detected": box_source not in ("nearest", "truth"), "box_source": box_source,
            "detector": detector or "",
            "crop_size": cfg.crop_size, "compression": compression}
