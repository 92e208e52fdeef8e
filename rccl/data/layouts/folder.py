"""A plain folder (`folder`):
    ROOT/real/** and ROOT/fake/**       videos and images (an image is one frame), split "test" unless
                                        ROOT/splits.json ({"train": [relative paths], "val": [...], ...}) says
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from rccl.data.layouts.common import (IMAGE_SUFFIXES, SPLITS, VIDEO_SUFFIXES, Layout, LayoutError, Problem,
                                      VideoRecord, listing)

FOLDER_SPLITS = "splits.json"


def read_folder(root: str | os.PathLike) -> Layout:
    """ROOT/real/** (label 0) and ROOT/fake/** (label 1), videos and images, at any depth."""
    root = Path(root)
    missing = [d for d in ("real", "fake") if not (root / d).is_dir()]
    if missing:
        raise LayoutError(f"{root} is not a real/fake folder: expected folders real/ and fake/ (videos or images "
                          f"at any depth below them); missing {', '.join(missing)}. Found: {listing(root)}")
    split_of = _read_folder_splits(root)
    layout = Layout("folder", root)
    for label, top in ((0, "real"), (1, "fake")):
        for p in sorted((root / top).rglob("*")):
            rel = p.relative_to(root).as_posix()
            if p.is_dir() or any(part.startswith(".") for part in p.relative_to(root).parts):
                continue
            if p.suffix.lower() not in VIDEO_SUFFIXES + IMAGE_SUFFIXES:
                layout.problems.append(Problem(rel, f"neither a video nor an image (suffix {p.suffix or 'none'!r}; "
                                                    f"ignored)"))
                continue
            layout.records.append(VideoRecord("folder", rel, split_of.pop(rel, "test"), label,
                                              method=p.parent.relative_to(root / top).as_posix() if label and
                                              p.parent != root / top else ("fake" if label else "")))
    for rel in sorted(split_of):
        layout.problems.append(Problem(rel, f"named in {FOLDER_SPLITS} but not a video or image under real/ or fake/"))
    if not layout.records:
        raise LayoutError(f"{root}: real/ and fake/ hold no video or image ({', '.join(VIDEO_SUFFIXES + IMAGE_SUFFIXES)})")
    return layout


def _read_folder_splits(root: Path) -> dict[str, str]:
    path = root / FOLDER_SPLITS
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise LayoutError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(data, dict) or set(data) - set(SPLITS) or \
            not all(isinstance(v, list) and all(isinstance(x, str) for x in v) for v in data.values()):
        raise LayoutError(f"{path}: expected {{\"train\": [paths relative to {root}], \"val\": [...], \"test\": [...]}}, "
                          f"found {str(data)[:80]}")
    return {rel: split for split, rels in data.items() for rel in rels}
