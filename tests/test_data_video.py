"""Frame reading: evenly spaced consecutive pairs, frames by index, bad files named in the error, and the
real 10 s clip decodes."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("av", reason="needs PyAV (pip install av): rccl.data.video decodes frames with PyAV")

from rccl.data.compress import H264Writer  # noqa: E402
from rccl.data.video import VideoError, pair_indices, probe, read_frames  # noqa: E402

FACES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "faces"
CLIP = FACES / "video" / "short_hamilton_clip.mp4"


def test_pair_indices():
    assert pair_indices(100, 4) == [(0, 1), (33, 34), (65, 66), (98, 99)]
    assert pair_indices(2, 16) == [(0, 1)]
    assert pair_indices(7, 16) == [(0, 1), (2, 3), (5, 6)]  # capped at 3, never overlapping, to the end
    assert pair_indices(1, 16) == [] and pair_indices(0, 3) == []
    for n in range(2, 60):
        pairs = pair_indices(n, 16)
        flat = [i for p in pairs for i in p]
        assert len(set(flat)) == len(flat) and max(flat) < n and all(b == a + 1 for a, b in pairs)


def test_read_frames_by_index(tmp_path):
    path = tmp_path / "v.mp4"
    with H264Writer(path, width=32, height=32, rate=25, quantiser=0, preset="ultrafast") as w:
        for i in range(20):
            w.write(np.full((32, 32, 3), 10 * i, np.uint8))
    assert probe(path).n_frames == 20
    frames = read_frames(path, [17, 3, 4])
    assert sorted(frames) == [3, 4, 17]
    for i, f in frames.items():
        assert f.shape == (32, 32, 3) and f.dtype == np.uint8
        assert abs(float(f.mean()) - 10 * i) < 2
    assert sorted(read_frames(path, [19, 25])) == [19]  # past the end: missing, not an error


@pytest.mark.parametrize("content,match", [(b"", "empty file"), (b"not a video at all" * 100, "not a readable video")])
def test_bad_files_are_named(tmp_path, content, match):
    path = tmp_path / "bad.mp4"
    path.write_bytes(content)
    with pytest.raises(VideoError, match=match) as e:
        probe(path)
    assert "bad.mp4" in str(e.value)
    with pytest.raises(VideoError, match="no such file"):
        read_frames(tmp_path / "missing.mp4", [0])


@pytest.mark.skipif(not CLIP.is_file(), reason=f"real clip not found at {CLIP} (../shared/data/faces is absent)")
def test_real_clip_decodes():
    info = probe(CLIP)
    assert (info.n_frames, info.width, info.height, info.codec) == (275, 640, 360, "h264")
    idx = [i for p in pair_indices(info.n_frames, 16) for i in p]
    frames = read_frames(CLIP, idx)
    assert sorted(frames) == idx
    assert all(f.shape == (360, 640, 3) for f in frames.values())
    first = frames[idx[0]].astype(int)
    assert np.abs(first - frames[idx[1]]).mean() < np.abs(first - frames[idx[-1]]).mean()  # consecutive: alike
