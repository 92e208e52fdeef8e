"""Dataset trees as distributed, read into one record per video.

Celeb-DF-v2 (also what rccl-synth writes):
    Celeb-real/idX_NNNN.mp4             natural, identity idX
    YouTube-real/NNNNN.mp4              natural, identity unknown
    Celeb-synthesis/idX_idY_NNNN.mp4    fake: frames of Celeb-real/idX_NNNN.mp4 with the face of idY
    List_of_testing_videos.txt          "1 YouTube-real/00170.mp4" (1 natural, 0 fake): the test split;
                                        every other video is train
FaceForensics++:
    original_sequences/youtube/{raw,c23,c40}/videos/NNN.mp4
    manipulated_sequences/<Method>/{raw,c23,c40}/videos/AAA_BBB.mp4   frames of AAA, face of BBB
    splits/{train,val,test}.json        the official lists of [AAA, BBB] pairs (or pass splits_dir)

Celeb-DF v1 (celebdf1): the same three folders and test list as v2 (v1's release has them too).
FF++'s DeepFakeDetection (dfd):
    original_sequences/actors/{raw,c23,c40}/videos/AA__scene.mp4                 natural, actor AA
    manipulated_sequences/DeepFakeDetection/{raw,c23,c40}/videos/AA_BB__scene__HASH.mp4
                                        fake: AA's video AA__scene with BB's face; no official split: test
DFDC (dfdc):
    dfdc_train_part_N/metadata.json + videos   {"x.mp4": {"label": "REAL"|"FAKE", "split": ..., "original": "y.mp4"}}
    or ROOT/metadata.json + videos (Kaggle's train_sample_videos/), or ROOT itself one level above that;
    the test set: ROOT/labels.csv (filename,label with 1 fake) + videos: split "test"
A plain folder (folder):
    ROOT/real/** and ROOT/fake/**       videos and images (an image is one frame), split "test" unless
                                        ROOT/splits.json ({"train": [relative paths], "val": [...], ...}) says

A tree that does not have this shape raises LayoutError saying what was expected and what was found.
Single bad entries (a stray file, a misnamed video, a test list naming a missing file) do not stop the
run: they come back in Layout.problems, each with the path and the reason, and prep reports them.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from rccl.errors import RcclError

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
DATASETS = ("celebdf", "celebdf1", "ffpp", "dfd", "dfdc", "folder", "synthetic")
SHIPS_QUALITIES = ("ffpp", "dfd")  # trees that ship their own c23/c40 files (FF++'s layout)
QUALITIES = ("raw", "c23", "c40")
FFPP_METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures", "FaceShifter")


class LayoutError(RcclError, ValueError):
    """The dataset tree does not have the expected shape; the message says what was expected and found."""


@dataclass(frozen=True)
class VideoRecord:
    dataset: str        # one of DATASETS
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


def _listing(folder: Path, limit: int = 12) -> str:
    if not folder.is_dir():
        return f"{folder} does not exist" if not folder.exists() else f"{folder} is not a folder"
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    shown = ", ".join(names[:limit]) + (f", ... ({len(names)} entries)" if len(names) > limit else "")
    return f"{folder} holds: {shown or 'nothing'}"


def _video_files(folder: Path, problems: list[Problem], root: Path):
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


# ----------------------------------------------------------------------------------------- Celeb-DF-v2
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
            f"optional) and {CELEBDF_TEST_LIST}; missing {', '.join(missing)}. Found: {_listing(root)}")
    if not (root / CELEBDF_TEST_LIST).is_file():
        raise LayoutError(f"{root} is not a Celeb-DF-v2 tree: {CELEBDF_TEST_LIST} (the test split) is missing. "
                          f"Found: {_listing(root)}")
    layout = Layout(dataset, root)
    problems = layout.problems
    test = _read_celebdf_test_list(root, problems)

    records: list[VideoRecord] = []
    for folder in CELEBDF_FOLDERS:
        if not (root / folder).is_dir():
            continue
        for p, rel in _video_files(root / folder, problems, root):
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
        raise LayoutError(f"{root}: Celeb-DF-v2 folders hold no videos. Found: {_listing(root / 'Celeb-real')}; "
                          f"{_listing(root / 'Celeb-synthesis')}")
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


# ----------------------------------------------------------------------------------------- FaceForensics++
_FFPP_REAL = re.compile(r"^(\d{3})$")
_FFPP_FAKE = re.compile(r"^(\d{3})_(\d{3})$")
FFPP_SPLITS = ("train", "val", "test")


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
            f"Found: {_listing(root)}")
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
            for p, rel in _video_files(folder, problems, root):
                key = f"{group}/raw/videos/{p.name}"
                if key in records:
                    continue
                rec = _ffpp_record(p.stem, method, key, splits, rel, problems)
                if rec is not None:
                    records[key] = rec
    if not found_any_quality:
        raise LayoutError(f"{root}: no <quality>/videos/ folder for qualities {', '.join(qualities)} under "
                          f"original_sequences/youtube or manipulated_sequences/<Method>. "
                          f"Found: {_listing(orig)}; {_listing(manip)}")
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
                          f"elsewhere). Found: {_listing(folder)}")
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


def read_layout(dataset: str, root: str | os.PathLike, **kw) -> Layout:
    """The records of a dataset tree; dataset is one of DATASETS ("synthetic": a Celeb-DF-v2 tree)."""
    if dataset in ("celebdf", "celebdf1", "synthetic"):
        return read_celebdf(root, dataset=dataset)
    if dataset == "ffpp":
        return read_ffpp(root, **kw)
    if dataset == "dfd":
        return read_dfd(root, qualities=kw.get("qualities", QUALITIES))
    if dataset == "dfdc":
        return read_dfdc(root)
    if dataset == "folder":
        return read_folder(root)
    raise LayoutError(f"unknown dataset {dataset!r}: expected one of {', '.join(DATASETS)}")


# ----------------------------------------------------------------------------------------- DeepFakeDetection
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
                          f"Found: {_listing(root)}; {_listing(root / 'original_sequences')}; "
                          f"{_listing(root / 'manipulated_sequences')}")
    layout = Layout("dfd", root)
    records: dict[str, VideoRecord] = {}
    for group, fake in ((DFD_REAL, False), (DFD_FAKE, True)):
        for q in qualities:
            folder = root / group / q / "videos"
            if not folder.is_dir():
                continue
            for p, rel in _video_files(folder, layout.problems, root):
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
                          f"Found: {_listing(root / DFD_REAL)}; {_listing(root / DFD_FAKE)}")
    layout.records = [records[k] for k in sorted(records)]
    return layout


# ----------------------------------------------------------------------------------------- DFDC
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
                          f"set's {DFDC_TEST_LABELS}. Found: {_listing(root)}")
    layout = Layout("dfdc", root)
    records: list[VideoRecord] = []
    for folder in folders:
        records += _dfdc_part(root, folder, layout.problems)
    if has_test:
        records += _dfdc_test(root, layout.problems)
    if not records:
        raise LayoutError(f"{root}: the DFDC label files name no video that is present. Found: {_listing(root)}")
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


# ----------------------------------------------------------------------------------------- a plain folder
FOLDER_SPLITS = "splits.json"


def read_folder(root: str | os.PathLike) -> Layout:
    """ROOT/real/** (label 0) and ROOT/fake/** (label 1), videos and images, at any depth."""
    root = Path(root)
    missing = [d for d in ("real", "fake") if not (root / d).is_dir()]
    if missing:
        raise LayoutError(f"{root} is not a real/fake folder: expected folders real/ and fake/ (videos or images "
                          f"at any depth below them); missing {', '.join(missing)}. Found: {_listing(root)}")
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
    if not isinstance(data, dict) or set(data) - set(FFPP_SPLITS) or \
            not all(isinstance(v, list) and all(isinstance(x, str) for x in v) for v in data.values()):
        raise LayoutError(f"{path}: expected {{\"train\": [paths relative to {root}], \"val\": [...], \"test\": [...]}}, "
                          f"found {str(data)[:80]}")
    return {rel: split for split, rels in data.items() for rel in rels}
