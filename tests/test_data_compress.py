"""c23/c40 copies: libx264 through PyAV really writes H.264 at the asked constant QP or CRF (read back from
the x264 SEI in the file), keeps every frame in order, and never leaves a half-written file."""
from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("av", reason="needs PyAV (pip install av): rccl.data.compress writes H.264 through PyAV")

from rccl.data.compress import H264Writer, compress_image, compress_video, h264_settings  # noqa: E402
from rccl.data.video import VideoError, probe, read_frames  # noqa: E402


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A 12-frame 64x48 clip whose frames differ (a moving bright square on a gradient)."""
    path = tmp_path_factory.mktemp("src") / "src.mp4"
    yy, xx = np.mgrid[0:48, 0:64]
    with H264Writer(path, width=64, height=48, rate=25, quantiser=5, preset="ultrafast") as w:
        for i in range(12):
            f = np.stack([xx * 3, yy * 4, np.full_like(xx, 60)], -1).astype(np.uint8)
            f[10:20, 4 * i:4 * i + 10] = 255
            w.write(f)
    return path


@pytest.mark.parametrize("mode,q", [("qp", 23), ("qp", 40), ("crf", 23), ("crf", 40)])
def test_output_is_h264_at_the_asked_quantiser(source, tmp_path, mode, q):
    dst = compress_video(source, tmp_path / f"{mode}{q}.mp4", quantiser=q, mode=mode, preset="ultrafast")
    s = h264_settings(dst)
    assert s["codec"] == "h264"
    assert s["encoder"].startswith("x264 - core")
    if mode == "qp":
        assert (s["rc"], s["qp"]) == ("cqp", q)
        assert s["options"]["ip_ratio"] == "1.00"  # same QP on I and P frames (ultrafast has no B frames)
    else:
        assert (s["rc"], s["crf"]) == ("crf", float(q))
    assert probe(dst).n_frames == 12


def test_qp_is_the_same_for_b_frames(source, tmp_path):
    s = h264_settings(compress_video(source, tmp_path / "b.mp4", quantiser=30, preset="medium"))
    assert int(s["options"]["bframes"]) > 0
    assert (s["rc"], s["qp"], s["options"]["ip_ratio"], s["options"]["pb_ratio"]) == ("cqp", 30, "1.00", "1.00")


def test_frames_keep_their_index_and_quality_drops_with_qp(source, tmp_path):
    lo = compress_video(source, tmp_path / "23.mp4", quantiser=23, preset="ultrafast")
    hi = compress_video(source, tmp_path / "40.mp4", quantiser=40, preset="ultrafast")
    ref, a, b = (read_frames(p, range(12)) for p in (source, lo, hi))
    err = lambda x, i: np.abs(x[i].astype(float) - ref[i]).mean()
    for i in range(12):
        # the moving square is where frame i has it: the copy's frame i is the source's frame i
        assert a[i][10:20, 4 * i:4 * i + 10].mean() > 200
        assert err(a, i) < err(b, i)


def test_bad_settings_and_sources(source, tmp_path):
    with pytest.raises(ValueError, match="qp' or 'crf"):
        compress_video(source, tmp_path / "x.mp4", quantiser=23, mode="vbr")
    with pytest.raises(ValueError, match="0..51"):
        compress_video(source, tmp_path / "x.mp4", quantiser=60)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(os.urandom(2000))
    with pytest.raises(VideoError, match="bad.mp4"):
        compress_video(bad, tmp_path / "y.mp4", quantiser=23)
    assert not (tmp_path / "y.mp4").exists()


def test_writer_failure_leaves_no_file(tmp_path):
    dst = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError):
        with H264Writer(dst, width=32, height=32, rate=25, preset="ultrafast") as w:
            w.write(np.zeros((32, 32, 3), np.uint8))
            raise RuntimeError("killed mid-way")
    assert list(tmp_path.iterdir()) == []  # neither the file nor its temporary
    with pytest.raises(VideoError, match="no frames"):
        H264Writer(dst, width=32, height=32).close()
    assert list(tmp_path.iterdir()) == []


def test_written_video_gets_the_umasks_mode(tmp_path):
    old = os.umask(0o022)
    try:
        dst = compress_video(_tiny_source(tmp_path), tmp_path / "c40.mp4", quantiser=40, preset="ultrafast")
    finally:
        os.umask(old)
    assert dst.stat().st_mode & 0o777 == 0o644
    assert probe(dst).n_frames == 2


def _tiny_source(tmp_path):
    src = tmp_path / "src.mp4"
    with H264Writer(src, width=32, height=32, rate=25, preset="ultrafast") as w:
        for i in range(2):
            w.write(np.full((32, 32, 3), 40 * i, np.uint8))
    return src


def test_an_image_becomes_a_one_frame_copy_at_the_asked_qp(tmp_path):
    """An image's c23/c40 (rccl-prep on photos): one H.264 frame, odd sides padded by their last row/column."""
    yy, xx = np.mgrid[0:33, 0:21]
    image = np.stack([xx * 10, yy * 7, np.full_like(xx, 90)], -1).astype(np.uint8)
    errors = {}
    for q in (23, 40):
        path = compress_image(image, tmp_path / f"q{q}.mp4", quantiser=q, preset="ultrafast")
        assert (h264_settings(path)["rc"], h264_settings(path)["qp"]) == ("cqp", q)
        assert probe(path).n_frames == 1
        frame = read_frames(path, [0])[0]
        assert frame.shape == (34, 22, 3)
        errors[q] = np.abs(frame[:33, :21].astype(int) - image).mean()
    assert errors[23] < errors[40] < 20
