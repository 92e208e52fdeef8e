"""What every dataset layout shares: the record of one video, the layout read, its error, and the helpers
that list a tree's folders for the error messages."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from rccl.errors import RcclError

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
SHIPS_QUALITIES = ("ffpp", "dfd")  # trees that ship their own c23/c40 files (FF++'s layout)
QUALITIES = ("raw", "c23", "c40")
SPLITS = ("train", "val", "test")


class LayoutError(RcclError, ValueError):
    """The dataset tree does not have the expected shape; the message says what was expected and found."""


@dataclass(frozen=True)
class VideoRecord:
    dataset: str        # one of rccl.data.layouts.DATASETS
    video: str          # path relative to the dataset root (FF++: of the raw version; see quality_path)
    split: str          # "train" | "val" | "test"
    label: int          # 0 natural, 1 fake
    source: str = ""    # fakes: the natural video giving frames and background ("id0_0000", FF++ "071")
    target: str = ""    # fakes: the identity whose face was put in ("id1", FF++ "054")
    identity: str = ""  # naturals: the identity ("id0", FF++ "071"); "" where unknown
    method: str = ""    # the manipulation ("Celeb-synthesis", FF++ "Deepfakes", ...); "" for naturals

    @property
    def is_image(self) -> bool:
        """A still image (folder layout): one frame, no compressed copies."""
        return Path(self.video).suffix.lower() in IMAGE_SUFFIXES

    @property
    def ships_qualities(self) -> bool:
        return self.dataset in SHIPS_QUALITIES

    def quality_path(self, root: str | os.PathLike, quality: str) -> Path:
        """Where this video's `quality` version lies under the dataset root, for trees that ship their
        own compressed versions (FF++). Celeb-DF ships raw only: rccl-prep makes the others."""
        if self.ships_qualities:
            parts = Path(self.video).parts
            return Path(root).joinpath(*parts[:-3], quality, *parts[-2:])
        return Path(root) / self.video


@dataclass(frozen=True)
class Problem:
    path: str
    reason: str


@dataclass
class Layout:
    dataset: str
    root: Path
    records: list[VideoRecord] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def listing(folder: Path, limit: int = 12) -> str:
    if not folder.is_dir():
        return f"{folder} does not exist" if not folder.exists() else f"{folder} is not a folder"
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    shown = ", ".join(names[:limit]) + (f", ... ({len(names)} entries)" if len(names) > limit else "")
    return f"{folder} holds: {shown or 'nothing'}"


def video_files(folder: Path, problems: list[Problem], root: Path):
    """Video files of a folder, sorted; anything else in it is a problem (reported, skipped)."""
    for p in sorted(folder.iterdir()):
        rel = p.relative_to(root).as_posix()
        if p.name.startswith("."):
            continue  # hidden files (.DS_Store, our own .tmp files)
        if p.is_dir():
            problems.append(Problem(rel, "unexpected folder inside a video folder (ignored)"))
        elif p.suffix.lower() not in VIDEO_SUFFIXES:
            problems.append(Problem(rel, f"not a video file (suffix {p.suffix or 'none'!r}; ignored)"))
        else:
            yield p, rel

