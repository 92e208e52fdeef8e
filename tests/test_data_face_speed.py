"""The default detector's speed-ups keep its answers: MTCNN on one torch thread, its R/O-nets on channels-last
tensors (same outputs), the near-search window rule, and the cascade's use of frame positions (a missed
frame next to one with faces is searched near those faces first, the whole frame when that finds none).
The real-frame checks use the clip of ../shared/data/faces (skipped when it is absent)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rccl.data.faces import Detection, FaceDetector, iou
from rccl.data.faces import mtcnn
from rccl.data.faces.cascade import NEAR_GAP, Cascade, neighbours

FACES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "faces"
CLIP = FACES / "video" / "short_hamilton_clip.mp4"
needs_clip = pytest.mark.skipif(not CLIP.is_file(), reason=f"the real clip {CLIP} is absent in this checkout")


def _facenet():
    return pytest.importorskip("facenet_pytorch", reason="the mtcnn detector needs facenet-pytorch")


# ---------------------------------------------------------------------------------------------- threads
def test_torch_threads_sets_and_restores_even_on_error():
    import torch

    before = torch.get_num_threads()
    with mtcnn.torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(KeyError):
        with mtcnn.torch_threads(1):
            raise KeyError("x")
    assert torch.get_num_threads() == before


def test_mtcnn_runs_its_nets_on_one_thread():
    import torch

    _facenet()
    det = mtcnn.Mtcnn()
    seen = []
    det._pnet.register_forward_pre_hook(lambda module, args: seen.append(torch.get_num_threads()))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        frame = np.full((120, 160, 3), 128, np.uint8)
        det.detect(frame)
        det.detect_near(frame, [(40, 30, 100, 90)])
        assert seen and set(seen) == {1}
        assert torch.get_num_threads() == 2  # the caller's setting is back
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------------- channels-last
def test_channels_last_nets_give_the_same_outputs():
    import torch

    facenet = _facenet()
    net = facenet.MTCNN(device="cpu").eval()
    gen = torch.Generator().manual_seed(0)
    for plain, size in ((net.rnet, 24), (net.onet, 48)):
        x = torch.rand(37, 3, size, size, generator=gen) * 2 - 1
        with torch.inference_mode():
            want = plain(x)
            got = mtcnn._channels_last(plain)(x)
        for w, g in zip(want, got):
            assert torch.allclose(w, g, atol=1e-5), (w - g).abs().max()


@needs_clip
def test_detect_gives_facenets_own_boxes():
    """Mtcnn.detect (channels-last R/O-nets, our own call of the three stages) == facenet-pytorch's
    MTCNN.detect on the same prepared image, box for box."""
    from rccl.data.video import read_frames

    facenet = _facenet()
    frames = read_frames(CLIP, [0, 255])
    ref = facenet.MTCNN(keep_all=True, device="cpu", min_face_size=mtcnn.MTCNN_MIN_FACE, post_process=False)
    det = mtcnn.Mtcnn()
    for frame in frames.values():
        img, scale = det._input(frame)
        boxes, probs = ref.detect(img)
        want = [tuple(round(v) for v in b) for b, p in zip(boxes, probs) if p >= det.min_score]
        got = [d.box for d in det.detect(frame)]
        assert scale == 1.0 and len(got) == len(want) >= 2
        for g, w in zip(got, want):  # same order (largest first), same pixels up to rounding
            assert max(abs(a - b) for a, b in zip(g, w)) <= 1


# ---------------------------------------------------------------------------------------------- near windows
def test_near_min_face_is_on_the_whole_frames_pyramid():
    levels = [mtcnn.MTCNN_MIN_FACE / mtcnn.PYRAMID_FACTOR ** j for j in range(12)]
    for side in (4, 20, 39, 40, 41, 57, 100, 300, 1000):
        m = mtcnn.near_min_face(side)
        assert any(m == pytest.approx(v) for v in levels), (side, m)
        assert m >= mtcnn.MTCNN_MIN_FACE
        if side * mtcnn.NEAR_MIN_FACE >= mtcnn.MTCNN_MIN_FACE:  # the highest level at or below side/2
            assert m <= side * mtcnn.NEAR_MIN_FACE * (1 + 1e-9) < m / mtcnn.PYRAMID_FACTOR


def test_near_windows_centred_clipped_and_not_repeated():
    wins = mtcnn.near_windows([(100, 100, 140, 150), (0, 0, 30, 30), (110, 110, 130, 130)], 640, 360)
    assert len(wins) == 2  # the third face lies inside the first window
    (x0, y0, x1, y1), m = wins[0]
    assert (x0 + x1) / 2 == pytest.approx(120, abs=1) and (y0 + y1) / 2 == pytest.approx(125, abs=1)
    assert x1 - x0 == pytest.approx(mtcnn.NEAR_WINDOW * 50, abs=2) and m == mtcnn.near_min_face(50)
    assert wins[1][0][:2] == (0, 0)  # clipped at the frame's corner


@needs_clip
def test_detect_near_finds_the_known_faces_and_nothing_else():
    from rccl.data.video import read_frames

    _facenet()
    frames = read_frames(CLIP, [255, 256])
    det = mtcnn.Mtcnn()
    known = [d.box for d in det.detect(frames[255])]
    whole = det.detect(frames[256])
    near = det.detect_near(frames[256], known)
    assert len(known) >= 2 and len(near) == len(whole)
    for d in near:
        assert d.detector == "mtcnn" and d.score >= det.min_score
        # the same faces as the whole-frame search; MTCNN's box of a face shifts a little with its pyramid's
        # pixel grid, which differs between a window and the whole frame (0.79-0.94 on these four faces)
        assert max(iou(d.box, w.box) for w in whole) >= 0.7
    # only the faces asked about: the first known face alone gives one face, and an empty corner none
    assert len(det.detect_near(frames[256], known[:1])) == 1
    assert det.detect_near(frames[256], [(600, 320, 630, 350)]) == []


# ---------------------------------------------------------------------------------------------- the cascade
class _Fixed(FaceDetector):
    """Answers from a table keyed by the frame's fill value; records what it was asked."""

    def __init__(self, name, faces, near=None):
        self.name, self.faces, self.near, self.calls = name, faces, near, []

    def detect(self, frame):
        self.calls.append(("whole", int(frame[0, 0, 0])))
        return list(self.faces.get(int(frame[0, 0, 0]), []))

    def detect_near(self, frame, boxes):
        self.calls.append(("near", int(frame[0, 0, 0]), tuple(boxes)))
        return list((self.near or {}).get(int(frame[0, 0, 0]), []))


def _frames(n):
    return [np.full((8, 8, 3), k, np.uint8) for k in range(n)]


def _det(name, x=10):
    return Detection((x, x, x + 20, x + 20), 1.0, name)


def test_cascade_searches_a_pairs_second_frame_near_the_first_ones_faces():
    # frames at video positions 0,1 (a pair), 20,21, 40,41; HOG finds a face on 20 only
    positions = [0, 1, 20, 21, 40, 41]
    hog = _Fixed("dlib", {2: [_det("dlib")]})
    mt = _Fixed("mtcnn", {0: [_det("mtcnn", 5)], 4: [], 5: [_det("mtcnn", 7)]},
                near={1: [_det("mtcnn", 6)], 3: [_det("mtcnn", 11)]})
    out = Cascade(hog, mt).detect_many(_frames(6), positions)
    assert mt.calls == [("whole", 0),                          # nothing known near 0: the whole frame
                        ("near", 1, (_det("mtcnn", 5).box,)),  # 1 is next to 0, where MTCNN found a face
                        ("near", 3, (_det("dlib").box,)),      # 21 next to 20, where HOG found one
                        ("whole", 4),                          # no face on 41 either: 40 searched whole
                        ("whole", 5)]                          # and 41, next to a faceless frame, too
    assert [[d.detector for d in f] for f in out] == [["mtcnn"], ["mtcnn"], ["dlib"], ["mtcnn"], [], ["mtcnn"]]
    assert out[1][0].box == _det("mtcnn", 6).box and out[3][0].box == _det("mtcnn", 11).box


def test_cascade_searches_the_whole_frame_when_the_near_search_finds_nothing():
    hog = _Fixed("dlib", {0: [_det("dlib")]})
    mt = _Fixed("mtcnn", {1: [_det("mtcnn", 30)]}, near={})
    out = Cascade(hog, mt).detect_many(_frames(2), [7, 8])
    assert [c[0] for c in mt.calls] == ["near", "whole"] and out[1] == [_det("mtcnn", 30)]


def test_cascade_without_positions_searches_every_missed_frame_whole():
    hog = _Fixed("dlib", {0: [_det("dlib")]})
    mt = _Fixed("mtcnn", {1: [_det("mtcnn")]}, near={1: [_det("mtcnn", 3)]})
    out = Cascade(hog, mt).detect_many(_frames(3))
    assert mt.calls == [("whole", 1), ("whole", 2)] and out[1] == [_det("mtcnn")]
    with pytest.raises(ValueError, match="2 positions for 3 frames"):
        Cascade(hog, mt).detect_many(_frames(3), [0, 1])


def test_neighbours_are_within_near_gap_nearest_first():
    assert NEAR_GAP == 1
    assert neighbours(1, [0, 1, 2, 10]) == [0, 2]
    assert neighbours(3, [0, 1, 2, 10]) == []
    assert neighbours(0, [5, 5, 7]) == [1]  # the same index twice counts as adjacent
