"""Compressed copies of a video (the paper's c23 / c40) with libx264 through PyAV.

PyAV's wheels bundle FFmpeg with libx264, so no system ffmpeg is needed. Two rate controls:
  - "qp":  constant quantiser, the paper's `ffmpeg -qp 23` / `-qp 40`. I, P and B frames get the same QP
           (x264 would otherwise offset P and B frames by its ipratio/pbratio).
  - "crf": constant rate factor, what FaceForensics++ used to make its own c23 / c40.
Every frame of the source is encoded once, in order, so frame indices match between raw and compressed
copies (the crops reuse the boxes detected on raw). `h264_settings` reads back what an H.264 file was
really encoded with, from the x264 SEI message in its first frames.
"""
from __future__ import annotations

import contextlib
import os
import re
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from rccl.data.video import VideoError, _open
from rccl.fileio import atomic_write

QUALITY_QUANTISER = {"c23": 23, "c40": 40}


class H264Writer:
    """Write frames into an MP4 (H.264, yuv420p, constant frame rate) at a fixed QP or CRF, atomically
    through rccl.fileio.atomic_write: frames go to a hidden temporary file beside `dst`, put in place by
    close(); a failure leaves no `dst` and no temporary file (a kill, at most a hidden .tmp file). Use as a
    context manager."""

    def __init__(self, dst: str | os.PathLike, *, width: int, height: int, rate=Fraction(25), quantiser: int = 23,
                 mode: str = "qp", preset: str = "medium", threads: int = 0):
        if mode not in ("qp", "crf"):
            raise ValueError(f"compression mode must be 'qp' or 'crf', got {mode!r}")
        if not 0 <= int(quantiser) <= 51:
            raise ValueError(f"H.264 quantiser must be in 0..51, got {quantiser}")
        if width % 2 or height % 2:
            raise ValueError(f"yuv420p H.264 needs an even width and height, got {width}x{height}")
        self.dst = Path(dst)
        # the atomic writer's file stays open across write() calls: the stack closes it in close() / abort()
        self._file_stack = contextlib.ExitStack()
        self._file = self._file_stack.enter_context(atomic_write(self.dst, "wb"))
        rate = Fraction(rate).limit_denominator(1_000_000)
        self._out = av.open(self._file, "w", format="mp4")
        self._stream = self._out.add_stream("libx264", rate=rate)
        self._stream.width, self._stream.height = width, height
        self._stream.pix_fmt = "yuv420p"
        self._time_base = Fraction(1, 1) / rate
        self._stream.codec_context.time_base = self._time_base
        self._stream.codec_context.thread_count = threads
        opts = {"preset": preset, mode: str(int(quantiser))}
        if mode == "qp":  # same QP for I, P and B frames, as `ffmpeg -qp` means it
            opts["x264-params"] = "ipratio=1.0:pbratio=1.0"
        self._stream.options = opts
        self.n_frames = 0

    def write(self, frame) -> None:
        """Append a frame: an HxWx3 uint8 RGB array or an av.VideoFrame."""
        if isinstance(frame, np.ndarray):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        if frame.format.name != "yuv420p":
            frame = frame.reformat(format="yuv420p")
        frame.pts = self.n_frames  # constant frame rate in presentation order: index n stays frame n
        frame.time_base = self._time_base
        for packet in self._stream.encode(frame):
            self._out.mux(packet)
        self.n_frames += 1

    def close(self) -> Path:
        try:
            if self.n_frames == 0:
                raise VideoError(f"{self.dst}: no frames were written")
            for packet in self._stream.encode(None):
                self._out.mux(packet)
            self._out.close()
            self._file_stack.close()  # fsync, the umask's mode, os.replace onto dst
        except BaseException:
            self.abort()
            raise
        return self.dst

    def abort(self) -> None:
        try:
            self._out.close()
        except Exception:
            pass
        # leaving the atomic writer with an exception removes its temporary file and keeps dst as it was
        self._file_stack.__exit__(VideoError, VideoError(f"{self.dst}: writing aborted"), None)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()


def compress_video(src: str | os.PathLike, dst: str | os.PathLike, *, quantiser: int, mode: str = "qp",
                   preset: str = "medium", threads: int = 0) -> Path:
    """Encode every frame of `src` into `dst` (MP4, H.264, yuv420p) at a fixed QP or CRF, atomically.
    Returns `dst`."""
    source = _open(src)
    try:
        in_stream = source.streams.video[0]
        in_stream.thread_type = "AUTO"
        cc = in_stream.codec_context
        with H264Writer(dst, width=cc.width - cc.width % 2, height=cc.height - cc.height % 2,
                        rate=in_stream.average_rate or Fraction(25), quantiser=quantiser, mode=mode,
                        preset=preset, threads=threads) as writer:
            try:
                for frame in source.decode(in_stream):
                    if frame.width % 2 or frame.height % 2:
                        frame = frame.reformat(width=writer._stream.width, height=writer._stream.height)
                    writer.write(frame)
            except av.FFmpegError as e:
                raise VideoError(f"{src}: decoding failed after {writer.n_frames} frames while compressing "
                                 f"({e})") from None
    finally:
        source.close()
    return Path(dst)


def compress_image(frame: np.ndarray, dst: str | os.PathLike, *, quantiser: int, mode: str = "qp",
                   preset: str = "medium", threads: int = 0) -> Path:
    """A still image (H x W x 3 uint8 RGB) as a one-frame MP4 (H.264, yuv420p) at a fixed QP or CRF,
    atomically: the image's c23 / c40 copy, made by the same encoder as the videos'. An odd side is padded
    by repeating its last row or column (yuv420p needs even sides); the reader cuts it off again."""
    h, w = frame.shape[:2]
    frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    with H264Writer(dst, width=frame.shape[1], height=frame.shape[0], quantiser=quantiser, mode=mode,
                    preset=preset, threads=threads) as writer:
        writer.write(frame)
    return Path(dst)


_SEI_RE = re.compile(rb"x264 - core \d+[^\x00]*")


def h264_settings(path: str | os.PathLike) -> dict:
    """What an H.264 file was encoded with: {"codec": "h264", "encoder": "x264 - core ...", "rc": "cqp" |
    "crf" | ..., "qp": int | None, "crf": float | None, "options": {name: value}}. The x264 settings come
    from the SEI message x264 writes into the first frame; a file not made by x264 has "encoder": None."""
    container = _open(path)
    try:
        stream = container.streams.video[0]
        codec = stream.codec_context.name
        sei = None
        for k, packet in enumerate(container.demux(stream)):
            m = _SEI_RE.search(bytes(packet))
            if m:
                sei = m.group(0).decode("ascii", "replace")
                break
            if k >= 4:
                break
    finally:
        container.close()
    info = {"codec": codec, "encoder": None, "rc": None, "qp": None, "crf": None, "options": {}}
    if sei is None:
        return info
    info["encoder"] = sei.split(" - ")[0] + " - " + sei.split(" - ")[1]
    opts_text = sei.split("options:", 1)[1] if "options:" in sei else ""
    opts = dict(tok.split("=", 1) for tok in opts_text.split() if "=" in tok)
    info["options"] = opts
    info["rc"] = opts.get("rc")
    if info["rc"] == "cqp" and "qp" in opts:
        info["qp"] = int(opts["qp"])
    if info["rc"] == "crf" and "crf" in opts:
        info["crf"] = float(opts["crf"])
    return info
