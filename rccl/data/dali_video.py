"""Reading video frames with DALI: NVDEC on the GPU, a drop-in for rccl.data.video.read_frames (PyAV).

`read_frames(path, indices)` has PyAV's contract: frames at `indices` (presentation order, 0-based) as
HxWx3 uint8 RGB arrays, keyed by index; indices past the end are absent; a negative index is an error.
On a GPU it decodes with NVDEC (`fn.decoders.video(device="mixed")`: H.264, HEVC, AV1, MPEG-4, VP8/9).

On the CPU, DALI's pip wheel decodes only VP8, VP9 and MJPEG: its FFmpeg is built without H.264/HEVC
("Codec 27 (h264) is not supported by the CPU variant of this operator"). For those codecs on the CPU
this module says so (DaliUnavailable) and the caller decodes with PyAV; `frame_reader()` makes that choice.

A video DALI cannot decode (truncated, corrupt) is handed to PyAV, which returns the frames before the
damage, so the caller's report of missing frames is the same on both paths; a warning names the file.
"""
from __future__ import annotations

import functools
import os
import warnings
from typing import Callable

import numpy as np

from rccl.data import video as pyav_video
from rccl.errors import RcclError

try:
    from nvidia.dali import fn, pipeline_def, types
except ImportError as e:
    _DALI_IMPORT_ERROR: ImportError | None = e
else:
    _DALI_IMPORT_ERROR = None

CPU_CODECS = frozenset({"vp8", "vp9", "mjpeg"})  # what the wheel's CPU decoder has (no H.264/HEVC)


class DaliUnavailable(RcclError, RuntimeError):
    """DALI is not installed, cannot run here, or cannot decode this video here; the message says why and
    what to use instead (PyAV, the torch loader)."""


def gpu_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


class DaliVideoReader:
    """One DALI pipeline (batch of one video) reused across calls; device_id None runs on the CPU."""

    def __init__(self, device_id: int | None = 0, num_threads: int = 2):
        if _DALI_IMPORT_ERROR is not None:
            raise DaliUnavailable(f"NVIDIA DALI is not importable ({_DALI_IMPORT_ERROR}); install it with "
                                  "`pip install -e .[dali]`, or decode with PyAV (rccl.data.video.read_frames)")
        self.device_id = device_id
        self.num_threads = max(1, int(num_threads))
        self._pipe = None

    def _build(self):
        decode_device = "cpu" if self.device_id is None else "mixed"

        # Synchronous (not pipelined): each call feeds one video and runs once.
        @pipeline_def(exec_pipelined=False, exec_async=False, prefetch_queue_depth=1)
        def pipeline():
            encoded = fn.external_source(name="encoded", dtype=types.UINT8)
            frames = fn.external_source(name="frames", dtype=types.INT32)
            return fn.decoders.video(encoded, device=decode_device, frames=frames)

        pipe = pipeline(batch_size=1, num_threads=self.num_threads, device_id=self.device_id)
        pipe.build()
        return pipe

    def decode(self, path: str | os.PathLike, frames: list[int]) -> np.ndarray:
        """(F, H, W, 3) uint8 RGB for the given in-range frame indices. Raises RuntimeError from DALI."""
        if self._pipe is None:
            self._pipe = self._build()
        try:
            self._pipe.feed_input("encoded", [np.fromfile(path, dtype=np.uint8)])
            self._pipe.feed_input("frames", [np.asarray(frames, dtype=np.int32)])
            (out,) = self._pipe.run()
        except RuntimeError:
            self._pipe = None  # DALI invalidates a pipeline after an error: build afresh next time
            raise
        if self.device_id is not None:
            out = out.as_cpu()
        return np.array(out[0])


def dali_reason(error: Exception) -> str:
    """The line of a DALI pipeline error that says what went wrong (DALI wraps it in a traceback)."""
    lines = [line.strip() for line in str(error).splitlines()]
    if "encountered:" in lines:
        after = [line for line in lines[lines.index("encountered:") + 1:] if line]
        if after:
            return after[0]
    return next((line for line in lines if line), repr(error))


_readers: dict[int | None, DaliVideoReader] = {}


def read_frames(path: str | os.PathLike, indices, *, threads: int = 0, device_id: int | None = 0,
                n_frames: int | None = None) -> dict[int, np.ndarray]:
    """rccl.data.video.read_frames through DALI (see the module's docstring). `n_frames` saves the probe
    when the caller knows the count; `threads` sizes DALI's CPU thread pool (0: 2)."""
    wanted = sorted(set(int(i) for i in indices))
    if not wanted:
        return {}
    if wanted[0] < 0:
        raise ValueError(f"{path}: negative frame index {wanted[0]}")
    info = None
    if n_frames is None or device_id is None:
        info = pyav_video.probe(path)  # VideoError for a missing, empty or unreadable file, as PyAV's path
        n_frames = info.n_frames
    if device_id is None and info.codec not in CPU_CODECS:
        raise DaliUnavailable(
            f"{path}: DALI's CPU video decoder has no {info.codec} (the pip wheel's FFmpeg decodes only "
            f"{', '.join(sorted(CPU_CODECS))} on the CPU); decode with PyAV (rccl.data.video.read_frames), "
            "or use DALI on a GPU (NVDEC)")
    # DALI pads indices past the end with blank frames; PyAV's contract leaves them out.
    wanted = [i for i in wanted if i < n_frames]
    if not wanted:
        return {}
    reader = _readers.get(device_id)
    if reader is None:
        reader = _readers[device_id] = DaliVideoReader(device_id, threads or 2)
    try:
        frames = reader.decode(path, wanted)
    except RuntimeError as e:
        warnings.warn(f"{path}: DALI could not decode it ({dali_reason(e)}); reading it with PyAV instead",
                      stacklevel=2)
        return pyav_video.read_frames(path, wanted, threads=threads)
    if len(frames) != len(wanted):
        raise RuntimeError(f"{path}: DALI returned {len(frames)} frames for {len(wanted)} requested")
    return {i: frames[k] for k, i in enumerate(wanted)}


def frame_reader(decoder: str = "auto") -> Callable[..., dict[int, np.ndarray]]:
    """The `read_frames` to use: "pyav", "dali" (NVDEC on the current GPU; an error without one) or "auto"
    (DALI when it is importable and a GPU is present, else PyAV)."""
    if decoder not in ("auto", "pyav", "dali"):
        raise ValueError(f"video decoder must be auto, pyav or dali, got {decoder!r}")
    if decoder == "pyav" or (decoder == "auto" and (_DALI_IMPORT_ERROR is not None or not gpu_available())):
        return pyav_video.read_frames
    if _DALI_IMPORT_ERROR is not None:
        raise DaliUnavailable(f"video decoder dali: NVIDIA DALI is not importable ({_DALI_IMPORT_ERROR}); "
                              "install it with `pip install -e .[dali]` or use the pyav decoder")
    if not gpu_available():
        raise DaliUnavailable("video decoder dali: no GPU here, and DALI's CPU decoder has no H.264; use pyav")
    import torch

    return functools.partial(read_frames, device_id=torch.cuda.current_device())  # picklable, for process pools
