"""The 68 landmarks rccl-prep stores per crop (rccl.data.faces.landmarks), on real faces and real footage from
../shared/data (skipped with the reason where it is absent), and self-blending of real crops."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("av", reason="needs PyAV (pip install av): rccl-prep decodes video with PyAV")
pytest.importorskip("dlib", reason="needs dlib (pip install dlib-bin): the landmarks are dlib's shape predictor")

from rccl.data.blend import self_blend, training_set, why_no_landmarks  # noqa: E402
from rccl.data.blend.mask import reach  # noqa: E402
from rccl.data.faces import FaceCropper  # noqa: E402
from rccl.data.faces.landmarks import LandmarkError, LandmarkPredictor, box_in_crop, crop_landmarks, default_weights  # noqa: E402
from rccl.data.manifest import read_manifest  # noqa: E402
from rccl.data.prep import prepare  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FACES, REAL = SHARED / "faces", SHARED / "real"
needs_faces = pytest.mark.skipif(not FACES.is_dir(), reason=f"real faces not found at {FACES} (../shared is absent)")
needs_real = pytest.mark.skipif(not REAL.is_dir(), reason=f"real deepfake samples not found at {REAL} (../shared is absent)")
PHOTOS = ["identities/obama/obama2.jpg", "identities/biden/biden2.jpg", "identities/kit_harington/john1.jpeg",
          "scenes/Tom_Cruise_avp_2014_4.jpg"]


def _real_crop(name: str, size: int = 256):
    frame = np.asarray(Image.open(FACES / name).convert("RGB"))
    cropper = FaceCropper(detector="dlib", crop_size=size)
    tight = cropper.detect(frame)
    box = cropper.enlarge_box(tight, frame.shape[1], frame.shape[0])
    return cropper.crop(frame, box), box_in_crop(tight, box, size)


@needs_faces
@pytest.mark.parametrize("name", PHOTOS)
def test_landmarks_of_real_faces_are_in_crop_pixels(name):
    crop, tight = _real_crop(name)
    pts, problem = crop_landmarks(LandmarkPredictor(), crop, tight)
    assert problem == "" and len(pts) == 68
    p = np.array(pts)
    assert (p >= -2).all() and (p <= 258).all()
    brows, eyes, nose_tip, mouth, chin = p[17:27, 1].mean(), p[36:48, 1].mean(), p[33, 1], p[48:68, 1].mean(), p[8, 1]
    assert brows < eyes < nose_tip < mouth < chin  # the iBUG order, top to bottom, in the crop's frame
    left_eye, right_eye = p[36:42, 0].mean(), p[42:48, 0].mean()
    assert left_eye < p[30, 0] < right_eye  # the nose between the eyes (image left = the subject's right)


@needs_faces
def test_self_blending_a_real_crop():
    crop, tight = _real_crop(PHOTOS[0], size=320)
    pts, _ = crop_landmarks(LandmarkPredictor(), crop, tight)
    x = torch.from_numpy(crop.copy()).permute(2, 0, 1)[None].repeat(3, 1, 1, 1)
    fake, mask, _ = self_blend(x, torch.tensor(pts).repeat(3, 1, 1), generator=torch.Generator().manual_seed(0))
    p = np.array(pts)
    changed = (fake.int() - x.int()).abs().amax(dim=1) > 0
    ys, xs = torch.nonzero(changed.any(0), as_tuple=True)
    r = reach(320)  # nothing changes beyond the landmarks' box grown by the reach
    assert xs.min() >= p[:, 0].min() - r and xs.max() <= p[:, 0].max() + r
    assert ys.min() >= p[:, 1].min() - r and ys.max() <= p[:, 1].max() + r
    nose = (int(p[30, 1]), int(p[30, 0]))
    assert changed[:, nose[0], nose[1]].all() and (mask[:, 0, nose[0], nose[1]] > 0.2).all()


@needs_faces
def test_prep_stores_landmarks_per_crop_of_a_real_clip(tmp_path):
    root = tmp_path / "folder"
    (root / "real").mkdir(parents=True)
    (root / "real" / "clip.mp4").symlink_to(FACES / "video" / "short_hamilton_clip.mp4")
    (root / "fake").mkdir()
    (root / "fake" / "photo.jpg").symlink_to(FACES / PHOTOS[1])
    rows = read_manifest(prepare("folder", root, tmp_path / "out", qualities=("raw", "c40"), workers=1,
                                 pairs_per_video=2, crop_size=128, progress=False, log=None))
    assert len(rows) == 10  # the clip: 2 pairs at raw and c40; the photo: one crop at raw and at c40
    assert {r["compression"] for r in rows if r["video"] == "fake/photo.jpg"} == {"raw", "qp40"}
    for r in rows:  # a fitted set, or a reason; never a row without either
        assert (r["landmarks"] is None) == bool(r["landmarks_problem"])
    fitted = [r for r in rows if r["landmarks"] is not None]
    assert len(fitted) >= 8
    assert all(np.array(r["landmarks"]).shape == (68, 2) and why_no_landmarks(r) is None for r in fitted)
    by_frame = {}
    for r in rows:  # fitted once per frame: c40 carries raw's set
        by_frame.setdefault((r["video"], r["frame"]), []).append(r["landmarks"])
    assert all(sets == sets[:1] * len(sets) for sets in by_frame.values()) and len(by_frame) == 5
    report = json.loads((tmp_path / "out" / "prep_report.json").read_text())
    assert sum(report["landmarks"].values()) == 10
    assert training_set(rows, "sbi").pseudo_fakes == sum(r["label"] == 0 for r in fitted)


@needs_real
def test_prep_stores_landmarks_on_real_dfdc_footage(tmp_path):
    rows = read_manifest(prepare("dfdc", REAL / "dfdc", tmp_path / "out", qualities=("raw",), workers=1,
                                 pairs_per_video=1, crop_size=128, detector="dlib", progress=False, log=None))
    assert {r["video"] for r in rows} and all("landmarks" in r for r in rows)
    fitted = [r for r in rows if r["landmarks"] is not None]
    assert len(fitted) >= len(rows) // 2
    assert all(why_no_landmarks(r) is None for r in fitted)
    assert all(r["landmarks_problem"] for r in rows if r["landmarks"] is None)


def test_no_landmarks_flag_and_missing_model(tmp_path, monkeypatch):
    import importlib.util

    from rccl.cli.prep import main

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "face_recognition_models" else real_find_spec(name, *a))
    with pytest.raises(LandmarkError, match="pip install face_recognition_models"):
        default_weights()
    bad = tmp_path / "model.dat"
    bad.write_bytes(b"not a model")
    with pytest.raises(LandmarkError, match="dlib cannot read it"):
        LandmarkPredictor(str(bad)).predict(np.zeros((32, 32, 3), np.uint8), [4, 4, 28, 28])
    with pytest.raises(LandmarkError, match="no such file"):
        LandmarkPredictor(str(tmp_path / "gone.dat")).predict(np.zeros((32, 32, 3), np.uint8), [4, 4, 28, 28])
    assert main(["--dataset", "folder", "--root", str(tmp_path), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
