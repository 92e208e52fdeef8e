"""Celeb-DF-v2 (`celebdf`; also what rccl-synth writes, `synthetic`) and Celeb-DF v1 (`celebdf1`):
    Celeb-real/idX_NNNN.mp4             natural, identity idX
    YouTube-real/NNNNN.mp4              natural, identity unknown
    Celeb-synthesis/idX_idY_NNNN.mp4    fake: frames of Celeb-real/idX_NNNN.mp4 with the face of idY
    List_of_testing_videos.txt          "1 YouTube-real/00170.mp4" (1 natural, 0 fake): the test split;
                                        every other video is train
Celeb-DF v1 has the same three folders and test list as v2 (v1's release has them too).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from rccl.data.layouts.common import Layout, LayoutError, Problem, VideoRecord, listing, video_files

_CELEB_REAL = re.compile(r"^(id\d+)_(\d{4})$")
_CELEB_FAKE = re.compile(r"^(id\d+)_(id\d+)_(\d{4})$")
_YOUTUBE = re.compile(r"^\d+$")
CELEBDF_FOLDERS = ("Celeb-real", "Celeb-synthesis", "YouTube-real")
CELEBDF_TEST_LIST = "List_of_testing_videos.txt"


def read_celebdf(root: str | os.PathLike, *, dataset: str = "celebdf") -> Layout:
    root = Path(root)
    if not root.is_dir():
        raise LayoutError(f"Celeb-DF-v2 root {root}: not a folder")
    missing = [f for f in ("Celeb-real", "Celeb-synthesis") if not (root / f).is_dir()]
    if missing:
        raise LayoutError(
            f"{root} is not a Celeb-DF-v2 tree: expected folders {', '.join(CELEBDF_FOLDERS)} (YouTube-real "
            f"optional) and {CELEBDF_TEST_LIST}; missing {', '.join(missing)}. Found: {listing(root)}")
    if not (root / CELEBDF_TEST_LIST).is_file():
        raise LayoutError(f"{root} is not a Celeb-DF-v2 tree: {CELEBDF_TEST_LIST} (the test split) is missing. "
                          f"Found: {listing(root)}")
    layout = Layout(dataset, root)
    problems = layout.problems
    test = _read_celebdf_test_list(root, problems)

    records: list[VideoRecord] = []
    for folder in CELEBDF_FOLDERS:
        if not (root / folder).is_dir():
            continue
        for p, rel in video_files(root / folder, problems, root):
            stem = p.stem
            if folder == "Celeb-real":
                m = _CELEB_REAL.match(stem)
                if not m:
                    problems.append(Problem(rel, "name does not match Celeb-real/idX_NNNN.mp4 (ignored)"))
                    continue
                rec = dict(label=0, identity=m.group(1))
            elif folder == "YouTube-real":
                if not _YOUTUBE.match(stem):
                    problems.append(Problem(rel, "name does not match YouTube-real/NNNNN.mp4 (ignored)"))
                    continue
                rec = dict(label=0)
            else:
                m = _CELEB_FAKE.match(stem)
                if not m:
                    problems.append(Problem(rel, "name does not match Celeb-synthesis/idX_idY_NNNN.mp4 (ignored)"))
                    continue
                rec = dict(label=1, source=f"{m.group(1)}_{m.group(3)}", target=m.group(2), method=folder)
            split = "test" if rel in test else "train"
            if rel in test and test[rel] != rec["label"]:
                problems.append(Problem(rel, f"{CELEBDF_TEST_LIST} labels it {1 - test[rel]} "
                                             f"(1 natural, 0 fake), its folder says otherwise; the folder wins"))
            records.append(VideoRecord(dataset=dataset, video=rel, split=split, **rec))
    present = {r.video for r in records}
    for rel in test:
        if rel not in present and (root / rel).exists():
            continue  # present but rejected above; already reported
        if rel not in present:
            problems.append(Problem(rel, f"named in {CELEBDF_TEST_LIST} but no such file"))
    if not records:
        raise LayoutError(f"{root}: Celeb-DF-v2 folders hold no videos. Found: {listing(root / 'Celeb-real')}; "
                          f"{listing(root / 'Celeb-synthesis')}")
    layout.records = records
    return layout


def _read_celebdf_test_list(root: Path, problems: list[Problem]) -> dict[str, int]:
    """{video path: label in the list's convention flipped to ours (0 natural, 1 fake)}."""
    test: dict[str, int] = {}
    path = root / CELEBDF_TEST_LIST
    for lineno, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or parts[0] not in ("0", "1"):
            problems.append(Problem(f"{CELEBDF_TEST_LIST}:{lineno}",
                                    f"expected '<1 natural | 0 fake> <folder>/<video>.mp4', found {line.strip()!r}"))
            continue
        test[parts[1]] = 1 - int(parts[0])
    return test

