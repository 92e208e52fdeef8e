"""Face crops in, fake probabilities out: batched inference with a run's detector.

Shared by rccl.evaluate (crops of the manifest, through the training room's evaluation loader) and
rccl.predict (crops cut from a user's file), and both use rccl.data.transforms.eval_transform, so that a
crop is seen exactly as the detector saw crops in training: the whole crop resized to the input size,
scaled to [0, 1] and normalised with the encoder's mean and std (rccl.model.input_normalization).
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from rccl.data.transforms import Normalization, eval_transform
from rccl.errors import RcclError


class ScoringError(RcclError, ValueError):
    """A run whose config or detector cannot score crops (bad data.image_size, logits of the wrong shape)."""


def input_size(cfg: dict, where: str = "config") -> int:
    """The side of the square input the detector was trained on, from a run's resolved config."""
    size = (cfg.get("data") or {}).get("image_size")
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        raise ScoringError(f"{where}: data.image_size must be a positive integer (the detector's input side), "
                         f"got {size!r}")
    return size


@torch.inference_mode()
def fake_probabilities(model: torch.nn.Module, images: torch.Tensor, device: torch.device | str) -> np.ndarray:
    """softmax(model(images))[:, 1] as float64 numpy, for one batch of normalised (B, 3, S, S) images."""
    logits = model(images.to(device, non_blocking=True))
    if logits.ndim != 2 or logits.shape[1] != 2:
        raise ScoringError(f"the detector must give logits of shape (B, 2) (class 1 = fake); got {tuple(logits.shape)}")
    return torch.softmax(logits.float(), dim=1)[:, 1].double().cpu().numpy()


def score_batches(model: torch.nn.Module, batches: Iterable[dict], device: torch.device | str, *,
                  desc: str = "scoring", progress: bool = True) -> np.ndarray:
    """Fake probability of every image of an evaluation loader's batches ({"image": (B, 3, S, S), ...}),
    in loader order. The model is put in eval mode."""
    model.eval()
    out = [fake_probabilities(model, batch["image"], device)
           for batch in tqdm(batches, desc=desc, unit="batch", disable=not progress, leave=False)]
    return np.concatenate(out) if out else np.zeros(0)


@torch.inference_mode()
def score_and_embed_batches(model: torch.nn.Module, batches: Iterable[dict], device: torch.device | str, *,
                            desc: str = "scoring", progress: bool = True) -> tuple[np.ndarray, torch.Tensor]:
    """As score_batches, for a Detector with a trained projector: (fake probabilities, the L2-normalised
    projections z (N, proj_dim) on the CPU), from one pass of the encoder."""
    model.eval()
    scores, zs = [], []
    for batch in tqdm(batches, desc=desc, unit="batch", disable=not progress, leave=False):
        features = model.encoder(batch["image"].to(device, non_blocking=True))
        logits = model.classifier(features)
        scores.append(torch.softmax(logits.float(), dim=1)[:, 1].double().cpu().numpy())
        zs.append(torch.nn.functional.normalize(model.projector(features).float(), dim=1).cpu())
    if not scores:
        return np.zeros(0), torch.zeros(0, 0)
    return np.concatenate(scores), torch.cat(zs)


def score_crops(model: torch.nn.Module, crops: Sequence[np.ndarray], image_size: int,
                device: torch.device | str, *, normalization: Normalization,
                batch_size: int = 64) -> np.ndarray:
    """Fake probability of each in-memory crop (HxWx3 uint8 RGB arrays), normalised as the encoder's
    training inputs were (the evaluation loader passes the same Normalization to eval_transform)."""
    model.eval()
    transform = eval_transform(image_size, normalization)
    out = []
    for start in range(0, len(crops), batch_size):
        chunk = crops[start:start + batch_size]
        batch = torch.stack([transform(torch.from_numpy(np.array(c)).permute(2, 0, 1)) for c in chunk])
        out.append(fake_probabilities(model, batch, device))
    return np.concatenate(out) if out else np.zeros(0)
