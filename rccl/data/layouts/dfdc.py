"""DFDC (`dfdc`):
    dfdc_train_part_N/metadata.json + videos   {"x.mp4": {"label": "REAL"|"FAKE", "split": ..., "original": "y.mp4"}}
    or ROOT/metadata.json + videos (Kaggle's train_sample_videos/), or ROOT itself one level above that;
    the test set: ROOT/labels.csv (filename,label with 1 fake) + videos: split "test"
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from rccl.data.layouts.common import VIDEO_SUFFIXES, Layout, LayoutError, Problem, VideoRecord, listing

DFDC_METADATA = "metadata.json"
DFDC_TEST_LABELS = "labels.csv"


def read_dfdc(root: str | os.PathLike) -> Layout:
    """DFDC: every folder (ROOT itself or its subfolders, e.g. dfdc_train_part_N/ or train_sample_videos/)
    holding a metadata.json, plus ROOT/labels.csv of the test set."""
    root = Path(root)
    if not root.is_dir():
        raise LayoutError(f"DFDC root {root}: not a folder")
    folders = [root] if (root / DFDC_METADATA).is_file() else []
    folders += [d for d in sorted(root.iterdir()) if d.is_dir() and (d / DFDC_METADATA).is_file()]
    has_test = (root / DFDC_TEST_LABELS).is_file()
    if not folders and not has_test:
        raise LayoutError(f"{root} is not a DFDC tree: expected {DFDC_METADATA} in ROOT or in its folders "
                          f"(dfdc_train_part_N/{DFDC_METADATA}, train_sample_videos/{DFDC_METADATA}) or the test "
                          f"set's {DFDC_TEST_LABELS}. Found: {listing(root)}")
    layout = Layout("dfdc", root)
    records: list[VideoRecord] = []
    for folder in folders:
        records += _dfdc_part(root, folder, layout.problems)
    if has_test:
        records += _dfdc_test(root, layout.problems)
    if not records:
        raise LayoutError(f"{root}: the DFDC label files name no video that is present. Found: {listing(root)}")
    layout.records = sorted(records, key=lambda r: r.video)
    return layout


def _dfdc_part(root: Path, folder: Path, problems: list[Problem]) -> list[VideoRecord]:
    meta_path = folder / DFDC_METADATA
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise LayoutError(f"{meta_path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(meta, dict):
        raise LayoutError(f"{meta_path}: expected an object {{video: {{label, split, original}}}}, "
                          f"found {type(meta).__name__}")
    out = []
    for name, entry in sorted(meta.items()):
        rel = (folder / name).relative_to(root).as_posix()
        label = entry.get("label") if isinstance(entry, dict) else None
        if label not in ("REAL", "FAKE"):
            problems.append(Problem(rel, f"{DFDC_METADATA}: label must be REAL or FAKE, found {label!r} (ignored)"))
            continue
        if not (folder / name).is_file():
            problems.append(Problem(rel, f"named in {meta_path.relative_to(root).as_posix()} but no such file"))
            continue
        split = entry.get("split") if entry.get("split") in ("train", "val", "test") else "train"
        if label == "FAKE":
            original = entry.get("original") or ""
            if not original:
                problems.append(Problem(rel, f"{DFDC_METADATA}: a FAKE without 'original'; source left empty"))
            out.append(VideoRecord("dfdc", rel, split, 1, source=Path(original).stem, method="DFDC"))
        else:
            out.append(VideoRecord("dfdc", rel, split, 0))
    listed = set(meta)
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() in VIDEO_SUFFIXES and p.name not in listed:
            problems.append(Problem(p.relative_to(root).as_posix(), f"not in {DFDC_METADATA} (no label; ignored)"))
    return out


def _dfdc_test(root: Path, problems: list[Problem]) -> list[VideoRecord]:
    path = root / DFDC_TEST_LABELS
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines or [c.strip() for c in lines[0].split(",")][:2] != ["filename", "label"]:
        raise LayoutError(f"{path}: expected a header 'filename,label' (DFDC's test labels), "
                          f"found {lines[0] if lines else 'an empty file'!r}")
    out = []
    for lineno, line in enumerate(lines[1:], 2):
        parts = [c.strip() for c in line.split(",")]
        if not line.strip():
            continue
        if len(parts) < 2 or parts[1] not in ("0", "1", "0.0", "1.0"):
            problems.append(Problem(f"{DFDC_TEST_LABELS}:{lineno}", f"expected 'filename,0|1', found {line!r}"))
            continue
        if not (root / parts[0]).is_file():
            problems.append(Problem(parts[0], f"named in {DFDC_TEST_LABELS} but no such file"))
            continue
        out.append(VideoRecord("dfdc", parts[0], "test", int(float(parts[1])), method="DFDC" if float(parts[1]) else ""))
    return out

