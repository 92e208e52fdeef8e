"""What both stages share: the runtime (device, ranks, mixed precision), optimiser and schedule, the
per-epoch log (epochs.csv + TensorBoard), the non-finite-loss stop, and resuming from a checkpoint.
"""
from __future__ import annotations

import contextlib
import csv
import math
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from rccl.errors import RcclError
from rccl.train import checkpoint as ckpt
from rccl.train.distributed import DistInfo

NATIVE_BF16_CPU = ("AVX512_BF16", "AMX")


class TrainingError(RcclError, RuntimeError):
    """Training cannot go on (non-finite loss, inconsistent resume); the message says where and why."""


def cpu_has_native_bf16() -> bool:
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except AttributeError:
        return False
    return any(c in capability for c in NATIVE_BF16_CPU)


@dataclass
class Runtime:
    cfg: dict
    run_dir: Path
    device: torch.device
    dist: DistInfo = field(default_factory=DistInfo)
    amp_dtype: torch.dtype | None = None   # None: full precision

    @property
    def progress(self) -> bool:
        return bool(self.cfg["train"]["progress"]) and self.dist.is_main

    def log(self, message: str) -> None:
        if self.dist.is_main:
            print(message, flush=True)

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """Enabled only for float16 (bfloat16 has float32's range and needs no scaling)."""
        return torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype is torch.float16)

    def to_input(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.device, non_blocking=True)
        if self.cfg["model"]["channels_last"]:
            images = images.contiguous(memory_format=torch.channels_last)
        return images


def resolve_device(choice: str) -> torch.device:
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise TrainingError("train.device=cuda but no CUDA GPU is available; use train.device=cpu or auto")
    return torch.device(choice)


def resolve_amp(cfg: dict, device: torch.device, log=print) -> torch.dtype | None:
    """The autocast dtype --amp asks for on this device, or None. On a CPU without native bfloat16
    (AVX2 only), bfloat16 autocast is emulated and several times slower than float32, so with
    train.amp_cpu=auto it is skipped with a one-line note; train.amp_cpu=force uses it anyway."""
    t = cfg["train"]
    if not t["amp"]:
        return None
    dtype = torch.bfloat16 if t["amp_dtype"] == "bfloat16" else torch.float16
    if device.type == "cpu":
        if t["amp_cpu"] == "off":
            log("--amp: train.amp_cpu=off, training in float32 on the CPU")
            return None
        if t["amp_cpu"] == "auto" and not cpu_has_native_bf16():
            log(f"--amp: this CPU has no native bfloat16 ({torch.backends.cpu.get_cpu_capability()}); "
                f"emulated autocast is slower than float32, so training runs in float32 "
                f"(train.amp_cpu=force to use it anyway)")
            return None
    return dtype


def build_optimizer(params, stage_cfg: dict) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=stage_cfg["lr"], momentum=stage_cfg["momentum"],
                           weight_decay=stage_cfg["weight_decay"])


def build_scheduler(optimizer, stage_cfg: dict, steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step: linear warm-up for warmup_epochs, then cosine to zero (or constant)."""
    total = max(1, stage_cfg["epochs"] * steps_per_epoch)
    warmup = stage_cfg["warmup_epochs"] * steps_per_epoch
    cosine = stage_cfg["scheduler"] == "cosine"

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if not cosine:
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def stop_if_not_finite(loss: torch.Tensor, stage: int, epoch: int, step: int, last_saved: Path | None,
                       device) -> None:
    """Raise on every rank when the loss is not finite on any rank, before the step touches the weights."""
    from rccl.train.distributed import all_true

    if all_true(bool(torch.isfinite(loss.detach()).all()), device):
        return
    kept = f"the last good checkpoint is {last_saved}" if last_saved else "no checkpoint was written yet"
    raise TrainingError(f"stage {stage}, epoch {epoch + 1}, step {step + 1}: the loss is {loss.item()} (not "
                        f"finite); stopped without saving this epoch; {kept}. Lower the learning rate "
                        f"(stage{stage}.lr) or try without --amp")


def optimizer_step(loss: torch.Tensor, optimizer, scaler, scheduler) -> None:
    """One update of both stages: backward through the (float16-only) GradScaler, step, LR schedule."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()


class EpochLog:
    """RUN/epochs.csv (one row per finished epoch, both stages) and RUN/tb/ TensorBoard scalars."""

    FIELDS = ("stage", "epoch", "loss", "lr", "seconds", "views_per_s", "accuracy", "pairing")

    def __init__(self, run_dir: Path, enabled: bool):
        self.path = run_dir / "epochs.csv"
        self.tb_dir = run_dir / "tb"
        self.enabled = enabled
        self._writer = None

    def truncate_after(self, stage: int, epoch: int) -> None:
        """Forget rows later than (stage, epoch): a resumed run rewrites them (atomically)."""
        if not self.enabled or not self.path.is_file():
            return
        with open(self.path, newline="", encoding="utf-8") as f:
            rows = [r for r in csv.DictReader(f) if (int(r["stage"]), int(r["epoch"])) <= (stage, epoch)]
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix="epochs.csv.", suffix=".tmp")
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=self.FIELDS)
            w.writeheader()
            w.writerows(rows)
        os.replace(tmp, self.path)

    def write(self, row: dict) -> None:
        if not self.enabled:
            return
        new = not self.path.is_file()
        with open(self.path, "a", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=self.FIELDS)
            if new:
                w.writeheader()
            w.writerow({k: row.get(k, "") for k in self.FIELDS})
        writer = self._tb()
        if writer is not None:
            step = row["epoch"]
            for key in ("loss", "lr", "views_per_s", "accuracy"):
                if isinstance(row.get(key), (int, float)):
                    writer.add_scalar(f"stage{row['stage']}/{key}", row[key], step)
            writer.flush()

    def _tb(self):
        if self._writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # TensorBoard is optional; the CSV has every number
                print("note: tensorboard is not installed; epochs.csv only", file=sys.stderr)
                self._writer = False
                return None
            self._writer = SummaryWriter(str(self.tb_dir))
        return self._writer or None

    def close(self) -> None:
        if self._writer:
            self._writer.close()


def restore(state: dict, *, model, optimizer, scheduler, scaler, sampler, loss_fn=None) -> int:
    """Load a checkpoint's states into the live objects; returns the epochs already done."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    if loss_fn is not None and state.get("loss"):
        loss_fn.load_state_dict(state["loss"])
    if state.get("sampler"):
        sampler.load_state_dict(state["sampler"])
    ckpt.set_rng_state(state["rng"])
    return int(state["epoch"])


def state_to_save(rt: Runtime, *, model, optimizer, scheduler, scaler, sampler, loss_fn=None, metrics=None) -> dict:
    return {"config": rt.cfg, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if scaler.is_enabled() else {},
            "loss": loss_fn.state_dict() if loss_fn is not None else {}, "sampler": sampler.state_dict(),
            "rng": ckpt.rng_state(), "metrics": metrics or {}}
