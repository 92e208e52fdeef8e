"""MTCNN (facenet-pytorch; its wheel ships the P/R/O-net weights, nothing is downloaded).

Finds small and turned faces that dlib's HOG misses. Two things make it work on real rooms (DFDC):
frames larger than 540 pixels on their shorter side are brought down to 540 (a face of 40 px at 1080p
is still 20 px, MTCNN's smallest), as DFDC's winning solution scaled by resolution; and the frame's
contrast is stretched (1 % of pixels clipped at each end) before detection, which brings back faces in
dark rooms (the detector still returns boxes on the original frame). A face needs probability
>= min_score. Runs on the CPU with one thread (prep runs one process per core).

Speed (bench/results/data.md, "The default detector made faster"): the R- and O-nets run on
channels-last tensors (their max-pooling on contiguous NCHW batches of a few hundred candidates costs as
much as their convolutions on this CPU; channels-last halves the two stages, boxes unchanged), and `detect_near`
searches only windows around faces known from a neighbouring frame (a small pyramid instead of the
whole frame's), for the cascade's pair partners.
Install: `pip install --no-deps facenet-pytorch` (its metadata pins old torch versions) plus `requests`.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import numpy as np
from PIL import Image, ImageOps

from rccl.data.faces.base import Box, Detection, DetectorError, FaceDetector, to_frame_box

MTCNN_SHORT_SIDE = 540
MTCNN_MIN_FACE = 20
MTCNN_MIN_SCORE = 0.9
# detect_near: each window is NEAR_WINDOW times the known face's side, centred on it, and looks for faces
# from about NEAR_MIN_FACE times that side up (a head one frame later has moved and turned a little)
NEAR_WINDOW = 2.0
NEAR_MIN_FACE = 0.5
NEAR_MIN_IOU = 0.3  # a face found there is the known face one frame later (not a neighbour, not a half face)
PYRAMID_FACTOR = 0.709  # facenet-pytorch's MTCNN default scale step


def near_min_face(side: float) -> float:
    """The smallest face detect_near looks for around a known face of `side` pixels: about
    NEAR_MIN_FACE * side, but on the whole-frame pyramid's own levels (MTCNN_MIN_FACE / factor^j), so the
    window's pyramid is part of the frame's and finds the same boxes; never below MTCNN_MIN_FACE."""
    j = max(0, int(np.floor(np.log(side * NEAR_MIN_FACE / MTCNN_MIN_FACE) / np.log(1 / PYRAMID_FACTOR))))
    return MTCNN_MIN_FACE / PYRAMID_FACTOR ** j


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op threads set to `n` inside the block, restored after it. A prep worker is one
    process per core: the MTCNN's small convolutions on two threads per process only oversubscribe."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _channels_last(net):
    """`net` (an nn.Module) computing on channels-last tensors: same outputs, faster pooling on the CPU."""
    import torch

    class ChannelsLast(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner.to(memory_format=torch.channels_last)

        def forward(self, x):
            return self.inner(x.contiguous(memory_format=torch.channels_last))

    return ChannelsLast(net)


def near_windows(boxes: Sequence[Box], width: int, height: int) -> list[tuple[Box, float]]:
    """Per known face box, the window (x0, y0, x1, y1, clipped to the frame) that detect_near searches and
    the smallest face it looks for there, in the same pixels; windows of faces already covered are dropped."""
    out: list[tuple[Box, float]] = []
    for x0, y0, x1, y1 in boxes:
        side = max(x1 - x0, y1 - y0)
        cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, side * NEAR_WINDOW / 2
        win = (max(0, int(cx - half)), max(0, int(cy - half)), min(width, int(cx + half) + 1),
               min(height, int(cy + half) + 1))
        if win[2] - win[0] < 2 or win[3] - win[1] < 2:
            continue
        if any(w[0] <= x0 and w[1] <= y0 and w[2] >= x1 and w[3] >= y1 for w, _ in out):
            continue  # this face lies inside a window already searched
        out.append((win, near_min_face(side)))
    return out


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
        net = MTCNN(keep_all=True, device="cpu", min_face_size=MTCNN_MIN_FACE, post_process=False).eval()
        # P-net runs on whole frames (one image per pyramid level): channels-last made it slower there
        self._pnet, self._rnet, self._onet = net.pnet, _channels_last(net.rnet), _channels_last(net.onet)
        self._thresholds, self._factor = net.thresholds, PYRAMID_FACTOR

    @staticmethod
    def _input(frame: np.ndarray) -> tuple[np.ndarray, float]:
        h, w = frame.shape[:2]
        scale = min(1.0, MTCNN_SHORT_SIDE / min(h, w))
        img = Image.fromarray(frame)
        if scale < 1.0:
            img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR)
        return np.asarray(ImageOps.autocontrast(img, cutoff=1)), scale

    def _run(self, img: np.ndarray, min_face: float) -> list[tuple[list[float], float]]:
        """MTCNN's three stages on one prepared image: (box in img's pixels, probability) per face."""
        import torch
        from facenet_pytorch.models.utils.detect_face import detect_face

        if min(img.shape[:2]) < min_face:
            return []  # no pyramid level fits (facenet-pytorch would fail on the empty pyramid)
        with torch.inference_mode():
            boxes, _ = detect_face(img, min_face, self._pnet, self._rnet, self._onet, self._thresholds,
                                   self._factor, torch.device("cpu"))
        faces = [(list(map(float, b[:4])), float(b[4])) for b in boxes[0] if b[4] >= self.min_score]
        # largest first, as facenet-pytorch's MTCNN.detect orders them
        return sorted(faces, key=lambda f: -(f[0][2] - f[0][0]) * (f[0][3] - f[0][1]))

    def detect(self, frame: np.ndarray) -> list[Detection]:
        return self.detect_many([frame])[0]

    def detect_many(self, frames: Sequence[np.ndarray], positions: Sequence[int] | None = None
                    ) -> list[list[Detection]]:
        out = []
        with torch_threads(1):
            for frame in frames:
                img, scale = self._input(frame)
                h, w = frame.shape[:2]
                found = [(to_frame_box(*b, scale, w, h), p) for b, p in self._run(img, MTCNN_MIN_FACE)]
                out.append([Detection(b, p, self.name) for b, p in found if b is not None])
        return out

    def detect_near(self, frame: np.ndarray, boxes: Sequence[Box]) -> list[Detection]:
        """The faces of `boxes` (found in a neighbouring frame, in this frame's pixels) in `frame`: MTCNN on a
        window around each alone, at a pyramid bounded by the known face's size; a face counts when it
        overlaps a known box by IoU >= NEAR_MIN_IOU (the same face, moved a little). Other faces of the
        frame are not looked for. A face found in two windows is kept once (the more probable box)."""
        from rccl.data.faces.track import iou

        img, scale = self._input(frame)
        h, w = frame.shape[:2]
        known = [tuple(v * scale for v in b) for b in boxes]
        found: list[tuple[float, Box]] = []
        with torch_threads(1):
            for (x0, y0, x1, y1), min_face in near_windows(known, img.shape[1], img.shape[0]):
                for (bx0, by0, bx1, by1), p in self._run(np.ascontiguousarray(img[y0:y1, x0:x1]), min_face):
                    b = (bx0 + x0, by0 + y0, bx1 + x0, by1 + y0)
                    if any(iou(b, k) >= NEAR_MIN_IOU for k in known):
                        found.append((p, b))
        kept: list[tuple[float, Box]] = []
        for p, b in sorted(found, key=lambda f: -f[0]):
            if all(iou(b, k) < 0.5 for _, k in kept):
                kept.append((p, b))
        out = [(to_frame_box(*b, scale, w, h), p) for p, b in kept]
        return [Detection(b, p, self.name) for b, p in out if b is not None]
