"""Issue 11: the dataset layouts of real footage (DFDC, DFD, Celeb-DF v1, a plain folder, DeepfakeBench's
import), one subject per video, and the detectors on ../shared/data/real (skipped when it is absent)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from rccl.data.deepfakebench import import_deepfakebench
from rccl.data.faces import Detection, DetectorError, get_detector, track_subject
from rccl.data.layouts import LayoutError, read_layout
from rccl.data.manifest import read_manifest

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"
needs_real = pytest.mark.skipif(not REAL.is_dir(), reason=f"real deepfake samples not found at {REAL} "
                                                          "(../shared/data/real is absent in this checkout)")


def _touch(path: Path, data: bytes = b"x") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


# ------------------------------------------------------------------------------------------------ DFDC
@needs_real
def test_dfdc_sample_folder_gives_labels_and_sources_from_metadata():
    layout = read_layout("dfdc", REAL / "dfdc")
    by_name = {Path(r.video).name: r for r in layout.records}
    assert set(by_name) == {"abofeumbvv.mp4", "abqwwspghj.mp4", "lynaeydofd.mp4"}
    assert (by_name["abofeumbvv.mp4"].label, by_name["abofeumbvv.mp4"].source) == (1, "atvmxvwyns")
    assert (by_name["lynaeydofd.mp4"].label, by_name["lynaeydofd.mp4"].source) == (0, "")
    assert all(r.split == "train" and r.video.startswith("train_sample_videos/") for r in layout.records)
    assert layout.problems == []


def test_dfdc_parts_and_test_labels(tmp_path):
    part = tmp_path / "dfdc_train_part_0"
    for name in ("a.mp4", "b.mp4", "stray.mp4"):
        _touch(part / name)
    (part / "metadata.json").write_text(json.dumps({
        "a.mp4": {"label": "FAKE", "split": "train", "original": "b.mp4"},
        "b.mp4": {"label": "REAL", "split": "train", "original": None},
        "gone.mp4": {"label": "REAL", "split": "train"}, "odd.mp4": {"label": "MAYBE"}}))
    _touch(tmp_path / "t1.mp4")
    (tmp_path / "labels.csv").write_text("filename,label\nt1.mp4,1\nt2.mp4,0\n")
    layout = read_layout("dfdc", tmp_path)
    recs = {r.video: r for r in layout.records}
    assert set(recs) == {"dfdc_train_part_0/a.mp4", "dfdc_train_part_0/b.mp4", "t1.mp4"}
    assert (recs["dfdc_train_part_0/a.mp4"].label, recs["dfdc_train_part_0/a.mp4"].source) == (1, "b")
    assert (recs["t1.mp4"].split, recs["t1.mp4"].label) == ("test", 1)
    reasons = {p.path: p.reason for p in layout.problems}
    assert "no such file" in reasons["dfdc_train_part_0/gone.mp4"]
    assert "REAL or FAKE" in reasons["dfdc_train_part_0/odd.mp4"]
    assert "not in metadata.json" in reasons["dfdc_train_part_0/stray.mp4"]
    assert "no such file" in reasons["t2.mp4"]


def test_dfdc_tree_without_labels_is_a_precise_error(tmp_path):
    _touch(tmp_path / "x.mp4")
    with pytest.raises(LayoutError, match=r"not a DFDC tree: expected metadata.json.*Found: .*x.mp4"):
        read_layout("dfdc", tmp_path)
    (tmp_path / "metadata.json").write_text("{broken")
    with pytest.raises(LayoutError, match="metadata.json: not valid JSON"):
        read_layout("dfdc", tmp_path)


# ------------------------------------------------------------------------------------------------ DFD, Celeb-DF v1
def test_dfd_tree(tmp_path):
    _touch(tmp_path / "original_sequences/actors/c23/videos/01__exit_phone_room.mp4")
    _touch(tmp_path / "manipulated_sequences/DeepFakeDetection/c23/videos/01_02__exit_phone_room__YVGY8LOK.mp4")
    _touch(tmp_path / "manipulated_sequences/DeepFakeDetection/c23/videos/badname.mp4")
    layout = read_layout("dfd", tmp_path, qualities=("c23",))
    real, fake = sorted(layout.records, key=lambda r: r.label)
    assert (real.label, real.identity, real.split) == (0, "01", "test")
    assert (fake.source, fake.target, fake.method) == ("01__exit_phone_room", "02", "DeepFakeDetection")
    assert fake.quality_path(tmp_path, "c23").is_file()
    assert [p.path for p in layout.problems] == ["manipulated_sequences/DeepFakeDetection/c23/videos/badname.mp4"]
    with pytest.raises(LayoutError, match="not a DeepFakeDetection tree: expected original_sequences/actors"):
        read_layout("dfd", tmp_path / "original_sequences")


def test_celebdf1_reads_the_celebdf_layout(tmp_path):
    _touch(tmp_path / "Celeb-real/id0_0000.mp4")
    _touch(tmp_path / "Celeb-synthesis/id0_id1_0000.mp4")
    (tmp_path / "List_of_testing_videos.txt").write_text("0 Celeb-synthesis/id0_id1_0000.mp4\n")
    layout = read_layout("celebdf1", tmp_path)
    assert {(r.dataset, r.video, r.split) for r in layout.records} == {
        ("celebdf1", "Celeb-real/id0_0000.mp4", "train"), ("celebdf1", "Celeb-synthesis/id0_id1_0000.mp4", "test")}


# ------------------------------------------------------------------------------------------------ folder
def test_folder_of_videos_and_images_with_splits(tmp_path):
    _touch(tmp_path / "real/a/one.mp4")
    Image.new("RGB", (8, 8)).save(tmp_path / "real/face.jpg")
    _touch(tmp_path / "fake/gan/two.png")
    _touch(tmp_path / "fake/notes.txt")
    (tmp_path / "splits.json").write_text(json.dumps({"train": ["real/a/one.mp4", "real/missing.mp4"]}))
    layout = read_layout("folder", tmp_path)
    recs = {r.video: r for r in layout.records}
    assert (recs["real/a/one.mp4"].split, recs["real/a/one.mp4"].label) == ("train", 0)
    assert recs["real/face.jpg"].split == "test" and recs["real/face.jpg"].is_image
    assert (recs["fake/gan/two.png"].label, recs["fake/gan/two.png"].method) == (1, "gan")
    reasons = {p.path: p.reason for p in layout.problems}
    assert "neither a video nor an image" in reasons["fake/notes.txt"]
    assert "named in splits.json" in reasons["real/missing.mp4"]
    with pytest.raises(LayoutError, match="expected a folder real/.*found neither.*goes under .*real/"):
        read_layout("folder", tmp_path / "real")
    (tmp_path / "splits.json").write_text(json.dumps({"holdout": []}))
    with pytest.raises(LayoutError, match="splits.json: expected"):
        read_layout("folder", tmp_path)


def test_a_folder_of_naturals_alone_is_a_folder_layout(tmp_path):
    """real/ without fake/ is a naturals-only set (what a self-blending detector trains on); fake/ alone is a
    set to score. Nothing under either is still an error naming the folder."""
    Image.new("RGB", (8, 8)).save(_mkparent(tmp_path / "naturals/real/a.jpg"))
    Image.new("RGB", (8, 8)).save(tmp_path / "naturals/real/b.png")
    (tmp_path / "naturals/splits.json").write_text(json.dumps({"train": ["real/a.jpg"]}))
    layout = read_layout("folder", tmp_path / "naturals")
    assert {(r.video, r.label, r.split) for r in layout.records} == {("real/a.jpg", 0, "train"), ("real/b.png", 0, "test")}
    assert not layout.problems
    Image.new("RGB", (8, 8)).save(_mkparent(tmp_path / "forgeries/fake/x/c.jpg"))
    assert [(r.label, r.method) for r in read_layout("folder", tmp_path / "forgeries").records] == [(1, "x")]
    (tmp_path / "empty/real").mkdir(parents=True)
    with pytest.raises(LayoutError, match="empty.*hold no video or image"):
        read_layout("folder", tmp_path / "empty")


def _mkparent(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


# ------------------------------------------------------------------------------------------------ DeepfakeBench
def test_deepfakebench_json_imports_without_recropping(tmp_path):
    frames = {}
    for video in ("000", "000_003"):
        frames[video] = []
        for k in range(4):
            p = tmp_path / "frames" / video / f"{k:03d}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (256, 256)).save(p)
            frames[video].append(f"frames/{video}/{k:03d}.png")
    data = {"FaceForensics++": {
        "FF-real": {"train": {"c23": {"000": {"label": "FF-real", "frames": frames["000"]}}}, "val": {}, "test": {}},
        "FF-DF": {"test": {"c23": {"000_003": {"label": "FF-DF", "frames": frames["000_003"]}}}}}}
    (tmp_path / "FF-DF.json").write_text(json.dumps(data))
    rows = read_manifest(import_deepfakebench(tmp_path / "FF-DF.json", tmp_path / "out"), check_files=True)
    assert len(rows) == 8
    real = [r for r in rows if r["label"] == 0]
    assert {r["split"] for r in real} == {"train"} and {r["quality"] for r in rows} == {"c23"}
    assert [r["pair"] for r in real] == [0, 0, 1, 1] and real[0]["box"] == [0, 0, 256, 256]
    assert {r["method"] for r in rows if r["label"] == 1} == {"FF-DF"}
    (tmp_path / "frames/000/002.png").unlink()
    with pytest.raises(LayoutError, match="1 frame file.*not found.*--frames-root"):
        import_deepfakebench(tmp_path / "FF-DF.json", tmp_path / "out")
    (tmp_path / "bad.json").write_text(json.dumps({"X": {"X_real": {"train": {"v": {"label": "X_real"}}}}}))
    with pytest.raises(LayoutError, match="bad.json|X/X_real/train/v"):
        import_deepfakebench(tmp_path / "bad.json", tmp_path / "out")


# ------------------------------------------------------------------------------------------------ one subject
def _d(x0, y0, size=40):
    return Detection((x0, y0, x0 + size, y0 + size), 1.0, "test")


def test_track_follows_one_person_when_a_second_is_larger_later():
    sizes = [(640, 360)] * 4
    subject = [_d(300, 160), _d(305, 162), _d(310, 165), _d(318, 168)]   # central, moving right
    other = [None, _d(20, 20, 30), _d(22, 20, 90), _d(25, 22, 120)]        # a corner face that grows large
    dets = [[s] + ([o] if o else []) for s, o in zip(subject, other)]
    assert [t.box for t in track_subject(dets, sizes)] == [s.box for s in subject]
    # the subject is hidden in one frame: that frame is lost, not given to the other person
    hidden = [dets[0], dets[1], [other[2]], dets[3]]
    assert [t.box if t else None for t in track_subject(hidden, sizes)] == [subject[0].box, subject[1].box, None,
                                                                             subject[3].box]
    # gone for two frames with faces (a cut to another shot): the subject is picked again there
    cut = [dets[0], dets[1], [other[2]], [other[3]]]
    assert [t.box for t in track_subject(cut, sizes)] == [subject[0].box, subject[1].box, other[2].box, other[3].box]
    assert track_subject([[], []], sizes[:2]) == [None, None]


def test_unknown_detector_is_refused():
    with pytest.raises(DetectorError, match="unknown face detector 'yolo'.*dlib, mtcnn"):
        get_detector("yolo")


@needs_real
@pytest.mark.slow
def test_default_detector_finds_the_small_dark_turned_dfdc_face():
    from rccl.data.video import read_frames

    frames = read_frames(REAL / "dfdc/train_sample_videos/abofeumbvv.mp4", [0, 100, 200, 299])
    found = get_detector().detect_many([frames[i] for i in sorted(frames)])
    assert sum(bool(f) for f in found) >= 3  # dlib's HOG alone finds it in none (the issue's report)
    assert all(880 < (d.box[0] + d.box[2]) / 2 < 1040 for f in found for d in f)  # her face, nothing else
