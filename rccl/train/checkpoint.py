"""Writing checkpoints (the run folder's layout and reading them back are rccl.run's).

Each file holds only tensors and plain Python values, so that `torch.load(path, weights_only=True)` reads
it: RNG states are stored as tensors and lists, the config as the plain dict of config.yaml. A checkpoint
holds: format, stage, epoch (epochs completed), config, model (the whole Detector's state_dict), optimizer,
scheduler, scaler, loss (the loss module's buffers), sampler, rng {torch, numpy, python, cuda}, metrics.
"""
from __future__ import annotations

import io
import random
import re

import numpy as np
import torch

from rccl.fileio import write_bytes
from rccl.run import CHECKPOINT_FORMAT, RunDir


def rng_state() -> dict:
    """Every RNG the training touches, as tensors and plain values (weights_only-loadable)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": {"version": py_version, "internal": list(py_internal), "gauss": py_gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


def save_checkpoint(run: RunDir, stage: int, epoch: int, state: dict, keep_epochs: int = 0):
    """Write stage{stage}_{epoch:03d}.pt and the same bytes as stage{stage}_last.pt (each atomically: a kill
    leaves the previous last.pt or the new one); prune numbered files beyond `keep_epochs` (0 keeps all).
    Returns the numbered file."""
    run = RunDir(run)
    buffer = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, "stage": stage, "epoch": epoch, **state}, buffer)
    data = buffer.getvalue()
    path = run.checkpoint_path(stage, epoch)
    write_bytes(path, data)
    write_bytes(run.last_checkpoint_path(stage), data)
    if keep_epochs > 0:
        numbered = sorted(p for p in run.checkpoint_dir.glob(f"stage{stage}_*.pt")
                          if re.fullmatch(rf"stage{stage}_\d{{3,}}\.pt", p.name))
        for old in numbered[:-keep_epochs]:
            old.unlink(missing_ok=True)
    return path
