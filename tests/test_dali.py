"""The DALI data path: the training loader (CPU pipeline here, GPU pipeline where there is a GPU) against
the torch loader's contract, and DALI's video decoder against PyAV. Skipped where nvidia.dali is absent."""
from __future__ import annotations

import copy
import os
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("nvidia.dali", reason="NVIDIA DALI is not installed (pip install -e .[dali])")

from PIL import Image  # noqa: E402

from rccl.data import dali_loader  # noqa: E402
from rccl.data.dali_loader import DaliDataError, build_dali_train_loader  # noqa: E402
from rccl.data.loaders import build_train_loader  # noqa: E402
from rccl.data.manifest import read_manifest, write_manifest  # noqa: E402
from rccl.data.pairing import ForgeryPairSampler  # noqa: E402
from rccl.model import input_normalization  # noqa: E402
from rccl.train.config import DEFAULTS  # noqa: E402

FACES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "faces"
CLIP = FACES / "video" / "short_hamilton_clip.mp4"
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")

SIZE = 24
BATCH = 4
NO_AUGMENT = {"scale": [1.0, 1.0], "ratio": [1.0, 1.0], "flip": 0.0, "color_jitter": 0.0, "color_jitter_p": 0.0,
              "blur_p": 0.0}


def solid_colour(i: int) -> tuple[int, int, int]:
    """A colour per crop, different for every i < 32, so a view's mean colour says which crop it shows."""
    return (8 * i + 4, 255 - 8 * i, (37 * i) % 256)


def make_manifest(root: Path, fmt: str = "png", solid: bool = True) -> Path:
    """32 crops of 40x40: 4 videos per class, 2 consecutive pairs each, the metadata the sampler reads."""
    rng = np.random.default_rng(0)
    rows = []
    i = 0
    for label in (0, 1):
        for v in range(4):
            for frame in range(4):
                rel = f"crops/{label}/{v}/{frame:06d}.{fmt}"
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                if solid:
                    pixels = np.empty((40, 40, 3), np.uint8)
                    pixels[:] = solid_colour(i)
                else:
                    pixels = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / rel, quality=95)
                rows.append(dict(path=rel, dataset="synthetic", split="train", quality="raw",
                                 video=f"{'fake' if label else 'real'}/{v}.mp4", label=label, frame=frame,
                                 pair=frame // 2, source=f"id{v}_0000" if label else "",
                                 target=f"id{(v + 1) % 4}" if label else "", identity="" if label else f"id{v}",
                                 box=[0, 0, 40, 40]))
                i += 1
    write_manifest(root / "manifest.jsonl", rows)
    return root / "manifest.jsonl"


@pytest.fixture(scope="module")
def solid_records(tmp_path_factory):
    return read_manifest(make_manifest(tmp_path_factory.mktemp("solid")))


@pytest.fixture(scope="module")
def noise_records(tmp_path_factory):
    return read_manifest(make_manifest(tmp_path_factory.mktemp("noise"), fmt="jpg", solid=False))


def config(backend: str, augment: dict | None = None, seed: int = 0, device: str = "cpu") -> dict:
    cfg = copy.deepcopy(DEFAULTS)
    cfg["data"].update(backend=backend, image_size=SIZE, workers=0)
    cfg["data"]["augment"].update(augment or {})
    cfg["train"].update(seed=seed, device=device)
    return cfg


def epoch_batches(loader, sampler, epoch: int = 0) -> list[dict]:
    sampler.set_epoch(epoch)
    return [{k: v.cpu().clone() for k, v in b.items()} for b in loader]


# the loaders normalise with the configured encoder's mean and std (DEFAULTS: legacy_xception's 0.5 / 0.5)
MEAN, STD = input_normalization(DEFAULTS["model"]["encoder"])


def sampler_for(records, seed: int = 0, pairing: str = "semantic"):
    return ForgeryPairSampler(records, BATCH, pairing, seed)


def crop_of(view: torch.Tensor) -> int:
    """Which solid crop a normalised view shows (nearest colour)."""
    mean = torch.tensor(MEAN).view(3, 1, 1)
    std = torch.tensor(STD).view(3, 1, 1)
    rgb = ((view * std + mean) * 255).mean(dim=(1, 2))
    colours = torch.tensor([solid_colour(i) for i in range(32)], dtype=torch.float32)
    return int((colours - rgb).abs().sum(dim=1).argmin())


@pytest.mark.parametrize("pairing", ["semantic", "instance"])  # instance pairs decode one file for two views
def test_same_pairs_labels_and_pixels_as_the_torch_loader_without_augmentation(solid_records, pairing):
    sampler = sampler_for(solid_records, pairing=pairing)
    sampler.set_epoch(0)
    pairs = list(sampler)
    dali = epoch_batches(build_dali_train_loader(config("dali", NO_AUGMENT), solid_records, sampler), sampler)
    torch_ = epoch_batches(build_train_loader(config("torch", NO_AUGMENT), solid_records, sampler), sampler)
    assert len(dali) == len(torch_) == len(sampler) == len(pairs)
    for d, t, p in zip(dali, torch_, pairs):
        assert d.keys() == t.keys() == {"view1", "view2", "label", "index"}
        for key in d:
            assert d[key].shape == t[key].shape and d[key].dtype == t[key].dtype, key
        assert d["index"].tolist() == t["index"].tolist() == [a for a, _ in p]
        assert d["label"].tolist() == t["label"].tolist() == [solid_records[a]["label"] for a, _ in p]
        assert [crop_of(v) for v in d["view2"]] == [q for _, q in p]  # view2 shows the sampler's partner
        torch.testing.assert_close(d["view1"], t["view1"], atol=1.5 / 255 / min(STD), rtol=0)
        torch.testing.assert_close(d["view2"], t["view2"], atol=1.5 / 255 / min(STD), rtol=0)


def normalised_bounds():
    mean, std = torch.tensor(MEAN), torch.tensor(STD)
    return ((0 - mean) / std).view(1, 3, 1, 1), ((1 - mean) / std).view(1, 3, 1, 1)


def test_augmented_views_keep_the_contract_and_value_range(noise_records):
    aug = {"jpeg_p": 0.5}
    sampler = sampler_for(noise_records)
    dali = epoch_batches(build_dali_train_loader(config("dali", aug), noise_records, sampler), sampler)
    torch_ = epoch_batches(build_train_loader(config("torch"), noise_records, sampler), sampler)
    lo, hi = normalised_bounds()
    eps = 1e-4
    for d, t in zip(dali, torch_):
        for key in ("view1", "view2"):
            assert d[key].shape == t[key].shape == (BATCH, 3, SIZE, SIZE) and d[key].dtype == torch.float32
            assert torch.isfinite(d[key]).all()
            assert (d[key] >= lo - eps).all() and (d[key] <= hi + eps).all()
        assert d["label"].dtype == d["index"].dtype == torch.int64
        assert torch.equal(d["index"], t["index"]) and torch.equal(d["label"], t["label"])
    # Two augmentations of one crop differ: the views are not copies of each other.
    instance = [(b, i) for b, batch in enumerate(dali) for i in range(BATCH)]
    assert any(not torch.allclose(dali[b]["view1"][i], dali[b]["view2"][i]) for b, i in instance)
    # Same spread of values as the torch path (a loose check: both normalise 0..255 the same way).
    d_all = torch.cat([b["view1"] for b in dali])
    t_all = torch.cat([b["view1"] for b in torch_])
    assert abs(float(d_all.mean()) - float(t_all.mean())) < 0.25
    assert abs(float(d_all.std()) - float(t_all.std())) < 0.25


def test_deterministic_by_seed_and_epoch(noise_records):
    def run(seed, epoch):
        sampler = sampler_for(noise_records, seed)
        return epoch_batches(build_dali_train_loader(config("dali", {"jpeg_p": 0.5}, seed=seed), noise_records,
                                                     sampler), sampler, epoch)

    first, again = run(0, 1), run(0, 1)
    for a, b in zip(first, again):
        for key in a:
            assert torch.equal(a[key], b[key]), key
    other_epoch, other_seed = run(0, 2), run(1, 1)
    assert not torch.equal(first[0]["view1"], other_epoch[0]["view1"])
    assert not torch.equal(first[0]["view1"], other_seed[0]["view1"])


def test_an_epoch_left_early_does_not_disturb_the_next(solid_records):
    sampler = sampler_for(solid_records)
    loader = build_dali_train_loader(config("dali", NO_AUGMENT), solid_records, sampler)
    sampler.set_epoch(3)
    next(iter(loader))  # a loop that stops after one step
    full = epoch_batches(loader, sampler, 3)
    sampler.set_epoch(3)
    assert [b["index"].tolist() for b in full] == [[a for a, _ in pairs] for pairs in sampler]


def test_jpeg_quality_distortion_changes_the_pixels(noise_records):
    plain = dict(NO_AUGMENT)
    sampler = sampler_for(noise_records)
    clean = epoch_batches(build_dali_train_loader(config("dali", plain), noise_records, sampler), sampler)
    jpeg = epoch_batches(build_dali_train_loader(config("dali", {**plain, "jpeg_p": 1.0, "jpeg_quality": [5, 5]}),
                                                 noise_records, sampler), sampler)
    difference = (clean[0]["view1"] - jpeg[0]["view1"]).abs().mean()
    assert difference > 0.1  # quality 5 wipes out most of the noise


def test_missing_crop_is_named_when_building(tmp_path):
    records = read_manifest(make_manifest(tmp_path))
    os.unlink(records[5]["abspath"])
    with pytest.raises(DaliDataError, match=str(records[5]["abspath"])):
        build_dali_train_loader(config("dali"), records, sampler_for(records))


def test_crop_lost_during_training_is_named(tmp_path):
    records = read_manifest(make_manifest(tmp_path))
    sampler = sampler_for(records)
    loader = build_dali_train_loader(config("dali"), records, sampler)
    for r in records:
        os.unlink(r["abspath"])
    with pytest.raises(DaliDataError, match=r"crop .*\.png: no such file"):
        next(iter(loader))


def test_undecodable_crop_is_named(tmp_path):
    records = read_manifest(make_manifest(tmp_path))
    broken = records[0]["abspath"]
    Path(broken).write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    sampler = sampler_for(records)
    loader = build_dali_train_loader(config("dali"), records, sampler)
    with pytest.raises(DaliDataError, match=str(broken)):
        epoch_batches(loader, sampler)  # every natural is an anchor in every epoch (16 of each class)


@pytest.mark.parametrize("key,value", [("jpeg_quality", [0, 200]), ("blur_p", 1.5), ("jpeg_p", -0.1)])
def test_bad_augment_settings_are_named(solid_records, key, value):
    with pytest.raises(ValueError, match=f"data.augment.{key}"):
        build_dali_train_loader(config("dali", {key: value}), solid_records, sampler_for(solid_records))


def test_cuda_requested_without_a_gpu_is_a_clear_error(solid_records):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(dali_loader.DaliUnavailable, match="no GPU"):
        build_dali_train_loader(config("dali", device="cuda"), solid_records, sampler_for(solid_records))


@cuda
def test_gpu_loader_gives_cuda_tensors_matching_the_cpu_pipeline(solid_records):
    sampler = sampler_for(solid_records)
    gpu_loader = build_dali_train_loader(config("dali", NO_AUGMENT, device="cuda"), solid_records, sampler)
    sampler.set_epoch(0)
    first = next(iter(gpu_loader))
    assert all(v.device.type == "cuda" for v in first.values())
    gpu = epoch_batches(gpu_loader, sampler)
    cpu = epoch_batches(build_dali_train_loader(config("dali", NO_AUGMENT), solid_records, sampler), sampler)
    for g, c in zip(gpu, cpu):
        assert torch.equal(g["index"], c["index"]) and torch.equal(g["label"], c["label"])
        torch.testing.assert_close(g["view1"], c["view1"], atol=2.0 / 255 / min(STD), rtol=0)
        torch.testing.assert_close(g["view2"], c["view2"], atol=2.0 / 255 / min(STD), rtol=0)


@cuda
def test_gpu_loader_decodes_jpeg_on_the_gpu_with_augmentation(noise_records):
    sampler = sampler_for(noise_records)
    batches = epoch_batches(build_dali_train_loader(config("dali", {"jpeg_p": 0.5}, device="cuda"), noise_records,
                                                    sampler), sampler)
    lo, hi = normalised_bounds()
    for b in batches:
        assert b["view1"].shape == (BATCH, 3, SIZE, SIZE) and torch.isfinite(b["view1"]).all()
        assert (b["view1"] >= lo - 1e-4).all() and (b["view1"] <= hi + 1e-4).all()


# ---- video decoding (rccl.data.dali_video) -------------------------------------------------------------

from rccl.data import dali_video  # noqa: E402
from rccl.data import video as pyav_video  # noqa: E402


def write_video(path: Path, codec: str, n: int = 12, w: int = 64, h: int = 48) -> Path:
    """A small clip whose frames differ (a moving gradient), encoded by PyAV."""
    import av

    pix = {"mjpeg": "yuvj420p"}.get(codec, "yuv420p")
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = w, h, pix
        for i in range(n):
            img = np.zeros((h, w, 3), np.uint8)
            img[..., 0] = np.arange(w)[None, :] * 150 // w + 6 * i  # smooth: no edge for chroma to blur
            img[..., 1] = np.arange(h)[:, None] * 5
            img[..., 2] = 200 - 10 * i
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def assert_frames_close(got: dict, want: dict, mean_tol: float, p99_tol: float) -> None:
    assert sorted(got) == sorted(want)
    for i in want:
        assert got[i].shape == want[i].shape and got[i].dtype == np.uint8, i
        diff = np.abs(got[i].astype(np.int16) - want[i].astype(np.int16))
        mean, p99 = float(diff.mean()), float(np.percentile(diff, 99))
        assert mean <= mean_tol and p99 <= p99_tol, f"frame {i}: mean |diff| {mean:.2f}, 99th percentile {p99}"


def test_dali_cpu_video_decoder_matches_pyav_on_mjpeg(tmp_path):
    clip = write_video(tmp_path / "clip.avi", "mjpeg")
    indices = [0, 1, 5, 6, 11, 12, 40]  # 12 and 40 are past the end: absent, as with PyAV
    got = dali_video.read_frames(clip, indices, device_id=None)
    assert_frames_close(got, pyav_video.read_frames(clip, indices), mean_tol=2.0, p99_tol=6)
    assert sorted(got) == [0, 1, 5, 6, 11]
    assert not np.array_equal(got[0], got[11])  # the frames asked for, not one repeated
    with pytest.raises(ValueError, match="negative frame index"):
        dali_video.read_frames(clip, [-1, 2], device_id=None)


def test_dali_cpu_video_decoder_refuses_h264_and_names_pyav(tmp_path):
    clip = write_video(tmp_path / "clip.mp4", "libx264")
    with pytest.raises(dali_video.DaliUnavailable, match=r"no h264.*PyAV"):
        dali_video.read_frames(clip, [0, 1], device_id=None)


@pytest.mark.parametrize("damage", ["truncated", "overwritten"])
def test_damaged_video_falls_back_to_pyav_with_a_warning(tmp_path, damage):
    clip = write_video(tmp_path / "clip.avi", "mjpeg", n=20)
    data = bytearray(clip.read_bytes())
    if damage == "truncated":
        data = data[: len(data) * 9 // 10]
    else:
        data[len(data) // 3: len(data) // 2] = bytes(len(data) // 2 - len(data) // 3)
    clip.write_bytes(bytes(data))
    want = pyav_video.read_frames(clip, range(20))
    with pytest.warns(UserWarning, match=r"clip.avi: DALI could not decode it \(.*(data|packet).*\); reading it with PyAV"):
        got = dali_video.read_frames(clip, range(20), device_id=None)
    assert sorted(got) == sorted(want) and 0 < len(got) < 20
    for i in want:
        assert np.array_equal(got[i], want[i])


def test_missing_video_is_named(tmp_path):
    with pytest.raises(pyav_video.VideoError, match="nope.mp4: no such file"):
        dali_video.read_frames(tmp_path / "nope.mp4", [0], device_id=None)


def test_frame_reader_choice():
    if not torch.cuda.is_available():
        assert dali_video.frame_reader("auto") is pyav_video.read_frames
        with pytest.raises(dali_video.DaliUnavailable, match="no GPU"):
            dali_video.frame_reader("dali")
    assert dali_video.frame_reader("pyav") is pyav_video.read_frames
    with pytest.raises(ValueError, match="auto, pyav or dali"):
        dali_video.frame_reader("ffmpeg")


@cuda
def test_nvdec_frames_match_pyav_on_the_real_clip():
    if not CLIP.is_file():
        pytest.skip(f"real test clip not found at {CLIP} (../shared/data/faces is absent in this checkout)")
    indices = [0, 1, 57, 58, 150, 151, 273, 274, 100000]  # 275 frames: the last two, and one past the end
    got = dali_video.frame_reader("dali")(CLIP, indices)
    # H.264 decoding is bit-exact; what differs is the YUV -> RGB conversion and chroma upsampling.
    assert_frames_close(got, pyav_video.read_frames(CLIP, indices), mean_tol=3.0, p99_tol=16)
    assert 274 in got and 100000 not in got


@cuda
def test_nvdec_frames_match_pyav_on_a_small_h264_clip(tmp_path):
    clip = write_video(tmp_path / "clip.mp4", "libx264", n=16, w=160, h=96)
    indices = [0, 3, 4, 15]
    assert_frames_close(dali_video.read_frames(clip, indices, device_id=torch.cuda.current_device()),
                        pyav_video.read_frames(clip, indices), mean_tol=3.0, p99_tol=16)
