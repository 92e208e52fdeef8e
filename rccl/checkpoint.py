"""The checkpoint format, written and read here and nowhere else (the file names are rccl.run's).

A checkpoint is a dict of tensors and plain Python values, so that `torch.load(path, weights_only=True)`
reads it: RNG states are stored as tensors and lists, the config as the plain dict of config.yaml.
Format rccl-checkpoint-2 holds:
  format, stage, epoch (epochs completed), config, model (the whole Detector's state_dict), optimizer,
  scheduler, scaler, loss (the loss module's buffers), sampler, rng {torch, numpy, python, cuda},
  metrics (this epoch's epochs.csv row), log (every epochs.csv row of the run up to this checkpoint, both
  stages: a kill between the checkpoint and the CSV loses no row, the resume writes the CSV from here),
  complete (stage 2 of the cross-entropy baseline: the detector, nothing left to train).
rccl-checkpoint-1 (before `log` and `complete` were written for every checkpoint) is still read.
This module imports neither the training nor the evaluation room: both read checkpoints through it.
"""
from __future__ import annotations

import io
import os
import random
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from rccl.errors import RcclError
from rccl.fileio import write_bytes

FORMAT = "rccl-checkpoint-2"
READABLE = ("rccl-checkpoint-1", FORMAT)


class CheckpointError(RcclError, RuntimeError):
    """A run folder or checkpoint that cannot be used; the message names the file and what to do."""


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


def training_state(config: dict, model, *, optimizer=None, scheduler=None, scaler=None, loss_fn=None,
                   sampler=None, metrics: dict | None = None, log: Iterable[dict] = (),
                   complete: bool = False) -> dict:
    """The dict a checkpoint holds (without format, stage, epoch: `encode` adds those), from live objects;
    a piece a stage does not have (no loss module, no optimiser for the CE detector) is stored empty."""
    return {"config": config, "model": model.state_dict(),
            "optimizer": optimizer.state_dict() if optimizer is not None else {},
            "scheduler": scheduler.state_dict() if scheduler is not None else {},
            "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else {},
            "loss": loss_fn.state_dict() if loss_fn is not None else {},
            "sampler": sampler.state_dict() if sampler is not None else {},
            "rng": rng_state(), "metrics": dict(metrics or {}), "log": [dict(r) for r in log],
            "complete": bool(complete)}


def encode(stage: int, epoch: int, state: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, "stage": int(stage), "epoch": int(epoch), **state}, buffer)
    return buffer.getvalue()


def write(path: str | os.PathLike, stage: int, epoch: int, state: dict) -> None:
    """The checkpoint to `path`, atomically (a kill leaves the file whole: old or new)."""
    write_bytes(path, encode(stage, epoch, state))


def read(path: str | os.PathLike, map_location="cpu") -> dict:
    """A checkpoint written by rccl-train (weights_only: tensors and plain values only), of a readable
    format; a v1 file gains an empty `log` and `complete` as its writer meant it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: no such file")
    return decode(path.read_bytes(), path, map_location)


def decode(data: bytes, path: str | os.PathLike, map_location="cpu") -> dict:
    """A checkpoint's bytes (as read from `path`, which the errors name) as `read` gives them: what the
    ranks of a run get from rank 0, which alone reads the run folder (rccl.train.plan)."""
    try:
        state = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except Exception as e:
        raise CheckpointError(f"checkpoint {path}: cannot be read ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or state.get("format") not in READABLE:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"checkpoint {path}: not an rccl checkpoint (format {found!r}, "
                              f"expected one of {', '.join(READABLE)})")
    state.setdefault("complete", False)
    return state
