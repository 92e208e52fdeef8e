"""The crop manifest: one JSON object per line, one line per face crop, written by rccl-prep and read by
training and evaluation. Columns are documented in docs/data.md; REQUIRED_COLUMNS is the contract.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

from rccl.errors import RcclError
from rccl.fileio import atomic_write

REQUIRED_COLUMNS = (
    "path",      # crop file, relative to the manifest's folder
    "dataset",   # "celebdf" | "ffpp" | "synthetic"
    "split",     # "train" | "val" | "test"
    "quality",   # "raw" | "c23" | "c40"
    "video",     # the video's path relative to the dataset root, e.g. "Celeb-synthesis/id0_id1_0000.mp4"
    "label",     # 0 natural, 1 fake
    "frame",     # frame index in the video
    "pair",      # which pair of consecutive frames this crop belongs to
    "source",    # fakes: the video giving frames and background (e.g. "id0_0000"); naturals: ""
    "target",    # fakes: the identity whose face was put in (e.g. "id1"); naturals: ""
    "identity",  # naturals: the identity (e.g. "id0"), "" where unknown; fakes: ""
    "box",       # [x0, y0, x1, y1] in the frame's pixels
)


class ManifestError(RcclError, ValueError):
    """A manifest that cannot be used; the message names the file, the line and the column."""


def read_manifest(path: str | os.PathLike, *, check_files: bool = False) -> list[dict]:
    """Rows of the manifest at `path`, each a dict with REQUIRED_COLUMNS (and any extra ones), plus
    "abspath": the crop file's absolute path. With check_files, a missing crop file is an error."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest {path}: no such file (run rccl-prep first, or give the path of the manifest.jsonl it wrote)")
    root = path.parent.resolve()
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ManifestError(f"manifest {path}, line {lineno}: not valid JSON ({e.msg})") from None
            missing = [c for c in REQUIRED_COLUMNS if c not in row]
            if missing:
                raise ManifestError(f"manifest {path}, line {lineno}: missing column(s) {', '.join(missing)}")
            if row["label"] not in (0, 1):
                raise ManifestError(f"manifest {path}, line {lineno}: label must be 0 or 1, got {row['label']!r}")
            row["abspath"] = str(root / row["path"])
            if check_files and not os.path.isfile(row["abspath"]):
                raise ManifestError(f"manifest {path}, line {lineno}: crop file {row['abspath']} does not exist")
            rows.append(row)
    return rows


def write_manifest(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    """Write rows through rccl.fileio.atomic_write: a kill leaves the old file or the new one, never half
    of one. "abspath" is not written; everything else is."""
    path = Path(path)
    with atomic_write(path, "w") as f:
        for row in rows:
            missing = [c for c in REQUIRED_COLUMNS if c not in row]
            if missing:
                raise ManifestError(f"manifest {path}: a row lacks column(s) {', '.join(missing)}: {row}")
            f.write(json.dumps({k: v for k, v in row.items() if k != "abspath"}) + "\n")
