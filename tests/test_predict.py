import json
import shutil
from pathlib import Path

import pytest

av = pytest.importorskip("av", reason="needs PyAV (pip install av): rccl-predict decodes video with PyAV")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from PIL import Image  # noqa: E402

from rccl.cli.predict import main as predict_main  # noqa: E402
from rccl.data.faces import FaceCropper, track_subject  # noqa: E402
from rccl.data.transforms import eval_transform  # noqa: E402
from rccl.data.video import read_frames  # noqa: E402
from rccl.model import input_normalization  # noqa: E402
from rccl.predict import (Prediction, PredictionError, crop_style, face_boxes, face_crops, load_frames, predict_files,  # noqa: E402
                          sample_indices)
from rccl.run import RunDir  # noqa: E402
from tiny_data import IMAGE_SIZE, install_brightness_detector, make_tiny_run, save_stage2_checkpoint  # noqa: E402

FACES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "faces"
needs_faces = pytest.mark.skipif(not FACES.is_dir(), reason=f"real face data not found at {FACES}")


@pytest.fixture
def run(tmp_path, monkeypatch):
    install_brightness_detector(monkeypatch)
    return make_tiny_run(tmp_path)


@pytest.fixture(scope="module")
def astronaut(tmp_path_factory):
    skimage_data = pytest.importorskip("skimage.data")
    path = tmp_path_factory.mktemp("img") / "astronaut.png"
    Image.fromarray(skimage_data.astronaut()).save(path)
    return path


def _face_crop(image_path):
    """The face crop cut here directly with FaceCropper, as rccl-prep cuts one."""
    frame = np.asarray(Image.open(image_path).convert("RGB"))
    cropper = FaceCropper()
    box = cropper.detect(frame)
    assert box is not None
    return cropper.crop(frame, cropper.enlarge_box(box, frame.shape[1], frame.shape[0]))


def _expected_brightness(image_path):
    """The crop's mean grey level / 255: what BrightnessDetector scores."""
    return _face_crop(image_path).mean() / 255


def _write_video(path, frames):
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        for f in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        out.mux(stream.encode())


def test_sample_indices_are_evenly_spaced():
    assert sample_indices(300, 4) == [0, 100, 199, 299]
    assert sample_indices(3, 10) == [0, 1, 2]
    assert sample_indices(0, 5) == [] and sample_indices(1, 1) == [0]


def test_astronaut_scores_its_face_crop(run, astronaut):
    [p] = predict_files([astronaut], run, device="cpu", progress=False)
    assert isinstance(p, Prediction) and p.path == str(astronaut) and p.n_faces == 1
    assert p.fake_probability == pytest.approx(_expected_brightness(astronaut), abs=0.01)


@needs_faces
def test_real_photos_and_a_photo_without_faces(run):
    photos = sorted((FACES / "identities").glob("*/*.jpg"))[:3]
    dogs = FACES / "scenes" / "dogs.jpg"
    skipped = {}
    results = predict_files([*photos, dogs], run, device="cpu", on_skip=skipped.__setitem__, progress=False)
    assert [r.path for r in results] == [str(p) for p in [*photos, dogs]]
    for photo, r in zip(photos, results):
        assert r.n_faces == 1
        assert r.fake_probability == pytest.approx(_expected_brightness(photo), abs=0.01)
    assert results[-1] == Prediction(str(dogs), None, 0)
    assert skipped == {str(dogs): "no face found"}


@needs_faces
def test_real_clip_averages_its_sampled_frames(run):
    clip = FACES / "video" / "short_hamilton_clip.mp4"
    [p] = predict_files([clip], run, device="cpu", frames=5, progress=False)
    # the same five frames (0, 68, 137, 206, 274 of 275) cut by hand: dlib finds faces in some of them, and
    # the one person followed through them (the clip cuts between people) is what is scored
    frames = read_frames(clip, [0, 68, 137, 206, 274])
    assert len(frames) == 5
    cropper = FaceCropper()
    found = track_subject([cropper.detector.detect(f) for f in frames.values()],
                          [(f.shape[1], f.shape[0]) for f in frames.values()])
    crops = [cropper.crop(f, cropper.enlarge_box(d.box, f.shape[1], f.shape[0]))
             for f, d in zip(frames.values(), found) if d is not None]
    assert p.n_faces == len(crops) >= 1
    assert p.fake_probability == pytest.approx(np.mean([c.mean() / 255 for c in crops]), abs=0.01)


def test_video_without_faces_and_unreadable_files_are_skipped(run, tmp_path):
    blank = tmp_path / "blank.mp4"
    _write_video(blank, [np.full((64, 64, 3), 90 + 10 * i, np.uint8) for i in range(8)])
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8 not really a jpeg" * 10)
    empty = tmp_path / "empty.png"
    empty.touch()
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    broken_video = tmp_path / "broken.mp4"
    broken_video.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(100))
    missing = tmp_path / "missing.jpg"
    skipped = {}
    paths = [blank, corrupt, empty, text, broken_video, missing]
    results = predict_files(paths, run, device="cpu", frames=4, on_skip=skipped.__setitem__, progress=False)
    assert all(r.fake_probability is None and r.n_faces == 0 for r in results)
    assert skipped[str(blank)] == "no face found in any of 4 sampled frames"
    assert skipped[str(corrupt)].startswith("not an image or video that can be read")
    assert skipped[str(empty)] == "empty file (0 bytes)"
    assert skipped[str(text)].startswith("not an image or video that can be read")
    assert skipped[str(broken_video)].startswith("not a readable video")
    assert skipped[str(missing)] == "no such file"


def test_bad_run_folder_and_frames(tmp_path, run, astronaut):
    with pytest.raises(PredictionError, match="no such folder"):
        predict_files([astronaut], tmp_path / "no_run", device="cpu")
    with pytest.raises(PredictionError, match="frames must be at least 1"):
        predict_files([astronaut], run, device="cpu", frames=0)


def test_cli_prints_one_line_per_file(run, astronaut, tmp_path, capsys):
    missing = tmp_path / "missing.mp4"
    assert predict_main(["--checkpoint", str(run), "--device", "cpu", str(astronaut), str(missing)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    path, prob, verdict, faces = lines[0].split("\t")
    assert path == str(astronaut) and 0 < float(prob) < 1 and verdict in ("fake", "natural") and faces == "1"
    assert lines[1].split("\t") == [str(missing), "n/a", "skipped: no such file", "0"]
    assert predict_main(["--checkpoint", str(run), "--device", "cpu", str(astronaut)]) == 0


def test_real_checkpoint_scores_the_face_crop(tmp_path, astronaut, capsys):
    """A stage-2 checkpoint saved by the training room, read by its load_detector, no stand-in."""
    run = make_tiny_run(tmp_path)
    model = save_stage2_checkpoint(run)
    [p] = predict_files([astronaut], run, device="cpu", progress=False)
    cfg = RunDir(run).config()
    normalization = input_normalization(cfg["model"]["encoder"])  # the encoder's own mean/std, as in training
    image = eval_transform(IMAGE_SIZE, normalization)(torch.from_numpy(np.array(_face_crop(astronaut))).permute(2, 0, 1))
    with torch.no_grad():
        expected = torch.softmax(model(image[None]), dim=1)[0, 1].item()
    assert p.n_faces == 1 and p.fake_probability == pytest.approx(expected, abs=1e-6)
    assert predict_main(["--checkpoint", str(run), "--device", "cpu", str(astronaut)]) == 0
    assert capsys.readouterr().out.split("\t")[1] == f"{expected:.4f}"


def test_cli_without_a_stage2_checkpoint(tmp_path, astronaut, capsys):
    run = make_tiny_run(tmp_path)
    assert predict_main(["--checkpoint", str(run), "--device", "cpu", str(astronaut)]) == 2
    assert "no stage-2 checkpoint" in capsys.readouterr().err


def test_faces_are_cut_as_the_run_was_prepared(run, tmp_path, astronaut):
    manifest = yaml.safe_load((run / "config.yaml").read_text())["data"]["manifest"]
    default = crop_style(manifest)  # no prep.json beside the manifest: rccl-prep's defaults
    assert (default.cropper.enlarge, default.cropper.crop_size, default.jpeg_quality) == (1.3, 320, None)
    (tmp_path / "data" / "prep.json").write_text(json.dumps(
        {"enlarge": 1.0, "crop_size": 48, "detect_size": 512, "crop_format": "jpg", "jpeg_quality": 70}))
    style = crop_style(manifest)
    assert (style.cropper.enlarge, style.cropper.crop_size, style.cropper.detect_size, style.jpeg_quality) == \
        (1.0, 48, 512, 70)
    frame = np.asarray(Image.open(astronaut).convert("RGB"))
    [stored] = face_crops([frame], style)
    [lossless] = face_crops([frame], style.cropper)
    assert stored.shape == lossless.shape == (48, 48, 3)
    assert 0 < np.abs(stored.astype(int) - lossless).mean() < 8  # the JPEG round trip the crops went through
    [p] = predict_files([astronaut], run, device="cpu", progress=False)
    assert p.fake_probability == pytest.approx(stored.mean() / 255, abs=0.01)


# ------------------------------------------------------------------------------------------------ issue 11
REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"


def test_report_writes_one_picture_per_file(run, astronaut, tmp_path, capsys):
    blank = tmp_path / "blank.mp4"
    _write_video(blank, [np.full((64, 64, 3), 90, np.uint8)] * 6)
    out = tmp_path / "report"
    code = predict_main(["--checkpoint", str(run), "--device", "cpu", "--detector", "dlib", "--report", str(out),
                         "--frames", "4", str(astronaut), str(blank)])
    assert code == 1  # the blank video has no face
    assert sorted(p.name for p in out.iterdir()) == ["astronaut_png.png", "blank_mp4.png"]
    for p in out.iterdir():
        assert Image.open(p).size[0] > 200  # a real picture, not an empty file
    captured = capsys.readouterr()
    assert f"{astronaut}: face in 1 of 1 sampled frame(s)" in captured.err
    assert "skipped: no face found in any of 4 sampled frames" in captured.out


def test_report_names_never_collide():
    from rccl.report import report_names

    assert report_names(["a/x.mp4", "b/x.mp4", "c/y.mp4"]) == ["a_x_mp4.png", "b_x_mp4.png", "y_mp4.png"]
    assert report_names(["d/a/x.mp4", "e/a/x.mp4"]) == ["d_a_x_mp4.png", "e_a_x_mp4.png"]
    assert report_names(["x.mp4", "x.mp4", "X.MP4"]) == ["x_mp4.png", "x_mp4-2.png", "X_MP4-3.png"]
    assert report_names(["a/x.mp4", "x.mp4"]) == ["a_x_mp4.png", "x_mp4.png"]
    assert report_names(["a.b", "a_b"]) == ["a_b.png", "a_b-2.png"]


def test_report_of_two_files_with_one_name_writes_two_pictures(run, astronaut, tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        shutil.copy(astronaut, tmp_path / folder / "x.png")
    out = tmp_path / "report"
    assert predict_main(["--checkpoint", str(run), "--device", "cpu", "--detector", "dlib", "--report", str(out),
                         "--no-progress", str(tmp_path / "a" / "x.png"), str(tmp_path / "b" / "x.png")]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a_x_png.png", "b_x_png.png"]


@pytest.mark.skipif(not REAL.is_dir(), reason=f"real deepfake samples not found at {REAL}")
@pytest.mark.slow
def test_dfdc_1080p_video_with_a_small_dark_face_gets_a_score(run):
    video = REAL / "dfdc" / "train_sample_videos" / "abofeumbvv.mp4"
    [p] = predict_files([video], run, device="cpu", frames=4, progress=False, face_detector="dlib+mtcnn")
    assert p.fake_probability is not None and p.n_faces >= 3
    [q] = predict_files([video], run, device="cpu", frames=4, progress=False, face_detector="dlib",
                        on_skip=None)
    assert q.fake_probability is None  # dlib's HOG alone: the failure, still a precise skip


# -- two people, no frontal face, faces counted: built from the real photos of ../shared/data/faces --------
def _two_people_frames(n: int) -> list[np.ndarray]:
    """n 640x360 frames with two different people side by side (biden left, obama right), each photo
    shrunk to 0.7 in every other frame (the left in odd frames, the right in even ones); biden's photo is
    drawn at 0.65 so that the two faces are about as large, and the larger face swaps sides every frame."""
    left = Image.open(FACES / "identities" / "biden" / "biden2.jpg").convert("RGB")
    right = Image.open(FACES / "identities" / "obama" / "obama2.jpg").convert("RGB")
    frames = []
    for k in range(n):
        canvas = Image.new("RGB", (640, 360), (120, 120, 120))
        for photo, centre, scale in ((left, 160, 0.65 * (1.0 if k % 2 == 0 else 0.7)),
                                     (right, 480, 0.7 if k % 2 == 0 else 1.0)):
            h = round(340 * scale)
            im = photo.resize((round(photo.width * h / photo.height), h), Image.BILINEAR)
            canvas.paste(im, (centre - im.width // 2, 180 - h // 2))
        frames.append(np.asarray(canvas))
    return frames


def _centre_x(box) -> float:
    return (box[0] + box[2]) / 2


@needs_faces
def test_video_with_two_people_scores_one_subject_followed_through(run, tmp_path):
    video = tmp_path / "two_people.mp4"
    _write_video(video, _two_people_frames(8))
    found = {}
    [p] = predict_files([video], run, device="cpu", frames=8, progress=False,
                        on_faces=lambda path, n, sampled: found.__setitem__(path, (n, sampled)))
    assert p.fake_probability is not None and 0 < p.fake_probability < 1
    assert p.n_faces == 8 and found == {str(video): (8, 8)}
    # the boxes predict_files scored: the same frames, the run's crop style, the one face-finding path
    frames = load_frames(video, 8)
    style = crop_style(RunDir(run).manifest(RunDir(run).config()))
    boxes = face_boxes(frames, style)
    assert len(boxes) == 8 and all(b is not None for b in boxes)
    sides = {_centre_x(b) < 320 for b in boxes}
    assert len(sides) == 1, f"the tracked box jumps between the two people: {boxes}"
    # there was a choice in every frame (both people are found in each), and one that tempts a
    # largest-face picker to jump: the larger face is on the left in even frames, on the right in odd ones
    detections = style.cropper.detector.detect_many(frames)
    assert all({_centre_x(d.box) < 320 for d in found} == {True, False} for found in detections)
    largest = [max(found, key=lambda d: (d.box[2] - d.box[0]) * (d.box[3] - d.box[1])).box for found in detections]
    assert [_centre_x(b) < 320 for b in largest] == [k % 2 == 0 for k in range(8)]


@needs_faces
def test_video_without_a_frontal_face_is_skipped_with_the_reason(run, tmp_path, capsys):
    dogs = np.asarray(Image.open(FACES / "scenes" / "dogs.jpg").convert("RGB").resize((640, 652)))
    video = tmp_path / "dogs.mp4"
    _write_video(video, [np.roll(dogs, 4 * k, axis=1) for k in range(6)])
    skipped = {}
    [p] = predict_files([video], run, device="cpu", frames=6, progress=False, on_skip=skipped.__setitem__)
    assert p == Prediction(str(video), None, 0)
    assert skipped == {str(video): "no face found in any of 6 sampled frames"}
    assert predict_main(["--checkpoint", str(run), "--device", "cpu", "--frames", "6", str(video)]) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"{video}\tn/a\tskipped: no face found in any of 6 sampled frames\t0"]


@needs_faces
def test_cli_reports_how_many_sampled_frames_had_a_face(run, tmp_path, capsys):
    dogs = np.asarray(Image.open(FACES / "scenes" / "dogs.jpg").convert("RGB").resize((640, 360)))
    video = tmp_path / "people_then_dogs.mp4"
    _write_video(video, _two_people_frames(4) + [dogs] * 2)  # 4 frames with faces, then 2 without
    assert predict_main(["--checkpoint", str(run), "--device", "cpu", "--frames", "6", str(video)]) == 0
    captured = capsys.readouterr()
    assert f"{video}: face in 4 of 6 sampled frame(s)" in captured.err
    path, prob, verdict, faces = captured.out.splitlines()[0].split("\t")
    assert path == str(video) and 0 < float(prob) < 1 and faces == "4"
