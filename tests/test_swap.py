"""Face swaps (rccl.data.swap): the warp, the colour match, the blend's footprint and determinism on made-up
landmarks and textures; the landmark check on a real face (scikit-image's astronaut, no ../shared needed);
the plan's splits, donors and errors. The tree, rccl-prep on it and the CLI: tests/test_swap_tree.py."""
from __future__ import annotations

import re

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2", reason="needs OpenCV (pip install opencv-python-headless): the swap's warp and blend")
pytest.importorskip("av", reason="needs PyAV (pip install av): rccl.data.swap reads photos as rccl-prep does")

from rccl.data.swap import PhotoLandmarker, swap_face  # noqa: E402
from rccl.data.swap.colour import match_colour  # noqa: E402
from rccl.data.swap.compose import face_hull  # noqa: E402
from rccl.data.swap.plan import (SwapError, assign_splits, compile_pattern, group_key, list_photos,  # noqa: E402
                                 pair_donors)
from rccl.data.swap.warp import warp_face, with_ring  # noqa: E402


def face_points(cx: float, cy: float, rx: float, ry: float, seed: int) -> np.ndarray:
    """68 points laid out like dlib's: jaw (0-16) on the lower half of an ellipse, brows (17-26) on its top,
    the other 41 inside, jittered; enough for a hull, a ring and a triangulation."""
    rng = np.random.default_rng(seed)
    t = np.linspace(np.pi, 0, 17)
    jaw = np.stack([cx - rx * np.cos(t), cy + ry * np.sin(t)], 1)
    u = np.linspace(np.pi * 0.9, np.pi * 0.1, 10)
    brows = np.stack([cx - 0.9 * rx * np.cos(u), cy - 0.8 * ry * np.sin(u)], 1)
    inner = np.stack([cx + rng.uniform(-0.6, 0.6, 41) * rx, cy + rng.uniform(-0.5, 0.7, 41) * ry], 1)
    m = np.linspace(0, 2 * np.pi, 8, endpoint=False)  # 60-67, the inner lips: a closed mouth, 1 px high
    inner[60 - 27:] = np.stack([cx + 0.3 * rx * np.cos(m), cy + 0.5 * ry + 0.5 * np.sin(m)], 1)
    return np.concatenate([jaw, brows, inner]).astype(np.float32)


def texture(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (5, 5), 1.5)


TARGET_PTS = face_points(100, 105, 60, 70, 0)
DONOR_PTS = face_points(80, 90, 50, 62, 1)


@pytest.mark.parametrize("blend", ["feather", "poisson"])
def test_outside_the_dilated_hull_the_target_is_unchanged_and_inside_the_donor_shows(blend):
    target, donor = texture(200, 190, 0), texture(170, 160, 1)
    r = swap_face(target, TARGET_PTS, donor, DONOR_PTS, blend=blend)
    assert r.image.shape == target.shape and r.image.dtype == np.uint8
    near = cv2.dilate(r.hull.astype(np.uint8), np.ones((2 * r.reach + 1,) * 2, np.uint8)) > 0
    assert np.array_equal(r.image[~near], target[~near])           # bit for bit outside the mask's reach
    assert (r.weight[~near] == 0).all()
    core = cv2.erode(r.hull.astype(np.uint8), np.ones((41, 41), np.uint8)) > 0
    changed = (r.image != target).any(-1)
    assert core.sum() > 1000 and changed[core].mean() > 0.95
    # inside, the detail is the warped donor's (Poisson keeps its gradients, not its colours), not the target's
    face = match_colour(warp_face(donor, DONOR_PTS, TARGET_PTS, target.shape[:2])[0], target, r.hull)
    detail = lambda x: cv2.Laplacian(x.astype(np.float32), cv2.CV_32F)[core]  # noqa: E731
    to_donor, to_target = (np.abs(detail(r.image) - detail(x)).mean() for x in (face, target))
    assert to_donor < 0.2 * to_target, (to_donor, to_target)


@pytest.mark.parametrize("blend", ["feather", "poisson"])
def test_an_open_target_mouth_keeps_its_inside(blend):
    target_pts = TARGET_PTS.copy()
    t = np.linspace(0, 2 * np.pi, 8, endpoint=False)
    target_pts[60:68] = np.stack([100 + 22 * np.cos(t), 140 + 12 * np.sin(t)], 1)  # an open mouth, ~2 % of the face
    target, donor = texture(200, 190, 0), texture(170, 160, 1)
    hole = cv2.erode(face_hull(target_pts[60:68], 200, 190).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    kept = swap_face(target, target_pts, donor, DONOR_PTS, blend=blend)
    assert not kept.mask[hole].any() and kept.hull[hole].all()
    assert np.abs(kept.image[hole].astype(int) - target[hole]).max() <= 1  # the target's own mouth
    swapped = swap_face(target, target_pts, donor, DONOR_PTS, blend=blend, mouth="donor")
    assert swapped.mask[hole].all() and np.abs(swapped.image[hole].astype(int) - target[hole]).mean() > 10
    closed = swap_face(target, TARGET_PTS, donor, DONOR_PTS, blend=blend)
    assert np.array_equal(closed.mask, closed.hull)                 # a closed mouth is swapped with the face


def test_hull_mask_is_the_landmarks_hull():
    hull = face_hull(TARGET_PTS, 200, 190)
    expected = np.zeros((200, 190), np.uint8)
    cv2.fillConvexPoly(expected, np.round(cv2.convexHull(TARGET_PTS)[:, 0] * 16).astype(np.int32), 1, cv2.LINE_8, 4)
    assert (hull != expected.astype(bool)).mean() < 0.01           # differs on boundary pixels only


def test_warp_matches_scikit_image_piecewise_affine():
    """The rasterised-triangle warp is the piecewise-affine map of scikit-image, to rounding."""
    transform = pytest.importorskip("skimage.transform")
    donor = cv2.GaussianBlur(texture(170, 160, 1), (0, 0), 4)  # smooth: remap's 1/32-pixel grid costs little
    warped, covered = warp_face(donor, DONOR_PTS, TARGET_PTS, (200, 190))
    tf = transform.PiecewiseAffineTransform.from_estimate(with_ring(TARGET_PTS), with_ring(DONOR_PTS))
    ref = transform.warp(donor, tf, output_shape=(200, 190), order=1, mode="reflect", preserve_range=True)
    inner = cv2.erode(face_hull(TARGET_PTS, 200, 190).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    assert covered[inner].all()
    assert np.abs(warped[inner].astype(float) - ref[inner]).mean() < 0.5
    assert np.abs(np.roll(ref, 1, axis=1)[inner] - ref[inner]).mean() > 1.0  # a one-pixel slip would show


def test_warp_onto_the_same_landmarks_is_the_identity():
    image = texture(200, 190, 2)
    warped, covered = warp_face(image, TARGET_PTS, TARGET_PTS, (200, 190))
    assert covered.sum() > 10000 and np.array_equal(warped[covered], image[covered])


def test_colour_match_moves_the_masks_statistics():
    rng = np.random.default_rng(3)
    image = np.clip(rng.normal(90, 20, (64, 64, 3)), 0, 255).astype(np.uint8)
    reference = np.clip(rng.normal([170, 120, 100], 12, (64, 64, 3)), 0, 255).astype(np.uint8)
    mask = np.zeros((64, 64), bool)
    mask[8:56, 8:56] = True
    out = match_colour(image, reference, mask)
    lab = lambda x: cv2.cvtColor(x.astype(np.float32) / 255, cv2.COLOR_RGB2LAB)[mask]  # noqa: E731
    assert np.abs(lab(out).mean(0) - lab(reference).mean(0)).max() < 1.0
    assert np.abs(lab(out).std(0) - lab(reference).std(0)).max() < 1.0


@pytest.mark.parametrize("blend", ["feather", "poisson"])
def test_same_inputs_give_identical_bytes(blend):
    a = swap_face(texture(200, 190, 0), TARGET_PTS, texture(170, 160, 1), DONOR_PTS, blend=blend).image
    b = swap_face(texture(200, 190, 0), TARGET_PTS, texture(170, 160, 1), DONOR_PTS, blend=blend).image
    assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("blend", ["feather", "poisson"])
def test_swapped_face_has_the_targets_landmarks(blend):
    """A real face (scikit-image's astronaut) takes the face of a rotated, scaled mirror image of herself:
    dlib's landmarks of the result lie within a few pixels of the target's, where the donor's own (mapped
    back into the target) are far off."""
    pytest.importorskip("dlib", reason="needs dlib (pip install dlib-bin)")
    data = pytest.importorskip("skimage.data")
    photo = np.ascontiguousarray(data.astronaut()[20:260, 90:330])  # 240x240 around her face
    m = cv2.getRotationMatrix2D((120, 120), 12, 1.15)
    donor = cv2.warpAffine(np.ascontiguousarray(photo[:, ::-1]), m, (240, 240), borderMode=cv2.BORDER_REFLECT_101)
    fitter = PhotoLandmarker()
    target_fit, donor_fit = fitter.fit(photo), fitter.fit(donor)
    assert target_fit.problem == "" and donor_fit.problem == ""
    result = swap_face(photo, target_fit.landmarks, donor, donor_fit.landmarks, blend=blend)
    again = fitter.fit(result.image)
    assert again.problem == ""
    error = np.linalg.norm(again.landmarks - target_fit.landmarks, axis=1)
    baseline = np.linalg.norm(donor_fit.landmarks - target_fit.landmarks, axis=1)
    assert np.median(error) < 3.0 and error.mean() < 4.0, (np.median(error), error.mean())
    assert np.median(baseline) > 15                                 # the check could fail: the faces differ
    near = cv2.dilate(result.hull.astype(np.uint8), np.ones((2 * result.reach + 1,) * 2, np.uint8)) > 0
    assert np.array_equal(result.image[~near], photo[~near])


def test_a_photo_without_a_face_gets_a_reason():
    pytest.importorskip("dlib", reason="needs dlib (pip install dlib-bin)")
    fit = PhotoLandmarker().fit(texture(120, 120, 4))
    assert fit.landmarks is None and "finds no face" in fit.problem and "padded" in fit.problem
    framed = PhotoLandmarker("frame").fit(texture(120, 120, 4))
    assert framed.how == "frame"  # fitted in the whole frame: usable or not, never silently absent
    assert (framed.landmarks is None) == bool(framed.problem)


# -------------------------------------------------------------------------------------------- the plan
def test_splits_put_each_photo_in_one_split_and_are_seeded():
    names = [f"p{i:03d}.jpg" for i in range(100)]
    splits, left = assign_splits(names, {"train": 0.7, "val": 0.15, "test": 0.15}, 0)
    assert [len(splits[s]) for s in ("train", "val", "test")] == [70, 15, 15] and left == []
    assert sorted(sum(splits.values(), [])) == names
    assert assign_splits(names, {"train": 0.7, "val": 0.15, "test": 0.15}, 0)[0] == splits
    assert assign_splits(names, {"train": 0.7, "val": 0.15, "test": 0.15}, 1)[0] != splits
    part, left = assign_splits(names, {"train": 0.5, "val": 0.1, "test": 0.1}, 0)
    assert [len(part[s]) for s in ("train", "val", "test")] == [50, 10, 10] and len(left) == 30
    with pytest.raises(SwapError, match="sum to at most 1"):
        assign_splits(names, {"train": 0.8, "val": 0.15, "test": 0.15}, 0)
    with pytest.raises(SwapError, match="--val -0.1: a split's fraction"):
        assign_splits(names, {"train": 0.8, "val": -0.1, "test": 0.1}, 0)


def test_donors_are_other_photos_of_the_split_each_used_equally():
    members = [f"p{i}.jpg" for i in range(7)]
    pairs, notes = pair_donors(members, 2, 0, "train", "")
    assert len(pairs) == 14 and not notes and all(t != d for t, d in pairs)
    assert sorted(d for _, d in pairs) == sorted(members * 2)       # each photo is a donor twice
    assert pair_donors(members, 2, 0, "train", "") == (pairs, notes)
    few, notes = pair_donors(members[:2], 3, 0, "val", "0/1")
    assert len(few) == 2 and "1 swap(s), not 3" in notes["p0.jpg"] and "group '0/1'" in notes["p0.jpg"]
    alone, notes = pair_donors(members[:1], 1, 0, "test", "")
    assert alone == [] and "no donor" in notes["p0.jpg"]


def test_pairing_groups_from_file_names():
    utk = compile_pattern(r"^\d+_(\d)_(\d)_")
    assert group_key("sub/26_1_3_2017.jpg.chip.jpg", utk) == "1/3"
    assert group_key("26_1_2017.jpg.chip.jpg", utk) is None          # UTKFace names without the race field
    assert group_key("x.jpg", None) == ""
    with pytest.raises(SwapError, match=re.escape("--pair-within '(': not a regular expression")):
        compile_pattern("(")


def test_photo_lists_and_their_errors(tmp_path):
    with pytest.raises(SwapError, match="no such folder or list file"):
        list_photos(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SwapError, match="empty: no photo in this folder"):
        list_photos(tmp_path / "empty")
    for name in ("a/1.jpg", "a/2.png", "b/3.jpg", "a/.hidden.jpg", "a/notes.txt"):
        (tmp_path / "photos" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "photos" / name).write_bytes(b"x")
    assert [p.name for p in list_photos(tmp_path / "photos")] == ["a/1.jpg", "a/2.png", "b/3.jpg"]
    (tmp_path / "list.txt").write_text("# adults\nphotos/a/1.jpg\n\nphotos/b/3.jpg\nphotos/a/1.jpg\n")
    assert [p.name for p in list_photos(tmp_path / "list.txt")] == ["a/1.jpg", "b/3.jpg"]
    (tmp_path / "bad.txt").write_text("photos/a/1.jpg\nphotos/a/9.jpg\n")
    with pytest.raises(SwapError, match=r"bad.txt, line 2: .*9.jpg does not exist"):
        list_photos(tmp_path / "bad.txt")
    (tmp_path / "notimg.txt").write_text("photos/a/notes.txt\n")
    with pytest.raises(SwapError, match="line 1: 'photos/a/notes.txt' is not an image path"):
        list_photos(tmp_path / "notimg.txt")
