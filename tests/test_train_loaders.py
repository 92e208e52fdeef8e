"""The torch training loader keeps the batch contract; the evaluation loader walks frames in order; the
backend choice and the CLI's errors."""
import warnings

import pytest
import torch

from rccl.data.loaders import CropError, build_eval_loader, build_train_loader, dali_available, read_crop, resolve_backend
from rccl.data.manifest import read_manifest
from rccl.data.pairing import ForgeryPairSampler
from rccl.data.transforms import IMAGENET, Normalization, eval_transform
from rccl.model import ModelError, input_normalization
from rccl.train.config import load_config
from tiny_data import make_tiny_manifest, tiny_overrides


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    manifest = make_tiny_manifest(root / "data", size=20)
    cfg = load_config(None, tiny_overrides(manifest, root / "runs"))
    records = [r for r in read_manifest(manifest) if r["split"] == "train" and r["quality"] == "raw"]
    return cfg, records


@pytest.mark.parametrize("cache", [False, True])
def test_train_batch_contract(tiny, cache):
    cfg, records = tiny
    cfg = {**cfg, "data": {**cfg["data"], "cache_images": cache}}
    sampler = ForgeryPairSampler(records, 6, "temporal", seed=0)
    batches = list(build_train_loader(cfg, records, sampler))
    assert len(batches) == len(sampler)
    b = batches[0]
    assert set(b) == {"view1", "view2", "label", "index"}
    assert b["view1"].shape == b["view2"].shape == (6, 3, 16, 16) and b["view1"].dtype == torch.float32
    assert b["label"].dtype == b["index"].dtype == torch.int64 and b["label"].shape == (6,)
    assert b["label"].tolist() == [records[i]["label"] for i in b["index"].tolist()]
    norm = input_normalization(cfg["model"]["encoder"])
    lo = min((0 - m) / s for m, s in zip(norm.mean, norm.std))
    hi = max((1 - m) / s for m, s in zip(norm.mean, norm.std))
    assert b["view1"].min() >= lo - 1e-4 and b["view1"].max() <= hi + 1e-4
    assert not torch.equal(b["view1"], b["view2"])  # independent augmentations


@pytest.mark.parametrize("fakes", ["real", "sbi"])
def test_the_views_seed_only_the_cpu_generator(tmp_path, monkeypatch, fakes):
    """The per-item seeds touch torch's CPU generator inside fork_rng(devices=[]) and nothing else: no CUDA
    generator is reseeded (fork_rng would not restore it), and the process's CPU stream is left as it was
    (issue 27, defect 11: torch.manual_seed reseeded every CUDA generator at data.workers=0)."""
    from rccl.data.blend import training_set

    reseeded = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: reseeded.append(seed))
    monkeypatch.setattr(torch.cuda, "manual_seed", lambda seed: reseeded.append(seed))
    manifest = make_tiny_manifest(tmp_path / "data", landmarks=True)
    cfg = load_config(None, tiny_overrides(manifest, tmp_path / "runs", **{"data.fakes": fakes}))
    records = training_set([r for r in read_manifest(manifest) if r["split"] == "train" and r["quality"] == "raw"],
                           fakes).records
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    reseeded.clear()
    batches = list(build_train_loader(cfg, records, ForgeryPairSampler(records, 4, "instance", seed=0)))
    assert batches and reseeded == []
    assert torch.equal(torch.rand(3), expected)


def test_eval_loader_walks_frames_in_order(tiny):
    cfg, records = tiny
    batches = list(build_eval_loader(cfg, records, batch_size=7, workers=0))
    assert torch.cat([b["index"] for b in batches]).tolist() == list(range(len(records)))
    assert batches[0]["image"].shape == (7, 3, 16, 16)


def test_input_normalization_comes_from_the_encoders_pretrained_config():
    half = Normalization((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert input_normalization("legacy_xception") == half  # timm's legacy_xception expects 0.5 / 0.5
    assert input_normalization("legacy_xception.tf_in1k") == half
    assert input_normalization("resnet10t") == IMAGENET
    assert input_normalization("resnet50") == IMAGENET
    with pytest.raises(ModelError, match="model.encoder: timm has no model named 'no_such_net'"):
        input_normalization("no_such_net")


@pytest.mark.parametrize("encoder", ["legacy_xception", "resnet10t"])
def test_both_torch_loaders_normalise_with_the_encoders_mean_and_std(tiny, encoder):
    cfg, records = tiny
    still = {"scale": [1.0, 1.0], "ratio": [1.0, 1.0], "flip": 0.0, "color_jitter": 0.0, "blur_p": 0.0}
    cfg = {**cfg, "model": {**cfg["model"], "encoder": encoder},
           "data": {**cfg["data"], "augment": {**cfg["data"]["augment"], **still}}}
    norm = input_normalization(encoder)
    by_hand = eval_transform(16, norm)
    frames = next(iter(build_eval_loader(cfg, records, batch_size=4, workers=0)))
    expected = torch.stack([by_hand(read_crop(records[i]["abspath"])) for i in frames["index"].tolist()])
    torch.testing.assert_close(frames["image"], expected)
    sampler = ForgeryPairSampler(records, 4, "instance", seed=0)
    views = next(iter(build_train_loader(cfg, records, sampler)))
    # a crop of the whole image, no jitter: the training view is the evaluation view of its anchor
    expected = torch.stack([by_hand(read_crop(records[i]["abspath"])) for i in views["index"].tolist()])
    torch.testing.assert_close(views["view1"], expected, atol=1e-5, rtol=0)


def test_unreadable_crops_are_named(tmp_path):
    with pytest.raises(CropError, match="no such file"):
        read_crop(str(tmp_path / "gone.png"))
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(CropError, match="bad.png: cannot be decoded"):
        read_crop(str(tmp_path / "bad.png"))


def test_backend_choice():
    assert resolve_backend("torch") == "torch"
    # auto: DALI whenever it is installed (faster than the torch loader on CPU and GPU), else torch
    assert resolve_backend("auto") == ("dali" if dali_available() else "torch")
    with pytest.raises(ValueError, match="data.backend"):
        resolve_backend("opencv")


def test_cli_reports_config_errors_in_one_line(capsys, tmp_path):
    from rccl.cli.train import main

    assert main(["stage1.lrr=1"]) == 2
    err = capsys.readouterr().err
    assert "rccl-train: error:" in err and "unknown config key 'stage1.lrr'" in err
    assert main(["--resume", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err


def test_jpeg_distortion_changes_pixels_only_when_asked():
    from rccl.data.transforms import train_transform

    torch.manual_seed(0)
    image = (torch.rand(3, 32, 32) * 255).to(torch.uint8)
    still = {"scale": [1.0, 1.0], "ratio": [1.0, 1.0], "flip": 0.0, "color_jitter_p": 0.0, "blur_p": 0.0}
    plain = train_transform(32, still)(image)
    assert torch.allclose(plain, train_transform(32, still)(image))
    with warnings.catch_warnings():  # through a maintained codec: torchvision's is deprecated since 0.29
        warnings.simplefilter("error", DeprecationWarning)
        distorted = train_transform(32, {**still, "jpeg_p": 1.0, "jpeg_quality": [10, 10]})(image)
    assert distorted.shape == plain.shape and distorted.dtype == plain.dtype
    assert (distorted - plain).abs().mean() > 0.05


def test_stage2_views_are_crop_and_flip_only():
    """docs/training.md: stage 2 keeps the crop and the flip of stage 1 and no photometric distortion."""
    from rccl.data.transforms import train_transform
    from rccl.train.stage2 import stage2_config

    cfg = load_config(None, ["data.augment.jpeg_p=0.5", "data.augment.blur_p=0.5", "data.augment.color_jitter_p=0.8"])
    stage1 = {type(t).__name__ for t in train_transform(32, cfg["data"]["augment"]).transforms}
    assert {"RandomApply"} <= stage1  # colour, blur and JPEG are wrapped in RandomApply
    steps = [type(t).__name__ for t in train_transform(32, stage2_config(cfg)["data"]["augment"]).transforms]
    assert steps == ["RandomResizedCrop", "RandomHorizontalFlip", "ToDtype", "Normalize"]
    assert cfg["data"]["augment"]["jpeg_p"] == 0.5  # the run's own config is left as it was
