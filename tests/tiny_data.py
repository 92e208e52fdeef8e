"""The one test-data factory of the training, evaluation and prediction tests (imported as `tiny_data`,
the tests folder being on pytest's rootdir path: no sys.path edits).

Training: `make_tiny_manifest` writes a tiny Celeb-DF-shaped manifest with its crops (naturals of a few
identities, fakes made from each natural video with the face of another identity, two qualities, train and
test splits, consecutive frame pairs; fakes carry a bright square so a model can learn them), and
`tiny_overrides` gives the config overrides of a run that takes a second or two on the CPU.

Evaluation and prediction: `make_tiny_run` writes uniform-colour crops, their manifest, and a run folder's
config.yaml resolved by the training room's own config code. Two detectors: `save_stage2_checkpoint`
writes a real stage-2 checkpoint of a tiny timm encoder with RunDir.save_checkpoint (the true
run-folder contract, read back by RunDir.load_detector); `install_brightness_detector` swaps
RunDir.load_detector for a `BrightnessDetector`, whose fake probability is the mean brightness of the
un-normalised image, so a crop filled with grey level v scores v / 255 and the tests compute every
expected metric by hand from the levels.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image

from rccl.data.manifest import write_manifest
from rccl.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from rccl.model import build_model
from rccl.run import RunDir
from rccl.train.config import load_config, save_config


# -- training data ---------------------------------------------------------------------------------------
def make_tiny_manifest(root: Path, *, identities: int = 3, videos_per_identity: int = 2, frames: int = 4,
                       size: int = 16, qualities=("raw", "c23"), seed: int = 0, dataset: str = "synthetic",
                       identical: bool = False, landmarks: bool = False) -> Path:
    """identical: every crop the same image (nothing to learn: a contrastive run collapses at once).
    landmarks: every row gets 68 landmarks (an ellipse about the crop's centre, as rccl-prep's column) so
    that the naturals can be self-blended (data.fakes=sbi)."""
    rng = np.random.default_rng(seed)
    rows = []
    naturals = [(f"id{i}", f"id{i}_{v:04d}") for i in range(identities) for v in range(videos_per_identity)]
    videos = [("Celeb-real/" + name + ".mp4", 0, ident, name, "") for ident, name in naturals]
    for k, (ident, name) in enumerate(naturals):
        target = f"id{(int(ident[2:]) + 1) % identities}"
        videos.append((f"Celeb-synthesis/{ident}_{target}_{name[-4:]}.mp4", 1, "", name, target))
    for quality in qualities:
        for vi, (video, label, ident, source, target) in enumerate(videos):
            split = "test" if vi % videos_per_identity == videos_per_identity - 1 and vi % 3 == 0 else "train"
            for frame in range(frames):
                img = rng.integers(0, 120, (size, size, 3), dtype=np.uint8)
                if identical:
                    img[:] = 90
                elif label:
                    img[size // 4: 3 * size // 4, size // 4: 3 * size // 4] += 120
                rel = f"crops/{quality}/{Path(video).stem}/{frame:06d}.png"
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(img).save(root / rel)
                rows.append({"path": rel, "dataset": dataset, "split": split, "quality": quality,
                             "video": video, "label": label, "frame": frame, "pair": frame // 2,
                             "source": source if label else "", "target": target, "identity": ident,
                             "box": [0, 0, size, size]})
                if landmarks:
                    rows[-1]["landmarks"] = ellipse_landmarks(size)
                    rows[-1]["crop_size"] = size
    path = root / "manifest.jsonl"
    write_manifest(path, rows)
    return path


def ellipse_landmarks(size: int, rx: float = 0.3, ry: float = 0.35, cx: float = 0.5, cy: float = 0.55) -> list:
    """68 points on an ellipse (radii and centre as fractions of the crop's side): a face-like hull."""
    t = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    return np.round(np.stack([(cx + rx * np.cos(t)) * size, (cy + ry * np.sin(t)) * size], 1), 1).tolist()


def tiny_overrides(manifest: Path, out: Path, **extra) -> list[str]:
    """Config overrides for a run that takes a second or two on the CPU."""
    settings = {
        "data.manifest": str(manifest), "data.image_size": 16, "data.workers": 0, "data.backend": "torch",
        "model.encoder": "test_byobnet", "model.pretrained": "false",
        "model.allow_scratch": "true", "model.channels_last": "false", "model.proj_hidden": 32,
        "model.proj_dim": 16, "stage1.epochs": 2, "stage1.batch_size": 8, "stage2.epochs": 1,
        "stage2.batch_size": 8, "loss.bank_size": 4, "loss.negatives": 4, "train.out": str(out),
        "train.progress": "false", "train.threads": 1, "eval.after_training": "false",
    }
    settings.update(extra)
    return [f"{k}={v}" for k, v in settings.items()]


# -- a run folder for evaluation and prediction ----------------------------------------------------------
IMAGE_SIZE = 16
ENCODER = "test_efficientnet"  # timm's ~0.1 M-parameter test network: a real encoder that builds in ms

# (quality, split, video, label, grey levels of its frames)
VIDEOS = [
    # raw test: perfectly separated
    ("raw", "test", "real/a.mp4", 0, [40, 60]),
    ("raw", "test", "real/b.mp4", 0, [50, 70]),
    ("raw", "test", "fake/c.mp4", 1, [200, 220]),
    ("raw", "test", "fake/d.mp4", 1, [210, 230]),
    ("raw", "val", "real/e.mp4", 0, [45, 65]),
    ("raw", "val", "fake/f.mp4", 1, [205, 215]),
    # c23 test: one bright natural frame (200) and one dark fake frame (30); the video means still separate
    ("c23", "test", "real/a.mp4", 0, [40, 60]),
    ("c23", "test", "real/b.mp4", 0, [50, 200]),
    ("c23", "test", "fake/c.mp4", 1, [210, 220]),
    ("c23", "test", "fake/d.mp4", 1, [30, 230]),
    # c40: the test split holds naturals only (a one-class split); the fakes are in train
    ("c40", "test", "real/a.mp4", 0, [40, 150]),
    ("c40", "test", "real/b.mp4", 0, [50, 70]),
    ("c40", "train", "fake/c.mp4", 1, [200, 220]),
]


class BrightnessDetector(torch.nn.Module):
    """logits (log(1 - b), log b) with b the mean of the un-normalised image: softmax gives fake prob b."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = (x * self.std + self.mean).mean(dim=(1, 2, 3)).clamp(1e-6, 1 - 1e-6)
        return torch.stack([torch.log1p(-b), torch.log(b)], dim=1)


def make_tiny_run(root: Path, videos=VIDEOS) -> Path:
    """root/data/manifest.jsonl with its crops, and root/run/config.yaml pointing at it; returns the run."""
    data = root / "data"
    rows = []
    for quality, split, video, label, levels in videos:
        for frame, level in enumerate(levels):
            rel = f"crops/{quality}/{Path(video).stem}_{frame}.png"
            (data / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((8, 8, 3), level, np.uint8)).save(data / rel)
            rows.append({"path": rel, "dataset": "synthetic", "split": split, "quality": quality, "video": video,
                         "label": label, "frame": frame, "pair": frame // 2,
                         "source": "a_0000" if label else "", "target": "b" if label else "",
                         "identity": "" if label else "a", "box": [0, 0, 8, 8]})
    write_manifest(data / "manifest.jsonl", rows)
    run = root / "run"
    cfg = load_config(overrides=[f"data.manifest={data / 'manifest.jsonl'}", f"data.image_size={IMAGE_SIZE}",
                                 f"model.encoder={ENCODER}", "model.pretrained=false",
                                 "model.allow_scratch=true", "data.workers=0", "train.progress=false"])
    save_config(cfg, run / "config.yaml")
    return run


def save_stage2_checkpoint(run: Path, seed: int = 0) -> torch.nn.Module:
    """A stage-2 checkpoint of a randomly initialised tiny detector, saved as rccl-train saves one."""
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    torch.manual_seed(seed)
    model = build_model(cfg, load_weights=False).eval()
    RunDir(run).save_checkpoint(2, 1, {"config": cfg, "model": model.state_dict()})
    return model


def install_brightness_detector(monkeypatch) -> None:
    """Make RunDir.load_detector give a BrightnessDetector and the run's config.yaml."""

    def load_detector(self, map_location=None):
        return BrightnessDetector().to(map_location or "cpu"), self.config()

    monkeypatch.setattr(RunDir, "load_detector", load_detector)
