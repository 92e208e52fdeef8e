"""Augmentations of the torch loader (torchvision.transforms.v2 on uint8 CHW tensors): each view of a
pair is an independent draw of random resized crop, horizontal flip, colour jitter, Gaussian blur and
(optionally) JPEG-quality distortion, then scaled to [0, 1] and normalised with the ENCODER's mean and std
(the training batch contract). The evaluation transform resizes the whole crop to the input size, as
rccl.scoring does for rccl-eval.

The mean and std are those the encoder was pretrained with, from timm's pretrained config:
`rccl.model.input_normalization(cfg["model"]["encoder"])` (legacy_xception: 0.5 / 0.5; resnets: ImageNet's).
Both loaders (torch, DALI) and prediction take them from there.
"""
from __future__ import annotations

import io
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2

from rccl.defaults import DEFAULTS

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Normalization(NamedTuple):
    """Per-channel (R, G, B) mean and std of inputs scaled to [0, 1]: x -> (x - mean) / std."""
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


# timm's default for encoders whose pretrained config names none; NOT a default of the transforms below for
# a known encoder: pass rccl.model.input_normalization(encoder).
IMAGENET = Normalization(IMAGENET_MEAN, IMAGENET_STD)



class JPEG(v2.JPEG):
    """torchvision's JPEG distortion (its quality draw, so the random stream is the same) with Pillow's
    codec: torchvision's own image encoding and decoding are deprecated since torchvision 0.29 (superseded
    by TorchCodec); Pillow, maintained and already the crops' reader, gives the same bytes and pixels
    (60 of 60 crops of 16-299 px at qualities 30-95: docs/training.md, "Augmentation")."""

    def transform(self, inpt: torch.Tensor, params: dict) -> torch.Tensor:
        return jpeg_round_trip(inpt, int(params["quality"]))


def jpeg_round_trip(image: torch.Tensor, quality: int) -> torch.Tensor:
    """uint8 (3, H, W) encoded as a JPEG of `quality` and decoded again (Pillow, 4:2:0 chroma)."""
    buffer = io.BytesIO()
    Image.fromarray(image.permute(1, 2, 0).contiguous().numpy()).save(buffer, format="JPEG", quality=quality)
    with Image.open(buffer) as decoded:
        return torch.from_numpy(np.asarray(decoded.convert("RGB")).copy()).permute(2, 0, 1).contiguous()


def blur_kernel(image_size: int) -> int:
    """The Gaussian blur window for an input side (odd, about a tenth of it): shared with the DALI loader."""
    k = max(3, int(0.1 * image_size))
    return k if k % 2 else k + 1


def train_transform(image_size: int, augment: dict | None = None, normalization: Normalization = IMAGENET) -> v2.Compose:
    """One view: uint8 (3, H, W) -> float32 (3, S, S), normalised with `normalization` (the encoder's:
    rccl.model.input_normalization)."""
    a = {**DEFAULTS["data"]["augment"], **(augment or {})}
    steps = [v2.RandomResizedCrop(image_size, scale=tuple(a["scale"]), ratio=tuple(a["ratio"]), antialias=True)]
    if a["flip"] > 0:
        steps.append(v2.RandomHorizontalFlip(p=a["flip"]))
    s = a["color_jitter"]
    if s > 0 and a["color_jitter_p"] > 0:
        steps.append(v2.RandomApply([v2.ColorJitter(s, s, s, min(0.5, s / 4))], p=a["color_jitter_p"]))
    if a["blur_p"] > 0:
        steps.append(v2.RandomApply([v2.GaussianBlur(blur_kernel(image_size), sigma=tuple(a["blur_sigma"]))],
                                    p=a["blur_p"]))
    if a["jpeg_p"] > 0:
        # compression is what separates c23/c40 from raw: an optional robustness augmentation
        steps.append(v2.RandomApply([JPEG(tuple(int(q) for q in a["jpeg_quality"]))], p=a["jpeg_p"]))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(normalization.mean, normalization.std)]
    return v2.Compose(steps)


def eval_transform(image_size: int, normalization: Normalization = IMAGENET) -> v2.Compose:
    """The whole crop resized to (S, S), normalised with `normalization` (the encoder's:
    rccl.model.input_normalization): what the detector sees at evaluation."""
    return v2.Compose([v2.Resize((image_size, image_size), antialias=True),
                       v2.ToDtype(torch.float32, scale=True), v2.Normalize(normalization.mean, normalization.std)])
