"""rccl-prep end to end on a tiny synthetic tree: the manifest, resumability (a second run does nothing),
kill safety, sharding, settings checks, and bad inputs that are reported while the run goes on."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

av = pytest.importorskip("av", reason="needs PyAV (pip install av): rccl-prep decodes and compresses video with PyAV")

from PIL import Image  # noqa: E402

from rccl.data import prep as prep_mod  # noqa: E402
from rccl.data.prep import outdir as prep_outdir  # noqa: E402
from rccl.data.compress import h264_settings  # noqa: E402
from rccl.data.manifest import REQUIRED_COLUMNS, read_manifest  # noqa: E402
from rccl.data.prep import PrepConfig, PrepError, prepare, run_prep  # noqa: E402
from rccl.data.synth import make_synthetic  # noqa: E402

TINY = dict(n_identities=2, videos_per_identity=2, n_youtube=1, n_frames=8, size=64, workers=1, progress=False)
N_VIDEOS = 2 * 2 * 2 + 1
PREP = dict(pairs_per_video=2, crop_size=32, preset="ultrafast", progress=False, log=None)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_synthetic(tmp_path_factory.mktemp("synth") / "tree", **TINY)


def _files(out: Path) -> dict:
    return {p.relative_to(out).as_posix(): p.stat().st_mtime_ns for p in out.rglob("*")
            if p.is_file() and p.name not in ("manifest.jsonl", "prep_report.json")}


def test_end_to_end_then_nothing_to_do(tree, tmp_path):
    out = tmp_path / "out"
    rows = read_manifest(prepare("synthetic", tree, out, workers=2, **PREP), check_files=True)
    assert len(rows) == N_VIDEOS * 3 * 2 * 2
    assert all(c in r for r in rows for c in REQUIRED_COLUMNS)
    r0 = next(r for r in rows if r["video"] == "Celeb-synthesis/id1_id0_0001.mp4" and r["quality"] == "c40")
    assert (r0["label"], r0["source"], r0["target"], r0["split"], r0["compression"]) == (
        1, "id1_0001", "id0", "test", "qp40")
    assert r0["path"] == f"crops/c40/Celeb-synthesis/id1_id0_0001/{r0['frame']:06d}.png"
    assert Image.open(r0["abspath"]).size == (32, 32)
    # boxes found on raw are reused by every quality; pairs are consecutive frames
    by_key = {}
    for r in rows:
        by_key.setdefault((r["video"], r["frame"]), set()).add(tuple(r["box"]))
    assert all(len(b) == 1 for b in by_key.values())
    frames = {}
    for r in rows:
        frames.setdefault((r["video"], r["quality"], r["pair"]), []).append(r["frame"])
    assert all(sorted(f) == [f[0], f[0] + 1] or sorted(f)[1] == sorted(f)[0] + 1 for f in frames.values())
    assert all(r["box_source"] == "truth" and r["detected"] is False for r in rows)  # procedural faces
    s = h264_settings(out / "videos" / "c23" / "Celeb-real" / "id0_0000.mp4")
    assert (s["codec"], s["rc"], s["qp"]) == ("h264", "cqp", 23)

    before = _files(out)
    manifest = (out / "manifest.jsonl").read_text()
    summary = run_prep(PrepConfig("synthetic", str(tree), str(out), pairs_per_video=2, crop_size=32,
                                  preset="ultrafast", workers=2), progress=False, log=None)
    assert (summary.prepared, summary.cached, summary.crops_written) == (0, N_VIDEOS, 0)
    assert _files(out) == before and (out / "manifest.jsonl").read_text() == manifest


def test_new_quality_reuses_boxes_and_crops(tree, tmp_path):
    out = tmp_path / "out"
    prepare("synthetic", tree, out, qualities=("raw",), workers=1, **PREP)
    raw_crops = _files(out / "crops")
    rows = read_manifest(prepare("synthetic", tree, out, qualities=("raw", "c40"), workers=1, **PREP))
    assert {r["quality"] for r in rows} == {"raw", "c40"}
    assert {k: v for k, v in _files(out / "crops").items() if k.startswith("raw/")} == raw_crops


def test_other_settings_are_refused(tree, tmp_path):
    prepare("synthetic", tree, tmp_path / "out", qualities=("raw",), workers=1, **PREP)
    settings = tmp_path / "out" / "prep.json"  # made before a setting existed: that setting's default
    settings.write_text(json.dumps({k: v for k, v in json.loads(settings.read_text()).items() if k != "decoder"}))
    prepare("synthetic", tree, tmp_path / "out", qualities=("raw",), workers=1, **PREP)
    with pytest.raises(PrepError, match="crop_size.*32, 48"):
        prepare("synthetic", tree, tmp_path / "out", qualities=("raw",), workers=1, **{**PREP, "crop_size": 48})
    with pytest.raises(PrepError, match="qualities"):
        prepare("synthetic", tree, tmp_path / "o2", qualities=("c99",), **PREP)
    with pytest.raises(PrepError, match="decoder"):
        prepare("synthetic", tree, tmp_path / "o4", decoder="nvdec", **PREP)
    with pytest.raises(PrepError, match="0 <= I < N"):
        prepare("synthetic", tree, tmp_path / "o3", shard=(2, 2), **PREP)


def test_shards_add_up(tree, tmp_path):
    out = tmp_path / "out"
    kw = dict(qualities=("raw",), workers=1, **PREP)
    part = read_manifest(prepare("synthetic", tree, out, shard=(0, 2), **kw))
    assert 0 < len({r["video"] for r in part}) < N_VIDEOS
    full = read_manifest(prepare("synthetic", tree, out, shard=(1, 2), **kw))
    assert len({r["video"] for r in full}) == N_VIDEOS


def test_interrupted_write_leaves_no_half_file(tree, tmp_path, monkeypatch):
    """An interrupt halfway through writing the 7th crop (prep's test-only hook) leaves neither a half crop
    nor the video's rows; the rerun finishes and matches a clean run."""
    out = tmp_path / "out"
    monkeypatch.setenv("RCCL_TEST_DIE_AT_CROP", "7:interrupt")
    monkeypatch.setattr(prep_outdir, "_crops_started", 0)
    with pytest.raises(KeyboardInterrupt):
        prepare("synthetic", tree, out, qualities=("raw",), workers=1, **PREP)
    monkeypatch.delenv("RCCL_TEST_DIE_AT_CROP")
    crops = [p for p in (out / "crops").rglob("*") if p.is_file()]
    assert len(crops) == 6 and all(not p.name.startswith(".") for p in crops)  # the temporary file is gone
    for p in crops:
        Image.open(p).load()  # every crop on disk is whole
    # the first video (4 crops) was finished; the second died at its 3rd crop: no rows for it
    assert [p.name for p in (out / "parts").rglob("*.jsonl")] == ["id0_0000.mp4.jsonl"]
    assert not (out / "manifest.jsonl").exists()
    rows = read_manifest(prepare("synthetic", tree, out, qualities=("raw",), workers=1, **PREP))
    clean = read_manifest(prepare("synthetic", tree, tmp_path / "clean", qualities=("raw",), workers=1, **PREP))
    strip = lambda rs: sorted(json.dumps({k: v for k, v in r.items() if k != "abspath"}, sort_keys=True) for r in rs)
    assert strip(rows) == strip(clean)


def test_sigkill_then_resume(tree, tmp_path):
    """SIGKILL halfway through the 7th crop's write (the hook, not a sleep): whole crops only, and a
    rerun completes the manifest."""
    out = tmp_path / "out"
    code = (f"from rccl.data.prep import prepare; prepare('synthetic', {str(tree)!r}, {str(out)!r}, workers=1, "
            f"pairs_per_video=4, crop_size=32, preset='ultrafast', progress=False, log=None)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1],
                          env={**os.environ, "RCCL_TEST_DIE_AT_CROP": "7:kill"}, timeout=300)
    assert proc.returncode == -signal.SIGKILL
    visible = [p for p in (out / "crops").rglob("*.png") if not p.name.startswith(".")]
    assert len(visible) == 6  # the first video's raw pass (8 crops) died at its 7th
    for p in visible:
        Image.open(p).load()
    assert not list((out / "parts").rglob("*.jsonl"))
    rows = read_manifest(prepare("synthetic", tree, out, workers=1, **{**PREP, "pairs_per_video": 4}),
                         check_files=True)
    assert len(rows) == N_VIDEOS * 3 * 8


def test_bad_inputs_are_reported_and_the_run_goes_on(tree, tmp_path):
    root = tmp_path / "tree"
    shutil.copytree(tree, root)
    good = root / "Celeb-real" / "id0_0000.mp4"
    (root / "Celeb-real" / "id8_0000.mp4").write_bytes(os.urandom(3000))                 # corrupt
    (root / "Celeb-real" / "id8_0001.mp4").write_bytes(b"")                              # empty
    data = good.read_bytes()
    (root / "Celeb-real" / "id8_0002.mp4").write_bytes(data[: len(data) // 2])           # truncated
    with av.open(str(root / "Celeb-real" / "id8_0003.mp4"), "w", format="mp4") as c:     # zero frames
        s = c.add_stream("libx264", rate=25)
        s.width = s.height = 64
        c.start_encoding()  # the header with its track, and no frame at all
    (root / "Celeb-real" / "notes.txt").write_text("not a video")                        # non-video file
    with open(root / "List_of_testing_videos.txt", "a") as f:
        f.write("1 Celeb-real/id8_0099.mp4\n")                                           # names a missing file
    summary = run_prep(PrepConfig("synthetic", str(root), str(tmp_path / "out"), qualities=("raw", "c23"),
                                  pairs_per_video=2, crop_size=32, preset="ultrafast", workers=2),
                       progress=False, log=None)
    assert set(summary.skipped) == {f"Celeb-real/id8_000{i}.mp4" for i in range(4)}
    reasons = {v: r["raw"] for v, r in summary.skipped.items()}
    assert "not a readable video" in reasons["Celeb-real/id8_0000.mp4"]
    assert "empty file" in reasons["Celeb-real/id8_0001.mp4"]
    assert "id8_0002.mp4" in reasons["Celeb-real/id8_0002.mp4"]
    assert "no video stream" in reasons["Celeb-real/id8_0003.mp4"]  # an empty track is not even listed
    problems = {p["path"]: p["reason"] for p in summary.problems}
    assert "not a video" in problems["Celeb-real/notes.txt"]
    assert "no such file" in problems["Celeb-real/id8_0099.mp4"]
    rows = read_manifest(summary.manifest, check_files=True)
    assert {r["video"] for r in rows} == {r.video for r in prep_mod.read_layout("synthetic", tree).records}
    report = json.loads((tmp_path / "out" / "prep_report.json").read_text())
    assert set(report["skipped"]) == set(summary.skipped)
    text = summary.text()
    assert "skipped Celeb-real/id8_0001.mp4 [raw]: " in text and "notes.txt" in text


FACES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "faces"
CLIP = FACES / "video" / "short_hamilton_clip.mp4"


@pytest.mark.skipif(not CLIP.is_file(), reason=f"real clip not found at {CLIP} (../shared/data/faces is absent)")
def test_ffpp_detects_on_c23_when_raw_is_absent(tmp_path):
    """FF++ as often downloaded (c23 and c40 only): boxes come from c23 and serve c40; the real clip's face
    is found by the default detector (dlib's HOG, MTCNN where HOG finds none), each box naming which."""
    root = tmp_path / "ffpp"
    _link_ffpp_tree(root, CLIP)
    rows = read_manifest(prepare("ffpp", root, tmp_path / "out", qualities=("c23", "c40"), workers=1,
                                 **{**PREP, "pairs_per_video": 4}), check_files=True)
    assert len(rows) == 2 * 2 * 8  # 2 videos, 2 qualities, 4 pairs
    assert {r["quality"] for r in rows} == {"c23", "c40"} and {r["compression"] for r in rows} == {"as distributed"}
    fake = [r for r in rows if r["label"] == 1]
    assert {(r["video"], r["source"], r["target"], r["method"], r["split"]) for r in fake} == {
        ("manipulated_sequences/Deepfakes/raw/videos/000_003.mp4", "000", "003", "Deepfakes", "train")}
    # the clip's turned faces are MTCNN's; where the subject is lost, the nearest box of its track
    assert {r["box_source"] for r in rows} <= {"dlib", "mtcnn", "nearest"} and "dlib" in {r["box_source"] for r in rows}
    assert all(r["detector"] == r["box_source"] for r in rows if r["detected"])
    assert all(r["detector"] in ("dlib", "mtcnn") for r in rows)
    assert sum(r["detected"] for r in rows) >= len(rows) // 4
    boxes = json.loads((tmp_path / "out" / "boxes" / "original_sequences/youtube/raw/videos/000.mp4.json").read_text())
    assert boxes["detected_on"] == "c23"


def test_cli(tree, tmp_path, capsys):
    from rccl.cli.prep import main

    args = ["--dataset", "synthetic", "--root", str(tree), "--qualities", "raw", "--pairs", "1", "--crop-size", "16",
            "--workers", "1", "--no-progress", "--device", "cpu"]
    assert main(args + ["--out", str(tmp_path / "o")]) == 0
    assert "manifest rows: 18" in capsys.readouterr().err  # the summary is a diagnostic: logging, on stderr
    assert main(args + ["--out", str(tmp_path / "q"), "-q"]) == 0
    assert capsys.readouterr().err == ""  # -q silences it
    assert main(args + ["--out", str(tmp_path / "r"), "--decoder", "dali"]) == 2
    assert "--decoder dali decodes on the GPU, but --device cpu" in capsys.readouterr().err
    assert main(["--dataset", "celebdf", "--root", str(tmp_path), "--out", str(tmp_path / "p"), "--no-progress"]) == 2
    assert "not a Celeb-DF-v2 tree" in capsys.readouterr().err


def _link_ffpp_tree(root: Path, clip: Path) -> None:
    for q in ("c23", "c40"):
        for rel in ("original_sequences/youtube/{q}/videos/000.mp4",
                    "manipulated_sequences/Deepfakes/{q}/videos/000_003.mp4"):
            dst = root / rel.format(q=q)
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(clip, dst)
    (root / "splits").mkdir()
    (root / "splits" / "train.json").write_text(json.dumps([["000", "003"]]))
    (root / "splits" / "val.json").write_text("[]")
    (root / "splits" / "test.json").write_text("[]")


def test_true_boxes_build_no_detector(tree, tmp_path, monkeypatch):
    """A procedural synthetic tree takes its true boxes: no face detector is built (the demo runs where
    facenet-pytorch, MTCNN's package, is not installed)."""
    import rccl.data.faces.crop as faces_crop

    def refuse(*a, **k):
        raise AssertionError("a face detector was built for true boxes")

    monkeypatch.setattr(faces_crop, "get_detector", refuse)
    rows = read_manifest(prepare("synthetic", tree, tmp_path / "out", qualities=("raw",), workers=1, **PREP))
    assert rows and all(r["box_source"] == "truth" for r in rows)
