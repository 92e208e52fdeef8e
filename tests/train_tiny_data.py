"""A tiny Celeb-DF-shaped manifest with crops written here (PNG), for the training tests: naturals of a
few identities, fakes made from each natural video with the face of another identity, two qualities,
train and test splits, consecutive frame pairs. Fakes carry a bright square so a model can learn them."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from rccl.data.manifest import write_manifest


def make_tiny_manifest(root: Path, *, identities: int = 3, videos_per_identity: int = 2, frames: int = 4,
                       size: int = 16, qualities=("raw", "c23"), seed: int = 0) -> Path:
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
                if label:
                    img[size // 4: 3 * size // 4, size // 4: 3 * size // 4] += 120
                rel = f"crops/{quality}/{Path(video).stem}/{frame:06d}.png"
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(img).save(root / rel)
                rows.append({"path": rel, "dataset": "synthetic", "split": split, "quality": quality,
                             "video": video, "label": label, "frame": frame, "pair": frame // 2,
                             "source": source if label else "", "target": target, "identity": ident,
                             "box": [0, 0, size, size]})
    path = root / "manifest.jsonl"
    write_manifest(path, rows)
    return path


def tiny_overrides(manifest: Path, out: Path, **extra) -> list[str]:
    """Config overrides for a run that takes a second or two on the CPU."""
    settings = {
        "data.manifest": str(manifest), "data.image_size": 16, "data.workers": 0, "data.backend": "torch",
        "model.encoder": "test_byobnet", "model.channels_last": "false", "model.proj_hidden": 32,
        "model.proj_dim": 16, "stage1.epochs": 2, "stage1.batch_size": 8, "stage2.epochs": 1,
        "stage2.batch_size": 8, "loss.bank_size": 4, "loss.negatives": 4, "train.out": str(out),
        "train.progress": "false", "train.threads": 1, "eval.after_training": "false",
    }
    settings.update(extra)
    return [f"{k}={v}" for k, v in settings.items()]
