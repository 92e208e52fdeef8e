"""Reading frames out of video files with PyAV, and choosing which frames to read.

`read_frames(path, indices)` is the one seam a GPU decoder (DALI/NVDEC) plugs into: it takes frame indices
in presentation order and gives RGB uint8 arrays. Everything else here is bookkeeping around it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import av

from rccl.errors import RcclError


class VideoError(RcclError, RuntimeError):
    """A video that cannot be used (unreadable, empty, no video stream, truncated); the message names the
    file and says what was wrong."""


@dataclass(frozen=True)
class VideoInfo:
    n_frames: int
    width: int
    height: int
    fps: float
    codec: str


def _open(path: str | os.PathLike):
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise VideoError(f"{path}: empty file (0 bytes)")
    try:
        container = av.open(str(path))
    except (av.FFmpegError, UnicodeDecodeError, ValueError) as e:
        raise VideoError(f"{path}: not a readable video ({type(e).__name__}: {e})") from None
    if not container.streams.video:
        container.close()
        raise VideoError(f"{path}: the file has no video stream")
    return container


def probe(path: str | os.PathLike) -> VideoInfo:
    """Frame count, size, frame rate and codec. The count comes from demuxing every packet (no decoding),
    because the header's count is missing in some containers and wrong in truncated files."""
    container = _open(path)
    try:
        stream = container.streams.video[0]
        n = 0
        try:
            for packet in container.demux(stream):
                if packet.size:
                    n += 1
        except av.FFmpegError as e:
            raise VideoError(f"{path}: broken while reading packets after {n} frames ({e})") from None
        if n == 0:
            raise VideoError(f"{path}: the video stream has no frames")
        fps = float(stream.average_rate) if stream.average_rate else 0.0
        return VideoInfo(n, stream.codec_context.width, stream.codec_context.height, fps, stream.codec_context.name)
    finally:
        container.close()


def pair_indices(n_frames: int, n_pairs: int) -> list[tuple[int, int]]:
    """`n_pairs` pairs of consecutive frames (i, i + 1), evenly spaced from the first frame to the last.
    Fewer pairs when the video is too short to hold that many without overlap."""
    if n_frames < 2 or n_pairs < 1:
        return []
    n_pairs = min(n_pairs, n_frames // 2)
    starts = np.linspace(0, n_frames - 2, n_pairs).round().astype(int)
    out, last = [], -2
    for s in starts:
        s = max(int(s), last + 2)  # rounding can bring two starts together; keep pairs disjoint
        if s + 1 >= n_frames:
            break
        out.append((s, s + 1))
        last = s
    return out


def read_frames(path: str | os.PathLike, indices, *, threads: int = 0) -> dict[int, np.ndarray]:
    """Frames at `indices` (presentation order, 0-based) as HxWx3 uint8 RGB arrays, keyed by index.

    Decodes from the start and stops after the last wanted frame, converting only the wanted ones to RGB
    (the conversion, not the decoding, is most of the cost). Seeking was measured slower or equal on short
    clips (bench/prep_speed.py) and is fragile with B-frames and edit lists, so it is not used.
    A truncated or corrupt stream gives the frames decoded before the damage: the caller sees which indices
    are missing. `threads` = 0 lets FFmpeg choose; pass 1 inside a process pool.
    """
    wanted = sorted(set(int(i) for i in indices))
    if not wanted:
        return {}
    if wanted[0] < 0:
        raise ValueError(f"{path}: negative frame index {wanted[0]}")
    last = wanted[-1]
    want = set(wanted)
    out: dict[int, np.ndarray] = {}
    container = _open(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = threads
        i = -1
        try:
            for frame in container.decode(stream):
                i += 1
                if i in want:
                    out[i] = frame.to_ndarray(format="rgb24")
                if i >= last:
                    break
        except av.FFmpegError:
            pass  # damage mid-stream: keep what decoded; the caller reports the missing frames
    finally:
        container.close()
    return out
