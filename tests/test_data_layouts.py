"""Dataset trees: a fake Celeb-DF-v2 and a fake FaceForensics++ tree of tiny real videos are read into the
right records; a tree of the wrong shape fails loudly, naming what was expected and what was found."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("av", reason="needs PyAV (pip install av): the test trees are videos written with PyAV")

from rccl.data.compress import H264Writer  # noqa: E402
from rccl.data.layouts import LayoutError, read_celebdf, read_ffpp, read_layout  # noqa: E402


def tiny_video(path, n=4, size=32, value=100):
    with H264Writer(path, width=size, height=size, rate=25, quantiser=20, preset="ultrafast", threads=1) as w:
        for i in range(n):
            w.write(np.full((size, size, 3), (value + 10 * i) % 256, np.uint8))
    return path


@pytest.fixture
def celebdf_tree(tmp_path):
    root = tmp_path / "Celeb-DF-v2"
    for rel in ("Celeb-real/id0_0000.mp4", "Celeb-real/id1_0003.mp4", "Celeb-synthesis/id0_id1_0000.mp4",
                "Celeb-synthesis/id1_id0_0003.mp4", "YouTube-real/00170.mp4"):
        tiny_video(root / rel)
    (root / "List_of_testing_videos.txt").write_text(
        "1 YouTube-real/00170.mp4\n0 Celeb-synthesis/id0_id1_0000.mp4\n1 Celeb-real/id0_0000.mp4\n")
    return root


def test_celebdf_records(celebdf_tree):
    layout = read_celebdf(celebdf_tree)
    recs = {r.video: r for r in layout.records}
    assert set(recs) == {"Celeb-real/id0_0000.mp4", "Celeb-real/id1_0003.mp4", "Celeb-synthesis/id0_id1_0000.mp4",
                         "Celeb-synthesis/id1_id0_0003.mp4", "YouTube-real/00170.mp4"}
    fake = recs["Celeb-synthesis/id0_id1_0000.mp4"]
    assert (fake.label, fake.source, fake.target, fake.identity, fake.split) == (1, "id0_0000", "id1", "", "test")
    real = recs["Celeb-real/id1_0003.mp4"]
    assert (real.label, real.identity, real.source, real.target, real.split) == (0, "id1", "", "", "train")
    yt = recs["YouTube-real/00170.mp4"]
    assert (yt.label, yt.identity, yt.split) == (0, "", "test")
    assert recs["Celeb-synthesis/id1_id0_0003.mp4"].split == "train"
    assert layout.problems == []


def test_celebdf_problems_are_reported_not_fatal(celebdf_tree):
    (celebdf_tree / "Celeb-real" / "notes.txt").write_text("hello")
    tiny_video(celebdf_tree / "Celeb-real" / "badname.mp4")
    with open(celebdf_tree / "List_of_testing_videos.txt", "a") as f:
        f.write("1 Celeb-real/id7_0042.mp4\nthis line is wrong\n")
    layout = read_celebdf(celebdf_tree)
    assert len(layout.records) == 5
    by_path = {p.path: p.reason for p in layout.problems}
    assert "not a video file" in by_path["Celeb-real/notes.txt"]
    assert "idX_NNNN" in by_path["Celeb-real/badname.mp4"]
    assert "no such file" in by_path["Celeb-real/id7_0042.mp4"]
    assert "List_of_testing_videos.txt:5" in by_path


def test_celebdf_wrong_tree_is_a_loud_error(tmp_path):
    (tmp_path / "videos").mkdir()
    with pytest.raises(LayoutError) as e:
        read_celebdf(tmp_path)
    msg = str(e.value)
    assert "Celeb-real" in msg and "Celeb-synthesis" in msg and "videos/" in msg  # expected, and what was found
    (tmp_path / "Celeb-real").mkdir()
    (tmp_path / "Celeb-synthesis").mkdir()
    with pytest.raises(LayoutError, match="List_of_testing_videos.txt"):
        read_celebdf(tmp_path)
    with pytest.raises(LayoutError, match="unknown dataset 'celebdf3': expected one of celebdf, celebdf1"):
        read_layout("celebdf3", tmp_path)
    with pytest.raises(LayoutError, match="not a DFDC tree"):  # a real layout, the wrong tree
        read_layout("dfdc", tmp_path)


@pytest.fixture
def ffpp_tree(tmp_path):
    root = tmp_path / "FaceForensics++"
    for q in ("c23", "c40"):
        for n in ("000", "003", "071"):
            tiny_video(root / f"original_sequences/youtube/{q}/videos/{n}.mp4")
        for m in ("Deepfakes", "FaceSwap"):
            tiny_video(root / f"manipulated_sequences/{m}/{q}/videos/000_003.mp4")
            tiny_video(root / f"manipulated_sequences/{m}/{q}/videos/003_000.mp4")
    tiny_video(root / "manipulated_sequences/Deepfakes/c23/videos/071_054.mp4")
    splits = root / "splits"
    splits.mkdir()
    (splits / "train.json").write_text(json.dumps([["000", "003"]]))
    (splits / "val.json").write_text(json.dumps([["071", "054"]]))
    (splits / "test.json").write_text(json.dumps([]))
    return root


def test_ffpp_records(ffpp_tree):
    layout = read_ffpp(ffpp_tree, qualities=("raw", "c23", "c40"))
    recs = {r.video: r for r in layout.records}
    real = recs["original_sequences/youtube/raw/videos/071.mp4"]
    assert (real.label, real.identity, real.split) == (0, "071", "val")
    fake = recs["manipulated_sequences/Deepfakes/raw/videos/003_000.mp4"]
    assert (fake.label, fake.source, fake.target, fake.method, fake.split) == (1, "003", "000", "Deepfakes", "train")
    assert fake.quality_path(ffpp_tree, "c40") == ffpp_tree / "manipulated_sequences/Deepfakes/c40/videos/003_000.mp4"
    assert recs["manipulated_sequences/Deepfakes/raw/videos/071_054.mp4"].split == "val"
    assert len(recs) == 3 + 4 + 1


def test_ffpp_other_folders_are_one_problem_each(ffpp_tree):
    tiny_video(ffpp_tree / "manipulated_sequences/DeepFakeDetection/c23/videos/01_02__meeting_serious__YVGY8LOK.mp4")
    layout = read_ffpp(ffpp_tree)
    assert len(layout.records) == 8
    assert [p.path for p in layout.problems] == ["manipulated_sequences/DeepFakeDetection"]


def test_ffpp_missing_splits_and_wrong_tree(ffpp_tree, tmp_path):
    (ffpp_tree / "splits" / "test.json").unlink()
    with pytest.raises(LayoutError, match="test.json"):
        read_ffpp(ffpp_tree)
    with pytest.raises(LayoutError) as e:
        read_ffpp(tmp_path / "nothing-here")
    assert "original_sequences/youtube" in str(e.value) and "does not exist" in str(e.value)


def test_ffpp_video_outside_splits_is_reported(ffpp_tree):
    tiny_video(ffpp_tree / "original_sequences/youtube/c23/videos/999.mp4")
    layout = read_ffpp(ffpp_tree)
    assert "original_sequences/youtube/raw/videos/999.mp4" not in {r.video for r in layout.records}
    assert any(p.path.endswith("999.mp4") and "split" in p.reason for p in layout.problems)


@pytest.mark.parametrize("dataset, expected", [
    ("celebdf", "not a Celeb-DF-v2 tree"), ("celebdf1", "not a Celeb-DF-v2 tree"), ("synthetic", "not a Celeb-DF-v2 tree"),
    ("ffpp", "not a FaceForensics\\+\\+ tree"), ("dfd", "not a DeepFakeDetection tree"), ("dfdc", "not a DFDC tree"),
    ("folder", "not a real/fake folder")])
def test_every_dataset_name_reaches_its_own_reader(tmp_path, dataset, expected):
    """The registry (rccl.data.layouts.registry) sends each of DATASETS to its dataset's module: an empty
    folder fails with that reader's own message, never as an unknown dataset."""
    from rccl.data.layouts import DATASETS

    assert set(DATASETS) == {"celebdf", "celebdf1", "ffpp", "dfd", "dfdc", "folder", "synthetic"}
    with pytest.raises(LayoutError, match=expected):
        read_layout(dataset, tmp_path)


def test_the_package_keeps_the_modules_public_names():
    """rccl.data.layouts was one module; its names importers use are still there, each defined once."""
    import rccl.data.layouts as layouts
    from rccl.data.layouts import celebdf, common, dfd, dfdc, ffpp, folder, registry

    for name in layouts.__all__:
        assert hasattr(layouts, name), name
    assert layouts.VideoRecord is common.VideoRecord and layouts.QUALITIES is common.QUALITIES
    assert layouts.read_celebdf is celebdf.read_celebdf and layouts.read_ffpp is ffpp.read_ffpp
    assert layouts.read_dfd is dfd.read_dfd and layouts.read_dfdc is dfdc.read_dfdc
    assert layouts.read_folder is folder.read_folder and layouts.read_layout is registry.read_layout
