"""The face boxes of one video's sampled frames: detected (one tracked subject), true (synthetic
trees) or carried from the nearest frame; found once and cached in OUT/boxes/."""
from __future__ import annotations

import json
from pathlib import Path

from rccl.data.faces import FaceCropper, fill_missing_boxes, find_subject
from rccl.data.layouts import VideoRecord
from rccl.data.video import VideoError
from rccl.fileio import write_text
from rccl.data.prep.config import PrepConfig


def truth_boxes(cfg: PrepConfig, rec: VideoRecord) -> list | None:
    """True face boxes written beside a synthetic tree (rccl-synth), or None."""
    path = Path(cfg.root) / "boxes" / Path(rec.video).with_suffix(".json")
    if rec.dataset != "synthetic" or not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))["boxes"]


def boxes_for(cfg: PrepConfig, rec: VideoRecord, cropper: FaceCropper, frames: dict, indices: list[int],
               n_frames: int, det_quality: str, mode: str) -> dict:
    """Boxes of the sampled frames, found once and cached in OUT/boxes/<video>.json."""
    cache = Path(cfg.out) / "boxes" / (rec.video + ".json")
    if cache.is_file():
        cached = json.loads(cache.read_text(encoding="utf-8"))
        if cached.get("frames") == indices:
            return cached
    truth = truth_boxes(cfg, rec)
    if mode == "truth" and truth is None:
        raise VideoError(f"no true boxes for this video (expected {Path(cfg.root) / 'boxes'}/"
                         f"{Path(rec.video).with_suffix('.json')})")
    present = [i for i in indices if i in frames] if mode == "detect" else []
    # the detector is built only when there is something to detect: `--boxes truth` needs no MTCNN
    tracked = dict(zip(present, find_subject([frames[i] for i in present], cropper.detector, present))) if present else {}
    found = [(tracked[i].box, tracked[i].detector) if tracked.get(i) is not None else None for i in indices]
    sources = [f[1] if f is not None else None for f in found]
    if truth is not None:
        for k, i in enumerate(indices):
            if found[k] is None and i < len(truth):
                found[k], sources[k] = (tuple(truth[i]), "truth"), "truth"
    filled, have = fill_missing_boxes(found, positions=indices)
    sources = [s if s is not None else "nearest" for s in sources]
    result = {"frames": indices, "n_frames": n_frames, "detected_on": det_quality,
              "boxes": [list(b[0]) if b is not None else None for b in filled], "box_source": sources,
              "detector": [b[1] if b is not None else None for b in filled]}
    write_text(cache, json.dumps(result))
    return result
