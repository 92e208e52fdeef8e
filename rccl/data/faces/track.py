"""One person per video: pick the subject once, follow it through the sampled frames by box overlap.

Taking the largest face of each frame jumps between people when two share the frame. Instead the
subject is chosen once, over the first frames with detections, as the face that is both large and near
the frame's centre; from there each later (and earlier) sampled frame takes the detection that overlaps
the subject's last box most (IoU >= MIN_IOU). A frame where none does is "lost" and is filled by
fill_missing_boxes with the nearest frame's box of the same track. When the subject stays lost in
REACQUIRE consecutive sampled frames that do have faces, the video has cut to another shot (or the
subject has left): the subject is picked again from there on, as at the start.
"""
from __future__ import annotations

from typing import Sequence

from rccl.data.faces.base import Box, Detection

SUBJECT_FRAMES = 4  # the subject is chosen over this many first frames that have a detection
MIN_IOU = 0.1       # sampled frames lie ~0.3 s apart: a moving head still overlaps its last box
REACQUIRE = 2       # lost in this many consecutive frames with faces: a new shot, pick the subject again


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _prominence(box: Box, width: int, height: int) -> float:
    """Area as a fraction of the frame, discounted by the distance of the centre from the frame's centre."""
    cx, cy = (box[0] + box[2]) / 2 / width - 0.5, (box[1] + box[3]) / 2 / height - 0.5
    area = (box[2] - box[0]) * (box[3] - box[1]) / (width * height)
    return area * max(0.05, 1.0 - 2.0 * (cx * cx + cy * cy) ** 0.5)


def pick_subject(detections: Sequence[Sequence[Detection]], sizes: Sequence[tuple[int, int]]) -> tuple[int, Box] | None:
    """(frame position, box) of the subject: over the first SUBJECT_FRAMES frames with a detection, the
    face whose track (the same face by IoU in those frames) is most prominent in sum; None if no face."""
    first = [k for k, d in enumerate(detections) if d][:SUBJECT_FRAMES]
    if not first:
        return None
    best, best_value = None, -1.0
    for k in first:
        for d in detections[k]:
            value = 0.0
            for j in first:  # the same face in the other early frames adds to its weight
                w, h = sizes[j]
                match = max(detections[j], key=lambda e: iou(e.box, d.box))
                if iou(match.box, d.box) >= MIN_IOU:
                    value += _prominence(match.box, w, h)
            if value > best_value:
                best, best_value = (k, d.box), value
    return best


def track_subject(detections: Sequence[Sequence[Detection]], sizes: Sequence[tuple[int, int]]
                  ) -> list[Detection | None]:
    """Per frame the subject's Detection, or None where it is lost (or there is no face at all)."""
    out: list[Detection | None] = [None] * len(detections)
    start = pick_subject(detections, sizes)
    if start is None:
        return out
    k0, box0 = start
    last, misses, k = box0, [], k0
    while k < len(detections):  # forward, re-picking the subject after a cut
        if detections[k]:
            match = max(detections[k], key=lambda e: iou(e.box, last))
            if iou(match.box, last) >= MIN_IOU:
                out[k], last, misses = match, match.box, []
            else:
                misses.append(k)
                if len(misses) >= REACQUIRE:
                    first = misses[0]
                    k_new, last = pick_subject(detections[first:], sizes[first:])
                    k, misses = first + k_new, []
                    continue
        k += 1
    last = box0
    for k in range(k0 - 1, -1, -1):  # backward over the few frames before the subject was picked
        if detections[k]:
            match = max(detections[k], key=lambda e: iou(e.box, last))
            if iou(match.box, last) >= MIN_IOU:
                out[k], last = match, match.box
    return out


def find_subject(frames: Sequence, detector, positions: Sequence[int] | None = None) -> list[Detection | None]:
    """Detect faces in `frames` (RGB arrays in time order; `positions`: their indices in the video, when
    known) with `detector` and follow the subject: per frame its Detection, or None where it is lost."""
    detections = detector.detect_many(frames, positions)
    return track_subject(detections, [(f.shape[1], f.shape[0]) for f in frames])
