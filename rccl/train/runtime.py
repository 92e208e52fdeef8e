"""Where and how a run computes: the device, the process group's place in it, autocast and the GradScaler.
`Runtime` is what every stage and hook receives; the error class of training lives here too."""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field

import torch

from rccl.errors import RcclError
from rccl.run import RunDir
from rccl.train.distributed import DistInfo

NATIVE_BF16_CPU = ("AVX512_BF16", "AMX")
log = logging.getLogger("rccl.train")


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
    run: RunDir
    device: torch.device
    dist: DistInfo = field(default_factory=DistInfo)
    amp_dtype: torch.dtype | None = None   # None: full precision

    @property
    def progress(self) -> bool:
        return bool(self.cfg["train"]["progress"]) and self.dist.is_main

    def log(self, message: str) -> None:
        """Progress of the run, from rank 0 only, through the `rccl.train` logger (stderr under the CLI)."""
        if self.dist.is_main:
            log.info(message)

    def warn(self, message: str) -> None:
        """Something the user should act on (e.g. a collapsed contrastive stage), from rank 0 only."""
        if self.dist.is_main:
            log.warning("warning: " + message)

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


def resolve_amp(cfg: dict, device: torch.device, log=log.info) -> torch.dtype | None:
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
