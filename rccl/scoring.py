"""Face crops in, fake probabilities out: the evaluation transform and batched inference with a detector.

Shared by rccl.evaluate (crops read from the manifest) and rccl.predict (crops cut from a user's file),
so that both see a crop exactly the way the detector was trained to: resized to the model's input size,
scaled to [0, 1] and normalised with the ImageNet mean and std (the training batch contract).
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2
from tqdm import tqdm

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def input_size(cfg: dict, where: str = "config") -> int:
    """The side of the square input the detector was trained on, from a run's resolved config."""
    size = (cfg.get("data") or {}).get("image_size")
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        raise ValueError(f"{where}: data.image_size must be a positive integer (the detector's input side), "
                         f"got {size!r}")
    return size


class CropReadError(RuntimeError):
    """A crop file that cannot be read as an image; the message names it."""


def eval_transform(image_size: int) -> v2.Compose:
    """PIL image or HxWx3 uint8 tensor -> normalised float (3, S, S)."""
    return v2.Compose([
        v2.ToImage(),
        v2.Resize((image_size, image_size), antialias=True),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def load_rgb(path: str | os.PathLike) -> Image.Image:
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise CropReadError(f"crop {path}: cannot be read as an image ({type(e).__name__}: {e})") from None


class CropFiles(Dataset):
    """Crop files as normalised tensors, in the order given."""

    def __init__(self, paths: Sequence[str | os.PathLike], image_size: int):
        self.paths = list(paths)
        self.transform = eval_transform(image_size)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.transform(load_rgb(self.paths[i]))


@torch.inference_mode()
def fake_probabilities(model: torch.nn.Module, images: torch.Tensor, device: torch.device | str) -> np.ndarray:
    """softmax(model(images))[:, 1] as float64 numpy, for one batch of normalised (B, 3, S, S) images."""
    logits = model(images.to(device, non_blocking=True))
    if logits.ndim != 2 or logits.shape[1] != 2:
        raise ValueError(f"the detector must give logits of shape (B, 2) (class 1 = fake); got {tuple(logits.shape)}")
    return torch.softmax(logits.float(), dim=1)[:, 1].double().cpu().numpy()


def score_crop_files(model: torch.nn.Module, paths: Sequence[str | os.PathLike], image_size: int,
                     device: torch.device | str, *, batch_size: int = 64, num_workers: int = 0,
                     desc: str = "scoring", progress: bool = True) -> np.ndarray:
    """Fake probability of each crop file, in the order of `paths`. The model is put in eval mode."""
    model.eval()
    device = torch.device(device)
    loader = DataLoader(CropFiles(paths, image_size), batch_size=batch_size, shuffle=False,
                        num_workers=num_workers, pin_memory=device.type == "cuda")
    out = [fake_probabilities(model, batch, device)
           for batch in tqdm(loader, desc=desc, unit="batch", disable=not progress, leave=False)]
    return np.concatenate(out) if out else np.zeros(0)


def score_crops(model: torch.nn.Module, crops: Sequence[np.ndarray | Image.Image], image_size: int,
                device: torch.device | str, *, batch_size: int = 64) -> np.ndarray:
    """Fake probability of each in-memory crop (HxWx3 uint8 RGB arrays or PIL images)."""
    model.eval()
    transform = eval_transform(image_size)
    out = []
    for start in range(0, len(crops), batch_size):
        chunk = crops[start:start + batch_size]
        batch = torch.stack([transform(c if isinstance(c, Image.Image) else Image.fromarray(c)) for c in chunk])
        out.append(fake_probabilities(model, batch, device))
    return np.concatenate(out) if out else np.zeros(0)
