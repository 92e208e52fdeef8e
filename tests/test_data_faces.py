"""dlib face boxes and crops on real faces: scikit-image's astronaut, the shared photos (skipped when
../shared/data/faces is absent), no face on dogs.jpg, and crops from the real clip."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("av", reason="needs PyAV (pip install av): rccl.data.video decodes frames with PyAV")
pytest.importorskip("dlib", reason="needs dlib (pip install dlib-bin): the boxes checked here are dlib's")

from rccl.data.faces import FaceCropper, fill_missing_boxes  # noqa: E402
from rccl.data.video import pair_indices, probe, read_frames  # noqa: E402

FACES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "faces"
needs_faces = pytest.mark.skipif(not FACES.is_dir(), reason=f"real face data not found at {FACES} "
                                                            "(../shared/data/faces is absent in this checkout)")


def test_astronaut_face_is_found_and_cropped():
    from skimage import data

    img = data.astronaut()  # 512x512, one face around x 170-250, y 60-150
    fc = FaceCropper(crop_size=96)
    box = fc.detect(img)
    assert box is not None
    x0, y0, x1, y1 = box
    assert 140 < (x0 + x1) / 2 < 260 and 60 < (y0 + y1) / 2 < 160 and 50 < x1 - x0 < 150
    big = fc.enlarge_box(box, 512, 512)
    assert big[2] - big[0] == pytest.approx(1.3 * (x1 - x0), abs=2)
    crop = fc.crop(img, big)
    assert crop.shape == (96, 96, 3) and crop.dtype == np.uint8
    small = FaceCropper(detect_size=400).detect(img)  # detection on a downscaled frame, box in full pixels
    assert small is not None and abs(small[0] - x0) < 12 and abs(small[2] - x1) < 12


def test_enlarge_clips_to_the_frame():
    fc = FaceCropper(enlarge=2.0)
    assert fc.enlarge_box((0, 0, 20, 20), 100, 50) == (0, 0, 30, 30)
    assert fc.enlarge_box((80, 30, 100, 50), 100, 50) == (70, 20, 100, 50)
    with pytest.raises(ValueError, match="enlarge"):
        FaceCropper(enlarge=0.9)


def test_missing_boxes_take_the_nearest_detected():
    a, b = (1, 1, 5, 5), (9, 9, 20, 20)
    boxes, detected = fill_missing_boxes([None, a, None, None, b, None], positions=[0, 1, 10, 11, 40, 41])
    assert boxes == [a, a, a, a, b, b]  # frame 11 is nearer frame 1 than frame 40
    assert detected == [False, True, False, False, True, False]
    assert fill_missing_boxes([None, None])[0] == [None, None]


@needs_faces
@pytest.mark.parametrize("photo", sorted(p.relative_to(FACES).as_posix() for p in (FACES / "identities").glob("*/*")
                                         ) if FACES.is_dir() else [])
def test_shared_photos_have_a_face(photo):
    img = np.asarray(Image.open(FACES / photo).convert("RGB"))
    box = FaceCropper(detect_size=max(img.shape[:2])).detect(img)
    assert box is not None, f"no face found in {photo}"
    assert (box[2] - box[0]) * (box[3] - box[1]) > 0.01 * img.shape[0] * img.shape[1]


@needs_faces
def test_no_face_on_dogs():
    img = np.asarray(Image.open(FACES / "scenes" / "dogs.jpg").convert("RGB"))
    assert FaceCropper(detect_size=max(img.shape[:2])).detect(img) is None


@needs_faces
def test_real_clip_yields_face_crops():
    clip = FACES / "video" / "short_hamilton_clip.mp4"
    idx = [i for p in pair_indices(probe(clip).n_frames, 8) for i in p]
    frames = read_frames(clip, idx)
    fc = FaceCropper(crop_size=128)
    boxes = [fc.detect(frames[i]) for i in idx]
    assert sum(b is not None for b in boxes) >= len(idx) // 3
    filled, _ = fill_missing_boxes(boxes, positions=idx)
    crops = [fc.crop(frames[i], fc.enlarge_box(b, 640, 360)) for i, b in zip(idx, filled)]
    assert all(c.shape == (128, 128, 3) for c in crops)
    # a crop holds a face, not background: the detector finds it again in the crop, scaled up
    again = [FaceCropper(detect_size=256).detect(c) for c, b in zip(crops, boxes) if b is not None]
    assert sum(a is not None for a in again) >= len(again) // 2


def test_the_detectors_import_the_base_and_only_the_registry_imports_them():
    """No import circle: base <- detectors <- registry (the shape rccl.data.layouts has)."""
    import ast
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "rccl" / "data" / "faces"

    def faces_imports(name):
        tree = ast.parse((folder / f"{name}.py").read_text(encoding="utf-8"))
        return {n.module.rsplit(".", 1)[-1] for n in ast.walk(tree)
                if isinstance(n, ast.ImportFrom) and n.module and n.module.startswith("rccl.data.faces")}

    assert faces_imports("base") == set() and faces_imports("track") <= {"base"}
    for detector in ("dlib_hog", "dlib_cnn", "mtcnn", "cascade"):
        assert "base" in faces_imports(detector) and faces_imports(detector) <= {"base", "track"}, detector
    assert faces_imports("registry") == {"base", "dlib_hog", "dlib_cnn", "mtcnn", "cascade"}
    assert not (folder / "detection.py").exists()
