"""Import DeepfakeBench's preprocessed data (its dataset JSON + frame folders) into a manifest, no re-cropping.

DeepfakeBench (SCLBD/DeepfakeBench, preprocessing/rearrange.py) writes one JSON per dataset:
    {DATASET: {LABEL: {SPLIT: {VIDEO: {"label": LABEL, "frames": [paths]}}}}}          (Celeb-DF, DFDC, ...)
    {DATASET: {LABEL: {SPLIT: {COMPRESSION: {VIDEO: {"label": ..., "frames": [...]}}}}}}  (FF++, DFD)
LABEL names the class ("FF-real", "FF-DF", "CelebDFv1_real", "DFDC_Fake", ...): one whose name contains
"real" (any case) is natural, every other is fake. Its frames are already face crops (256x256 PNG by
default), so each becomes one manifest row pointing at the file where it lies; the box is the whole
crop and `box_source` is "deepfakebench". Relative frame paths are resolved against `frames_root`
(DeepfakeBench writes them relative to its own repository; default: the JSON's folder). Consecutive
frames in a video's list form the pairs (DeepfakeBench samples frames evenly, not in consecutive pairs).
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

from PIL import Image

from rccl.data.layouts import QUALITIES, LayoutError
from rccl.data.manifest import write_manifest

SPLITS = ("train", "val", "test")
_DIGITS = re.compile(r"(\d+)(?!.*\d)")


def _videos(node: dict, where: str):
    """(compression, video, entry) below a SPLIT node, with or without a COMPRESSION level."""
    for key, value in node.items():
        if isinstance(value, dict) and "frames" in value:
            yield "", key, value
        elif isinstance(value, dict) and key in QUALITIES:
            for video, entry in value.items():
                if not (isinstance(entry, dict) and isinstance(entry.get("frames"), list)):
                    raise LayoutError(f"{where}/{key}/{video}: expected {{\"label\", \"frames\": [paths]}}, "
                                      f"found {str(entry)[:80]}")
                yield key, video, entry
        else:
            raise LayoutError(f"{where}/{key}: expected a video {{\"label\", \"frames\": [...]}} or a compression "
                              f"level ({', '.join(QUALITIES)}), found {str(value)[:80]}")


def import_deepfakebench(json_path: str | os.PathLike, out: str | os.PathLike, *,
                         frames_root: str | os.PathLike | None = None, quality: str | None = None) -> Path:
    """Write OUT/manifest.jsonl for the frames listed in DeepfakeBench's dataset JSON; returns its path.
    quality: keep only that compression level (FF++ JSONs list raw, c23 and c40); default: all."""
    json_path = Path(json_path)
    if not json_path.is_file():
        raise LayoutError(f"DeepfakeBench dataset JSON {json_path}: no such file")
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise LayoutError(f"{json_path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(data, dict) or len(data) != 1 or not isinstance(next(iter(data.values())), dict):
        raise LayoutError(f"{json_path}: expected DeepfakeBench's {{DATASET: {{LABEL: {{SPLIT: ...}}}}}}, "
                          f"found {str(data)[:80]}")
    base = Path(frames_root) if frames_root else json_path.parent
    (dataset, labels), = data.items()
    rows, missing = [], []
    for label_name, splits in labels.items():
        label = 0 if "real" in label_name.lower() else 1
        if not isinstance(splits, dict) or set(splits) - set(SPLITS):
            raise LayoutError(f"{json_path}: {dataset}/{label_name}: expected the splits {', '.join(SPLITS)}, "
                              f"found {sorted(splits) if isinstance(splits, dict) else str(splits)[:80]}")
        for split, node in splits.items():
            for compression, video, entry in _videos(node, f"{dataset}/{label_name}/{split}"):
                if quality is not None and compression and compression != quality:
                    continue
                for k, frame in enumerate(sorted(entry["frames"])):
                    path = Path(frame) if Path(frame).is_absolute() else base / frame
                    if not path.is_file():
                        missing.append(str(path))
                        continue
                    with Image.open(path) as im:
                        w, h = im.size
                    m = _DIGITS.search(path.stem)
                    rows.append({"path": str(path.resolve()), "dataset": dataset, "split": split,
                                 "quality": compression or "raw", "video": f"{label_name}/{video}", "label": label,
                                 "frame": int(m.group(1)) if m else k, "pair": k // 2, "source": "", "target": "",
                                 "identity": "", "box": [0, 0, w, h], "method": "" if label == 0 else label_name,
                                 "detected": False, "box_source": "deepfakebench", "detector": "",
                                 "crop_size": max(w, h), "compression": compression or "as distributed"})
    if missing:
        raise LayoutError(f"{json_path}: {len(missing)} frame file(s) listed but not found, e.g. {missing[0]} "
                          f"(pass --frames-root: the folder DeepfakeBench's relative paths start from)")
    if not rows:
        raise LayoutError(f"{json_path}: no frames listed" + (f" at quality {quality}" if quality else ""))
    manifest = Path(out) / "manifest.jsonl"
    write_manifest(manifest, rows)
    return manifest
