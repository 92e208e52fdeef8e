"""The stage engine: everything both training stages share, written once (the shape of timm's
train_one_epoch). A stage supplies a `Stage` (its trained module, parameters, sampler, loader, loss module
and step function); `run_stage` builds the optimiser, LR schedule and GradScaler, restores a checkpoint,
wraps the module in DDP (and optionally torch.compile), and runs the epoch loop: progress bar, running
sums kept on the device and read back every `train.log_every` steps, the non-finite-loss stop, the
checkpoint and the epochs.csv / TensorBoard row of each finished epoch. (The non-finite check reads one
flag per step: it must stop before a NaN reaches the weights.)
"""
from __future__ import annotations

import contextlib
import csv
import io
import logging
import math
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch
from torch import nn
from tqdm import tqdm

from rccl.errors import RcclError
from rccl.fileio import write_text
from rccl.run import RunDir
from rccl.train import checkpoint as ckpt
from rccl.train.distributed import DistInfo, all_true, barrier, mean_over_ranks

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


class EpochLog:
    """RUN/epochs.csv (one row per finished epoch, both stages; rewritten whole through the atomic writer,
    it is small) and RUN/tb/ TensorBoard scalars."""

    # class_gap .. at_collapse: stage 1's collapse watch (rccl.train.collapse); empty for stage 2 and CE
    FIELDS = ("stage", "epoch", "loss", "lr", "seconds", "views_per_s", "accuracy", "class_gap", "mean_cosine",
              "collapsed_loss", "at_collapse", "pairing")
    SCALARS = ("loss", "lr", "views_per_s", "accuracy", "class_gap", "mean_cosine", "collapsed_loss", "at_collapse")

    def __init__(self, run: RunDir, enabled: bool):
        self.path = run.epochs_csv
        self.tb_dir = run.tb_dir
        self.enabled = enabled
        self._writer = None

    def _rows(self) -> list[dict]:
        if not self.path.is_file():
            return []
        with open(self.path, newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))

    def _save(self, rows: list[dict]) -> None:
        buffer = io.StringIO()
        w = csv.DictWriter(buffer, fieldnames=self.FIELDS, lineterminator="\n")
        w.writeheader()
        w.writerows({k: r.get(k, "") for k in self.FIELDS} for r in rows)
        write_text(self.path, buffer.getvalue())

    def truncate_after(self, stage: int, epoch: int) -> None:
        """Forget rows later than (stage, epoch): a resumed run rewrites them."""
        if self.enabled and self.path.is_file():
            self._save([r for r in self._rows() if (int(r["stage"]), int(r["epoch"])) <= (stage, epoch)])

    def write(self, row: dict) -> None:
        if not self.enabled:
            return
        self._save(self._rows() + [row])
        writer = self._tb()
        if writer is not None:
            step = row["epoch"]
            for key in self.SCALARS:
                if isinstance(row.get(key), (int, float)):
                    writer.add_scalar(f"stage{row['stage']}/{key}", row[key], step)
            writer.flush()

    def _tb(self):
        if self._writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # TensorBoard is optional; the CSV has every number
                log.warning("note: tensorboard is not installed; epochs.csv only")
                self._writer = False
                return None
            self._writer = SummaryWriter(str(self.tb_dir))
        return self._writer or None

    def close(self) -> None:
        if self._writer:
            self._writer.close()



# -- the test hook ---------------------------------------------------------------------------------------
KILL_ENV = "RCCL_TEST_KILL_AT"


def _kill_point() -> tuple[int, int, int] | None:
    """RCCL_TEST_KILL_AT=STAGE:EPOCH:STEP (1-based; STAGE 1, 2, stage1 or stage2): the process SIGKILLs
    itself right after that optimiser step. Used only by the resume tests, so that a kill lands at a known
    step every time, without sleeping or polling; read here and nowhere else."""
    text = os.environ.get(KILL_ENV)
    if not text:
        return None
    try:
        stage, epoch, step = text.split(":")
        return int(stage.removeprefix("stage")), int(epoch), int(step)
    except ValueError:
        raise TrainingError(f"{KILL_ENV}={text!r}: expected STAGE:EPOCH:STEP, e.g. 1:2:1") from None


# -- the engine ------------------------------------------------------------------------------------------
@dataclass
class Stage:
    """What a stage supplies to the engine."""
    number: int                       # 1 or 2: the config section stage{number} and the checkpoint names
    net: nn.Module                    # the module trained (DDP wraps it; torch.compile when `compile`)
    params: Iterable[torch.nn.Parameter]
    sampler: object                   # ForgeryPairSampler: set_epoch, len, state_dict, stats
    loader: Iterable[dict]            # training batches {"view1", "view2", "label", "index"}
    # step(train_net, batch) -> (loss, sums): the loss to back-propagate and device tensors (or plain
    # numbers) to add up over the epoch (e.g. correct / seen); the engine runs backward and the step
    step: Callable[[nn.Module, dict], tuple[torch.Tensor, dict]]
    set_modes: Callable[[], None]     # train/eval modes at each epoch start
    describe: str                     # one line: what is trained, for the log
    loss_fn: nn.Module | None = None  # its buffers are checkpointed; reset() at each epoch start
    compile: bool = False
    # row(sums, epoch) -> extra epochs.csv fields from the epoch's sums (already means over ranks where it
    # matters); epoch is 1-based
    row: Callable[[dict, int], dict] = field(default=lambda sums, epoch: {})


def _reseed_other_ranks(rt: Runtime, epoch: int) -> None:
    # A checkpoint carries rank 0's RNG; other ranks derive theirs so their augmentations differ.
    if rt.dist.rank > 0:
        torch.manual_seed(rt.cfg["train"]["seed"] * 1000003 + epoch * 101 + rt.dist.rank)


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


def optimizer_step(loss: torch.Tensor, optimizer, scaler, scheduler) -> None:
    """One update: backward through the (float16-only) GradScaler, step, LR schedule."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()


def stop_if_not_finite(loss: torch.Tensor, stage: int, epoch: int, step: int, last_saved, device) -> None:
    """Raise on every rank when the loss is not finite on any rank, BEFORE the step touches the weights.
    This is the one host read-back per step: deferring it to the log_every read-back would let a NaN
    update the weights, and the next forward pass would fail somewhere less clear (the op refuses NaN z)."""
    if all_true(bool(torch.isfinite(loss.detach()).all()), device):
        return
    kept = f"the last good checkpoint is {last_saved}" if last_saved else "no checkpoint was written yet"
    raise TrainingError(f"stage {stage}, epoch {epoch + 1}, step {step + 1}: the loss is {loss.item()} (not "
                        f"finite); stopped without saving this epoch; {kept}. Lower the learning rate "
                        f"(stage{stage}.lr) or try without --amp")


def _wrap(rt: Runtime, net: nn.Module, compile_it: bool) -> nn.Module:
    if rt.dist.enabled:
        net = nn.parallel.DistributedDataParallel(net, device_ids=[rt.device.index] if rt.device.type == "cuda" else None)
    return torch.compile(net) if compile_it else net


def run_stage(rt: Runtime, model: nn.Module, stage: Stage, resume: dict | None, log: EpochLog) -> None:
    """Train `stage` from scratch or from `resume` (its last checkpoint) to stage{N}.epochs; `model` is the
    whole Detector (what a checkpoint holds)."""
    n, s = stage.number, rt.cfg[f"stage{stage.number}"]
    sampler = stage.sampler
    optimizer = build_optimizer(stage.params, s)
    scheduler = build_scheduler(optimizer, s, len(sampler))
    scaler = rt.grad_scaler()
    start = 0
    if resume is not None:
        start = restore(resume, model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                        sampler=sampler, loss_fn=stage.loss_fn)
        _reseed_other_ranks(rt, start)
        rt.log(f"stage {n}: resumed after epoch {start} of {s['epochs']}")
    if start >= s["epochs"]:
        return
    log.truncate_after(n, start)
    train_net = _wrap(rt, stage.net, stage.compile)
    last_saved = rt.run.last_checkpoint_path(n) if resume is not None else None
    log_every = max(1, rt.cfg["train"]["log_every"])
    kill_at = _kill_point()
    rt.log(f"stage {n}: {stage.describe}, {len(sampler)} steps/epoch of {s['batch_size']} anchors (x2 views), "
           f"epochs {start + 1}..{s['epochs']}")
    for epoch in range(start, s["epochs"]):
        sampler.set_epoch(epoch)
        if stage.loss_fn is not None:
            stage.loss_fn.reset()
        stage.set_modes()
        t0, views = time.perf_counter(), 0
        sums = {"loss": torch.zeros((), dtype=torch.float64, device=rt.device)}
        bar = tqdm(loader_with_len(stage.loader, len(sampler)), desc=f"stage {n} epoch {epoch + 1}/{s['epochs']}",
                   unit="step", disable=not rt.progress, leave=False, dynamic_ncols=True)
        steps = 0
        for step, batch in enumerate(bar):
            loss, extra = stage.step(train_net, batch)
            stop_if_not_finite(loss, n, epoch, step, last_saved, rt.device)
            optimizer_step(loss, optimizer, scaler, scheduler)
            sums["loss"] += loss.detach().double()
            for key, value in extra.items():  # device tensors stay on the device; plain numbers stay on the host
                sums[key] = sums.get(key, 0) + (value.detach().double() if torch.is_tensor(value) else value)
            steps += 1
            views += 2 * batch["view1"].shape[0] * rt.dist.world_size
            if kill_at == (n, epoch + 1, step + 1):
                os.kill(os.getpid(), signal.SIGKILL)
            if step % log_every == 0:  # the one read-back of the device sums between epoch ends
                bar.set_postfix(loss=f"{float(sums['loss']) / steps:.4f}", lr=f"{scheduler.get_last_lr()[0]:.4g}")
        bar.close()
        seconds = time.perf_counter() - t0
        means = {k: float(v) for k, v in sums.items()}
        mean_loss = mean_over_ranks(means.pop("loss") / max(1, steps), rt.device)
        row = {"stage": n, "epoch": epoch + 1, "loss": round(mean_loss, 6), "lr": scheduler.get_last_lr()[0],
               "seconds": round(seconds, 2), "views_per_s": round(views / seconds, 1), **stage.row(means, epoch + 1)}
        sampler.set_epoch(epoch + 1)  # the state saved is "next epoch to run"
        if rt.dist.is_main:
            state = state_to_save(rt, model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                                  sampler=sampler, loss_fn=stage.loss_fn, metrics=row)
            last_saved = ckpt.save_checkpoint(rt.run, n, epoch + 1, state, rt.cfg["train"]["keep_epochs"])
            log.write(row)
        barrier()
        accuracy = f", train accuracy {row['accuracy']:.3f}" if "accuracy" in row else ""
        rt.log(f"stage {n} epoch {epoch + 1}/{s['epochs']}: loss {mean_loss:.4f}{accuracy}, "
               f"{row['views_per_s']} views/s, {seconds:.1f} s")


def loader_with_len(loader, n: int):
    """The loader as tqdm sees it: `n` steps (the sampler's length) even when the loader has no len()."""
    return loader if hasattr(loader, "__len__") else _Sized(loader, n)


class _Sized:
    def __init__(self, it, n):
        self.it, self.n = it, n

    def __iter__(self):
        return iter(self.it)

    def __len__(self):
        return self.n
