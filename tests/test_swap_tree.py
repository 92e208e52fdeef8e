"""rccl-swap's tree end to end: the folder layout it writes (real/, fake/faceswap/, splits.json,
forgeries.json, the report with a reason per photo left out), byte-identical reruns, rccl-prep on it at
raw/c23/c40, and the command's one-line errors. Photos: variants of scikit-image's astronaut (no ../shared
needed); the UTKFace check at the end uses ../shared/data/natural and is skipped without it."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

cv2 = pytest.importorskip("cv2", reason="needs OpenCV (pip install opencv-python-headless): the swap's warp and blend")
pytest.importorskip("dlib", reason="needs dlib (pip install dlib-bin): the swaps' landmarks are dlib's")
pytest.importorskip("av", reason="needs PyAV (pip install av): rccl-prep compresses with PyAV")

from rccl.cli.swap import main as swap_main  # noqa: E402
from rccl.data.layouts import LayoutError, read_layout  # noqa: E402
from rccl.data.manifest import read_manifest  # noqa: E402
from rccl.data.prep import prepare  # noqa: E402
from rccl.data.swap import PhotoLandmarker, SwapError, SwapSettings, make_swap_tree, swap_face  # noqa: E402

UTKFACE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "natural" / "utkface" / "crop_part1"
SETTINGS = SwapSettings(fractions=(0.34, 0.33, 0.33), seed=0)


def astronaut_photos(folder: Path) -> Path:
    """Six 200x200 photos of one face, mirrored, turned and zoomed (the geometry of six people, enough to
    test the plumbing), and one photo without a face."""
    data = pytest.importorskip("skimage.data")
    face = np.ascontiguousarray(data.astronaut()[10:270, 80:340])
    folder.mkdir(parents=True)
    for name, mirror, angle, zoom in (("a", 0, 0, 1.0), ("b", 1, 0, 1.0), ("c", 0, 9, 1.0), ("d", 0, -9, 1.05),
                                      ("e", 1, 7, 0.95), ("f", 1, -6, 1.1)):
        img = face[:, ::-1] if mirror else face
        m = cv2.getRotationMatrix2D((130, 130), angle, zoom)
        img = cv2.warpAffine(np.ascontiguousarray(img), m, (260, 260), borderMode=cv2.BORDER_REFLECT_101)
        Image.fromarray(cv2.resize(img, (200, 200), interpolation=cv2.INTER_AREA)).save(folder / f"{name}.jpg",
                                                                                         quality=90)
    Image.new("RGB", (200, 200), (128, 128, 128)).save(folder / "wall.png")
    return folder


def digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    base = tmp_path_factory.mktemp("swap")
    photos = astronaut_photos(base / "photos")
    out = base / "tree"
    report = make_swap_tree(photos, out, SETTINGS, workers=1, progress=False)
    return photos, out, report


def test_tree_is_a_folder_layout_with_origins_and_one_split_per_photo(tree):
    photos, out, report = tree
    assert report["excluded"] == {"wall.png": "dlib's HOG detector finds no face (in the photo, nor padded by 25% "
                                              "of its side)"}
    assert (report["counts"]["real"], report["counts"]["fake"]) == (6, 6)
    for name in "abcdef":  # the naturals are the photos, byte for byte
        assert (out / "real" / f"{name}.jpg").read_bytes() == (photos / f"{name}.jpg").read_bytes()
    splits = json.loads((out / "splits.json").read_text())
    forgeries = json.loads((out / "forgeries.json").read_text())
    split_of = {p: s for s, paths in splits.items() for p in paths}
    assert sum(len(v) for v in splits.values()) == len(split_of) == 12  # each file in one split
    assert {s: len(v) for s, v in splits.items()} == {"train": 4, "val": 4, "test": 4}
    for fake, origin in forgeries.items():
        assert split_of[fake] == split_of[origin["background"]] == split_of[origin["face"]]
        assert origin["background"] != origin["face"]
    layout = read_layout("folder", out)
    assert layout.problems == []
    fakes = {r.video: r for r in layout.records if r.label == 1}
    assert set(fakes) == set(forgeries) and {r.method for r in fakes.values()} == {"faceswap"}
    assert all((r.source, r.target) == (forgeries[v]["background"], forgeries[v]["face"]) for v, r in fakes.items())


def test_a_fake_is_the_swap_of_its_photos_and_the_target_outside_the_face(tree):
    _, out, _ = tree
    fitter = PhotoLandmarker()
    for fake, origin in json.loads((out / "forgeries.json").read_text()).items():
        target = np.asarray(Image.open(out / origin["background"]).convert("RGB"))
        donor = np.asarray(Image.open(out / origin["face"]).convert("RGB"))
        result = swap_face(target, fitter.fit(target).landmarks, donor, fitter.fit(donor).landmarks)
        saved = np.asarray(Image.open(out / fake))
        assert np.array_equal(saved, result.image)
        near = cv2.dilate(result.hull.astype(np.uint8), np.ones((2 * result.reach + 1,) * 2, np.uint8)) > 0
        assert np.array_equal(saved[~near], target[~near]) and (~near).sum() > 1000


def test_same_seed_gives_identical_files_through_the_command(tree, capsys):
    photos, out, _ = tree
    before = digest(out)
    assert swap_main([str(photos), "--out", str(out), "--train", "0.34", "--val", "0.33", "--test", "0.33",
                      "--seed", "0", "--overwrite", "--workers", "1", "--no-progress"]) == 0
    assert "6 natural photos and 6 face swaps" in capsys.readouterr().out
    assert digest(out) == before


def test_rccl_prep_reads_the_tree_at_every_quality(tree, tmp_path):
    _, out, _ = tree
    manifest = prepare("folder", out, tmp_path / "prep", qualities=("raw", "c23", "c40"), workers=1, crop_size=64,
                       detector="dlib", preset="ultrafast", progress=False, log=None)
    rows = read_manifest(manifest, check_files=True)
    assert len(rows) == 12 * 3
    assert {(r["quality"], r["compression"]) for r in rows} == {("raw", "raw"), ("c23", "qp23"), ("c40", "qp40")}
    assert all(r["landmarks_problem"] == "" for r in rows)
    boxes = {}
    for r in rows:
        boxes.setdefault(r["video"], set()).add(tuple(r["box"]))
    assert all(len(b) == 1 for b in boxes.values())                 # the raw box serves every quality
    fake = next(r for r in rows if r["label"] == 1)
    assert fake["source"].startswith("real/") and fake["target"].startswith("real/") and fake["method"] == "faceswap"


@pytest.mark.parametrize("argv,message", [
    (["{tmp}/absent", "--out", "{tmp}/o"], "absent: no such folder or list file"),
    (["{photos}", "--out", "{tree}"], "the folder is not empty"),
    (["{photos}", "--out", "{photos}", "--overwrite"], "--overwrite replaces only a tree made by rccl-swap"),
    (["{photos}", "--out", "{tmp}/o", "--train", "0.9"], "they must sum to at most 1"),
    (["{photos}", "--out", "{tmp}/o", "--limit", "3", "--train", "0.8", "--val", "0.1", "--test", "0.1"],
     "split val: 1 photo(s)"),
    (["{photos}", "--out", "{tmp}/o", "--swaps-per-target", "0"], "--swaps-per-target 0: must be at least 1"),
    (["{photos}", "--out", "{tmp}/o", "--device", "cuda"], "--device cuda: rccl-swap computes on the CPU only"),
])
def test_bad_inputs_are_one_line_errors(tree, tmp_path, capsys, argv, message):
    photos, out, _ = tree
    argv = [a.format(tmp=tmp_path, photos=photos, tree=out) for a in argv]
    assert swap_main(argv + ["--no-progress", "--workers", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("rccl-swap: error: ") and message in err[-1]
    assert not (tmp_path / "o").exists()                            # nothing written for a bad input


def test_forgeries_json_gives_the_folder_layouts_source_and_target(tmp_path):
    for rel in ("real/a.jpg", "real/b.jpg", "fake/x/ab.png", "fake/x/ba.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    (tmp_path / "forgeries.json").write_text(json.dumps({
        "fake/x/ab.png": {"background": "real/a.jpg", "face": "real/b.jpg"},
        "fake/x/ba.png": {"background": "real/b.jpg", "face": "real/zz.jpg"},
        "fake/x/gone.png": {"background": "real/a.jpg", "face": "real/b.jpg"}}))
    layout = read_layout("folder", tmp_path)
    recs = {r.video: r for r in layout.records}
    assert (recs["fake/x/ab.png"].source, recs["fake/x/ab.png"].target) == ("real/a.jpg", "real/b.jpg")
    assert (recs["real/a.jpg"].source, recs["real/a.jpg"].identity) == ("", "")
    problems = {p.path: p.reason for p in layout.problems}
    assert "named in forgeries.json but not a video or image under fake/" in problems["fake/x/gone.png"]
    assert "its face in forgeries.json, real/zz.jpg, is not a video or image under real/" in problems["fake/x/ba.png"]
    (tmp_path / "forgeries.json").write_text(json.dumps({"fake/x/ab.png": {"source": "real/a.jpg"}}))
    with pytest.raises(LayoutError, match="forgeries.json: entry 'fake/x/ab.png': expected"):
        read_layout("folder", tmp_path)


def test_too_few_photos_with_landmarks_is_an_error(tmp_path):
    (tmp_path / "p").mkdir()
    for k in range(3):
        Image.new("RGB", (64, 64), (40 * k, 90, 90)).save(tmp_path / "p" / f"{k}.png")
    with pytest.raises(SwapError, match=r"0 of 3 photo\(s\) have usable landmarks; at least 2 .* 0.png: dlib's"):
        make_swap_tree(tmp_path / "p", tmp_path / "o", SETTINGS, progress=False)
    assert not (tmp_path / "o").exists()


def test_utkface_swaps_keep_the_targets_landmarks(tmp_path):
    """Real, different people (UTKFace): the fakes' re-fitted landmarks lie within a few pixels of their
    targets'; the photo dlib's detector misses is reported with its reason."""
    if not UTKFACE.is_dir():
        pytest.skip(f"UTKFace photos not found at {UTKFACE} (../shared/data/natural is absent in this checkout)")
    names = ["22_0_0_20170103180152583.jpg.chip.jpg", "22_0_0_20170103234830581.jpg.chip.jpg",
             "22_0_0_20170104002331117.jpg.chip.jpg", "22_0_0_20170104003948607.jpg.chip.jpg",
             "22_0_0_20170104214301269.jpg.chip.jpg", "22_0_0_20170104225920241.jpg.chip.jpg",
             "18_1_0_20170109212906609.jpg.chip.jpg"]  # the last: no face for dlib's HOG, padded or not
    missing = [n for n in names if not (UTKFACE / n).is_file()]
    if missing:
        pytest.skip(f"UTKFace photos {missing} not in {UTKFACE}")
    (tmp_path / "list.txt").write_text("".join(f"{UTKFACE / n}\n" for n in names))
    report = make_swap_tree(tmp_path / "list.txt", tmp_path / "tree", SwapSettings(fractions=(1, 0, 0)),
                            progress=False)
    assert list(report["excluded"]) == [names[-1]] and "finds no face" in report["excluded"][names[-1]]
    fitter = PhotoLandmarker()
    errors = []
    for fake, origin in json.loads((tmp_path / "tree" / "forgeries.json").read_text()).items():
        target = fitter.fit(np.asarray(Image.open(tmp_path / "tree" / origin["background"]).convert("RGB")))
        swapped = fitter.fit(np.asarray(Image.open(tmp_path / "tree" / fake)))
        errors.append(np.linalg.norm(swapped.landmarks - target.landmarks, axis=1).mean())
    assert len(errors) == 6 and np.median(errors) < 3.0 and max(errors) < 5.0, errors
