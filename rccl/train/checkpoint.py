"""Checkpoints of the run folder: RUN/checkpoints/{stage1,stage2}_{epoch:03d,last}.pt.

Every file is written atomically (temporary file, fsync, os.replace) and holds only tensors and plain
Python values, so that `torch.load(path, weights_only=True)` reads it: RNG states are stored as tensors
and lists, the config as the plain dict of config.yaml. A checkpoint holds:
  format, stage, epoch (epochs completed), config, model (the whole Detector's state_dict), optimizer,
  scheduler, scaler, loss (RealCentricLoss buffers), sampler, rng {torch, numpy, python, cuda}, metrics.
"""
from __future__ import annotations

import os
import random
import re
import tempfile
from pathlib import Path

import numpy as np
import torch

from rccl.errors import RcclError

FORMAT = "rccl-checkpoint-1"


class CheckpointError(RcclError, RuntimeError):
    """A run folder or checkpoint that cannot be used; the message names the file and what to do."""


def checkpoint_dir(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / "checkpoints"


def epoch_path(run_dir, stage: int, epoch: int) -> Path:
    return checkpoint_dir(run_dir) / f"stage{stage}_{epoch:03d}.pt"


def last_path(run_dir, stage: int) -> Path:
    return checkpoint_dir(run_dir) / f"stage{stage}_last.pt"


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


def _atomic_torch_save(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _atomic_link(src: Path, dst: Path) -> None:
    """dst becomes the same file as src, atomically (a hard link renamed over dst; a copy where links fail)."""
    tmp = dst.with_name(dst.name + f".{os.getpid()}.lnk")
    if tmp.exists():
        tmp.unlink()
    try:
        os.link(src, tmp)
    except OSError:
        _atomic_torch_save(torch.load(src, map_location="cpu", weights_only=True), tmp)
    os.replace(tmp, dst)


def save_checkpoint(run_dir, stage: int, epoch: int, state: dict, keep_epochs: int = 0) -> Path:
    """Write stage{stage}_{epoch:03d}.pt and point stage{stage}_last.pt at it; prune old numbered files
    beyond `keep_epochs` (0 keeps all). Returns the numbered file."""
    state = {"format": FORMAT, "stage": stage, "epoch": epoch, **state}
    path = epoch_path(run_dir, stage, epoch)
    _atomic_torch_save(state, path)
    _atomic_link(path, last_path(run_dir, stage))
    if keep_epochs > 0:
        numbered = sorted(p for p in checkpoint_dir(run_dir).glob(f"stage{stage}_*.pt")
                          if re.fullmatch(rf"stage{stage}_\d{{3,}}\.pt", p.name))
        for old in numbered[:-keep_epochs]:
            old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: no such file")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise CheckpointError(f"checkpoint {path}: cannot be read ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path}: not an rccl checkpoint (format {state.get('format') if isinstance(state, dict) else type(state).__name__!r}, expected {FORMAT})")
    return state


def latest(run_dir, stage: int) -> dict | None:
    """The stage's last checkpoint, or None when the stage has not finished an epoch."""
    path = last_path(run_dir, stage)
    return load_checkpoint(path) if path.is_file() else None


def load_detector(run_dir: str | os.PathLike, map_location="cpu"):
    """The run's stage-2 detector (encoder + linear head, eval mode; model(images) -> logits (B, 2), class
    1 = fake) and the run's resolved config."""
    from rccl.model import build_model  # model imports timm: keep it out of checkpoint-only uses

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run folder {run_dir}: no such folder")
    path = last_path(run_dir, 2)
    if not path.is_file():
        hint = ("stage 1 is done: run `rccl-train --resume RUN --stage 2`" if last_path(run_dir, 1).is_file()
                else "train it first with rccl-train")
        raise CheckpointError(f"run {run_dir}: no stage-2 checkpoint ({path.name}); {hint}")
    state = load_checkpoint(path, map_location="cpu")
    cfg = state["config"]
    model = build_model(cfg, load_weights=False)
    model.load_state_dict(state["model"])
    model.to(map_location if map_location is not None else "cpu").eval()
    return model, cfg
