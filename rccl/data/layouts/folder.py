"""A plain folder (`folder`):
    ROOT/real/** and ROOT/fake/**       videos and images (an image is one frame; either folder may be absent:
                                        naturals alone train a self-blending detector), split "test" unless
                                        ROOT/splits.json ({"train": [relative paths], "val": [...], ...}) says
    ROOT/forgeries.json (optional)      {fake: {"background": natural, "face": natural}}, paths relative to
                                        ROOT: where a fake's frame and its face came from (rccl-swap writes
                                        it); they become the record's source and target, as FF++'s AAA_BBB
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from rccl.data.layouts.common import (IMAGE_SUFFIXES, SPLITS, VIDEO_SUFFIXES, Layout, LayoutError, Problem,
                                      VideoRecord, listing)

FOLDER_SPLITS = "splits.json"
FOLDER_FORGERIES = "forgeries.json"
FORGERY_KEYS = ("background", "face")


def read_folder(root: str | os.PathLike) -> Layout:
    """ROOT/real/** (label 0) and ROOT/fake/** (label 1), videos and images, at any depth; either may be absent."""
    root = Path(root)
    # either alone is a valid set: naturals only train a self-blending detector (data.fakes: sbi), fakes only
    # are scored by one
    if not any((root / d).is_dir() for d in ("real", "fake")):
        raise LayoutError(f"{root} is not a real/fake folder: expected a folder real/ (natural videos or images at "
                          f"any depth below it), fake/ (forgeries), or both; found neither. A folder of natural "
                          f"photos or videos goes under {root / 'real'}/. Found: {listing(root)}")
    split_of = _read_folder_splits(root)
    origin_of = _read_folder_forgeries(root)
    layout = Layout("folder", root)
    for label, top in ((0, "real"), (1, "fake")):
        if not (root / top).is_dir():
            continue
        for p in sorted((root / top).rglob("*")):
            rel = p.relative_to(root).as_posix()
            if p.is_dir() or any(part.startswith(".") for part in p.relative_to(root).parts):
                continue
            if p.suffix.lower() not in VIDEO_SUFFIXES + IMAGE_SUFFIXES:
                layout.problems.append(Problem(rel, f"neither a video nor an image (suffix {p.suffix or 'none'!r}; "
                                                    f"ignored)"))
                continue
            source, target = origin_of.pop(rel, ("", "")) if label else ("", "")
            layout.records.append(VideoRecord("folder", rel, split_of.pop(rel, "test"), label, source=source,
                                              target=target,
                                              method=p.parent.relative_to(root / top).as_posix() if label and
                                              p.parent != root / top else ("fake" if label else "")))
    for rel in sorted(split_of):
        layout.problems.append(Problem(rel, f"named in {FOLDER_SPLITS} but not a video or image under real/ or fake/"))
    for rel in sorted(origin_of):
        layout.problems.append(Problem(rel, f"named in {FOLDER_FORGERIES} but not a video or image under fake/"))
    naturals = {r.video for r in layout.records if r.label == 0}
    for r in layout.records:
        for key, value in zip(FORGERY_KEYS, (r.source, r.target)):
            if value and value not in naturals:
                layout.problems.append(Problem(r.video, f"its {key} in {FOLDER_FORGERIES}, {value}, is not a video "
                                                        f"or image under real/ (kept as the record's origin)"))
    if not layout.records:
        raise LayoutError(f"{root}: real/ and fake/ hold no video or image ({', '.join(VIDEO_SUFFIXES + IMAGE_SUFFIXES)})")
    return layout


def _optional_json(path: Path):
    """The JSON in `path`, or None when there is no such file; invalid JSON is a LayoutError naming it."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise LayoutError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None


def _read_folder_splits(root: Path) -> dict[str, str]:
    path = root / FOLDER_SPLITS
    data = _optional_json(path)
    if data is None:
        return {}
    if not isinstance(data, dict) or set(data) - set(SPLITS) or \
            not all(isinstance(v, list) and all(isinstance(x, str) for x in v) for v in data.values()):
        raise LayoutError(f"{path}: expected {{\"train\": [paths relative to {root}], \"val\": [...], \"test\": [...]}}, "
                          f"found {str(data)[:80]}")
    return {rel: split for split, rels in data.items() for rel in rels}


def _read_folder_forgeries(root: Path) -> dict[str, tuple[str, str]]:
    """{fake: (background, face)} from ROOT/forgeries.json; {} without one."""
    path = root / FOLDER_FORGERIES
    data = _optional_json(path)
    if data is None:
        return {}
    expected = (f'expected {{"fake/...": {{"background": "real/...", "face": "real/..."}}}} (paths relative to '
                f'{root}: the natural giving the frame, the natural giving the face)')
    if not isinstance(data, dict):
        raise LayoutError(f"{path}: {expected}, found {str(data)[:80]}")
    for fake, origin in data.items():
        if not isinstance(origin, dict) or set(origin) != set(FORGERY_KEYS) or \
                not all(isinstance(v, str) for v in origin.values()):
            raise LayoutError(f"{path}: entry {fake!r}: {expected}, found {str(origin)[:80]}")
    return {fake: (origin["background"], origin["face"]) for fake, origin in data.items()}
