"""FF++'s DeepFakeDetection (`dfd`):
    original_sequences/actors/{raw,c23,c40}/videos/AA__scene.mp4                 natural, actor AA
    manipulated_sequences/DeepFakeDetection/{raw,c23,c40}/videos/AA_BB__scene__HASH.mp4
                                        fake: AA's video AA__scene with BB's face; no official split: test
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from rccl.data.layouts.common import QUALITIES, Layout, LayoutError, Problem, VideoRecord, listing, video_files

_DFD_REAL = re.compile(r"^(\d{2})__([\w-]+)$")
_DFD_FAKE = re.compile(r"^(\d{2})_(\d{2})__([\w-]+?)__([A-Za-z0-9]+)$")
DFD_REAL = "original_sequences/actors"
DFD_FAKE = "manipulated_sequences/DeepFakeDetection"


def read_dfd(root: str | os.PathLike, *, qualities=QUALITIES) -> Layout:
    """FF++'s DeepFakeDetection: no official split, every video is "test" (it is used to test)."""
    root = Path(root)
    if not (root / DFD_REAL).is_dir() or not (root / DFD_FAKE).is_dir():
        raise LayoutError(f"{root} is not a DeepFakeDetection tree: expected {DFD_REAL}/<quality>/videos/ and "
                          f"{DFD_FAKE}/<quality>/videos/ (quality one of {', '.join(QUALITIES)}). "
                          f"Found: {listing(root)}; {listing(root / 'original_sequences')}; "
                          f"{listing(root / 'manipulated_sequences')}")
    layout = Layout("dfd", root)
    records: dict[str, VideoRecord] = {}
    for group, fake in ((DFD_REAL, False), (DFD_FAKE, True)):
        for q in qualities:
            folder = root / group / q / "videos"
            if not folder.is_dir():
                continue
            for p, rel in video_files(folder, layout.problems, root):
                key = f"{group}/raw/videos/{p.name}"
                if key in records:
                    continue
                m = (_DFD_FAKE if fake else _DFD_REAL).match(p.stem)
                if not m:
                    want = "AA_BB__scene__HASH.mp4" if fake else "AA__scene.mp4"
                    layout.problems.append(Problem(rel, f"name does not match {group}/.../{want} (ignored)"))
                    continue
                if fake:
                    records[key] = VideoRecord("dfd", key, "test", 1, source=f"{m.group(1)}__{m.group(3)}",
                                               target=m.group(2), method="DeepFakeDetection")
                else:
                    records[key] = VideoRecord("dfd", key, "test", 0, identity=m.group(1))
    if not records:
        raise LayoutError(f"{root}: no DeepFakeDetection video for qualities {', '.join(qualities)}. "
                          f"Found: {listing(root / DFD_REAL)}; {listing(root / DFD_FAKE)}")
    layout.records = [records[k] for k in sorted(records)]
    return layout

