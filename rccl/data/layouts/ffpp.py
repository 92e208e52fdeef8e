"""FaceForensics++ (`ffpp`):
    original_sequences/youtube/{raw,c23,c40}/videos/NNN.mp4
    manipulated_sequences/<Method>/{raw,c23,c40}/videos/AAA_BBB.mp4   frames of AAA, face of BBB
    splits/{train,val,test}.json        the official lists of [AAA, BBB] pairs (or pass splits_dir)
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

from rccl.data.layouts.common import (QUALITIES, SPLITS, Layout, LayoutError, Problem, VideoRecord, listing,
                                      video_files)

FFPP_METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures", "FaceShifter")
_FFPP_REAL = re.compile(r"^(\d{3})$")
_FFPP_FAKE = re.compile(r"^(\d{3})_(\d{3})$")
FFPP_SPLITS = SPLITS


def read_ffpp(root: str | os.PathLike, *, qualities=QUALITIES, splits_dir: str | os.PathLike | None = None) -> Layout:
    """Records for every video present in at least one of `qualities`; `video` names the raw version's
    path (the key shared by the qualities), quality_path() gives each quality's file."""
    root = Path(root)
    orig = root / "original_sequences" / "youtube"
    manip = root / "manipulated_sequences"
    if not orig.is_dir() or not manip.is_dir():
        raise LayoutError(
            f"{root} is not a FaceForensics++ tree: expected original_sequences/youtube/<quality>/videos/ and "
            f"manipulated_sequences/<Method>/<quality>/videos/ (quality one of {', '.join(QUALITIES)}). "
            f"Found: {listing(root)}")
    splits = _read_ffpp_splits(Path(splits_dir) if splits_dir else root / "splits")
    layout = Layout("ffpp", root)
    problems = layout.problems
    groups = [("original_sequences/youtube", "")] + [
        (f"manipulated_sequences/{m.name}", m.name) for m in sorted(manip.iterdir()) if m.name in FFPP_METHODS]
    for m in sorted(manip.iterdir()):
        if m.is_dir() and m.name not in FFPP_METHODS:  # e.g. DeepFakeDetection: other names, no split files
            problems.append(Problem(m.relative_to(root).as_posix(),
                                    f"not one of the manipulations read here ({', '.join(FFPP_METHODS)}); ignored"))
    found_any_quality = False
    records: dict[str, VideoRecord] = {}
    for group, method in groups:
        for q in qualities:
            folder = root / group / q / "videos"
            if not folder.is_dir():
                continue
            found_any_quality = True
            for p, rel in video_files(folder, problems, root):
                key = f"{group}/raw/videos/{p.name}"
                if key in records:
                    continue
                rec = _ffpp_record(p.stem, method, key, splits, rel, problems)
                if rec is not None:
                    records[key] = rec
    if not found_any_quality:
        raise LayoutError(f"{root}: no <quality>/videos/ folder for qualities {', '.join(qualities)} under "
                          f"original_sequences/youtube or manipulated_sequences/<Method>. "
                          f"Found: {listing(orig)}; {listing(manip)}")
    layout.records = [records[k] for k in sorted(records)]
    return layout


def _ffpp_record(stem, method, key, splits, rel, problems) -> VideoRecord | None:
    if not method:
        m = _FFPP_REAL.match(stem)
        if not m:
            problems.append(Problem(rel, "name does not match original_sequences/.../NNN.mp4 (ignored)"))
            return None
        split = splits["by_video"].get(stem)
        if split is None:
            problems.append(Problem(rel, "in none of the official split files (ignored)"))
            return None
        return VideoRecord("ffpp", key, split, 0, identity=stem)
    m = _FFPP_FAKE.match(stem)
    if not m:
        problems.append(Problem(rel, "name does not match manipulated_sequences/<Method>/.../AAA_BBB.mp4 (ignored)"))
        return None
    a, b = m.group(1), m.group(2)
    split = splits["by_pair"].get((a, b))
    if split is None:
        problems.append(Problem(rel, f"pair ({a}, {b}) is in none of the official split files (ignored)"))
        return None
    return VideoRecord("ffpp", key, split, 1, source=a, target=b, method=method)


def _read_ffpp_splits(folder: Path) -> dict:
    files = {s: folder / f"{s}.json" for s in FFPP_SPLITS}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise LayoutError(f"FaceForensics++ split files missing: {', '.join(missing)} (the official "
                          f"train/val/test JSON lists of [AAA, BBB] pairs; pass --ffpp-splits DIR if they lie "
                          f"elsewhere). Found: {listing(folder)}")
    by_pair, by_video = {}, {}
    for split, path in files.items():
        try:
            pairs = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise LayoutError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
        if not isinstance(pairs, list) or not all(isinstance(p, list) and len(p) == 2 for p in pairs):
            raise LayoutError(f"{path}: expected a JSON list of [AAA, BBB] pairs, found {str(pairs)[:80]}")
        for a, b in pairs:
            a, b = str(a), str(b)
            by_pair[(a, b)] = by_pair[(b, a)] = split
            by_video[a] = by_video[b] = split
    return {"by_pair": by_pair, "by_video": by_video}

