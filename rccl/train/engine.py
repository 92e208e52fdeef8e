"""The stage engine: the epoch loop, written once, and the hooks that do everything else (the shape of
detectron2's TrainerBase + HookBase and timm's train_one_epoch).

A stage supplies a `Stage` (its trained module, parameters, sampler, loader, loss module and step
function); `run_stage` builds the optimiser, LR schedule and GradScaler, restores a checkpoint, wraps the
module in DDP (with synchronised batch norm when train.sync_bn: rccl.train.sync_bn; optionally
torch.compile), and runs the loop: for each epoch, for each step: the stage's step, the hooks'
`after_loss`, backward, the hooks' `after_backward` (the gradients are there, the weights not yet
updated: the non-finite guard, gradient clipping), the update, the hooks' `after_step`; at each epoch end
the row of epochs.csv is made and the hooks' `after_epoch` save the checkpoint and write the row
(rccl.train.hooks). The loop reads no environment and knows no test.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import torch
from torch import nn
from tqdm import tqdm

from rccl import checkpoint as ckpt
from rccl.train.distributed import barrier, mean_over_ranks
from rccl.train import sync_bn
from rccl.train.optim import backward, build_optimizer, build_scheduler, update
from rccl.train.runtime import Runtime


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
    # row(sums, epoch) -> extra epochs.csv fields from the epoch's sums (plain numbers, this rank's; call
    # mean_over_ranks where a field must be global); epoch is 1-based. Any key is a column of epochs.csv.
    row: Callable[[dict, int], dict] = field(default=lambda sums, epoch: {})


@dataclass
class StageLoop:
    """The state hooks see: the live objects of the stage and where the loop is."""
    rt: Runtime
    model: nn.Module                  # the whole Detector: what a checkpoint holds
    stage: Stage
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    rows: list[dict]                  # every epochs.csv row of the run so far (both stages), this epoch's last
    epochs: int = 0                   # stage{N}.epochs
    start: int = 0                    # epochs done before this call (a resume)
    epoch: int = 0                    # the epoch running, 0-based
    step: int = 0                     # the step just run, 0-based
    row: dict = field(default_factory=dict)   # the finished epoch's row (after_epoch)
    last_saved: object = None         # the newest checkpoint file of this stage, or None (the same on every rank)
    steps: int = 0                    # steps per epoch (the sampler's length)
    loss: torch.Tensor | None = None  # the step's loss (a device tensor: reading it is a host sync)

    @property
    def number(self) -> int:
        return self.stage.number

    def state(self, **extra) -> dict:
        """The checkpoint of this moment (rccl.checkpoint's format)."""
        s = self.stage
        return ckpt.training_state(self.rt.cfg, self.model, optimizer=self.optimizer, scheduler=self.scheduler,
                                   scaler=self.scaler, loss_fn=s.loss_fn, sampler=s.sampler, metrics=self.row,
                                   log=self.rows, **extra)


class HookBase:
    """A hook: override what it needs. Called in the order hooks are given; `after_train` once per run."""

    def before_stage(self, loop: StageLoop) -> None: ...
    def before_epoch(self, loop: StageLoop) -> None: ...
    def after_loss(self, loop: StageLoop, loss: torch.Tensor) -> None: ...   # before backward and the update
    def after_backward(self, loop: StageLoop) -> None: ...   # gradients there (DDP's all-reduce done), no update yet
    def after_step(self, loop: StageLoop) -> None: ...
    def after_epoch(self, loop: StageLoop) -> None: ...
    def after_stage(self, loop: StageLoop) -> None: ...
    def after_train(self, outcome) -> None: ...                              # rccl.train.runner.Outcome


def _reseed_other_ranks(rt: Runtime, epoch: int) -> None:
    # A checkpoint carries rank 0's RNG; other ranks derive theirs so their augmentations differ.
    if rt.dist.rank > 0:
        torch.manual_seed(rt.cfg["train"]["seed"] * 1000003 + epoch * 101 + rt.dist.rank)


def restore(state: dict, loop: StageLoop) -> int:
    """Load a checkpoint's states into the live objects; returns the epochs already done."""
    loop.model.load_state_dict(state["model"])
    loop.optimizer.load_state_dict(state["optimizer"])
    loop.scheduler.load_state_dict(state["scheduler"])
    if state.get("scaler"):
        loop.scaler.load_state_dict(state["scaler"])
    if loop.stage.loss_fn is not None and state.get("loss"):
        loop.stage.loss_fn.load_state_dict(state["loss"])
    if state.get("sampler"):
        loop.stage.sampler.load_state_dict(state["sampler"])
    ckpt.set_rng_state(state["rng"])
    return int(state["epoch"])


def _wrap(rt: Runtime, net: nn.Module, compile_it: bool) -> nn.Module:
    if rt.dist.enabled:
        if rt.cfg["train"]["sync_bn"]:  # in place: the Detector's layers are swapped, their tensors kept
            net = sync_bn.convert(net, rt.device)
        net = nn.parallel.DistributedDataParallel(net, device_ids=[rt.device.index] if rt.device.type == "cuda" else None)
    return torch.compile(net) if compile_it else net


def run_stage(rt: Runtime, model: nn.Module, stage: Stage, resume: dict | None, rows: list[dict],
              hooks: Sequence[HookBase] = (), resume_path=None) -> int:
    """Train `stage` from scratch or from `resume` (its last checkpoint, read from `resume_path`) to
    stage{N}.epochs; `model` is the whole Detector (what a checkpoint holds); `rows` the run's epochs.csv
    rows so far, extended in place. Returns the number of epochs trained by this call."""
    n, s = stage.number, rt.cfg[f"stage{stage.number}"]
    sampler = stage.sampler
    optimizer = build_optimizer(stage.params, s, rt.cfg["train"]["decay_norm_and_bias"])
    loop = StageLoop(rt, model, stage, optimizer, build_scheduler(optimizer, s, len(sampler)), rt.grad_scaler(),
                     rows, epochs=s["epochs"], last_saved=resume_path, steps=len(sampler))
    if resume is not None:
        loop.start = restore(resume, loop)
        _reseed_other_ranks(rt, loop.start)
        rt.log(f"stage {n}: resumed after epoch {loop.start} of {s['epochs']}")
    if loop.start >= s["epochs"]:
        return 0
    for hook in hooks:
        hook.before_stage(loop)
    train_net = _wrap(rt, stage.net, stage.compile)
    log_every = max(1, rt.cfg["train"]["log_every"])
    rt.log(f"stage {n}: {stage.describe}, {len(sampler)} steps/epoch of {s['batch_size']} anchors (x2 views), "
           f"epochs {loop.start + 1}..{s['epochs']}")
    for epoch in range(loop.start, s["epochs"]):
        loop.epoch = epoch
        sampler.set_epoch(epoch)
        if stage.loss_fn is not None:
            stage.loss_fn.reset()
        stage.set_modes()
        for hook in hooks:
            hook.before_epoch(loop)
        t0, views, steps = time.perf_counter(), 0, 0
        sums = {"loss": torch.zeros((), dtype=torch.float64, device=rt.device)}
        bar = tqdm(loader_with_len(stage.loader, len(sampler)), desc=f"stage {n} epoch {epoch + 1}/{s['epochs']}",
                   unit="step", disable=not rt.progress, leave=False, dynamic_ncols=True)
        for step, batch in enumerate(bar):
            loop.step = step
            loss, extra = stage.step(train_net, batch)
            loop.loss = loss
            for hook in hooks:
                hook.after_loss(loop, loss)
            backward(loss, optimizer, loop.scaler)
            for hook in hooks:
                hook.after_backward(loop)
            update(optimizer, loop.scaler, loop.scheduler)
            sums["loss"] += loss.detach().double()
            for key, value in extra.items():  # device tensors stay on the device; plain numbers stay on the host
                sums[key] = sums.get(key, 0) + (value.detach().double() if torch.is_tensor(value) else value)
            steps += 1
            views += 2 * batch["view1"].shape[0] * rt.dist.world_size
            for hook in hooks:
                hook.after_step(loop)
            if step % log_every == 0:  # the one read-back of the device sums between epoch ends
                bar.set_postfix(loss=f"{float(sums['loss']) / steps:.4f}", lr=f"{loop.scheduler.get_last_lr()[0]:.4g}")
        bar.close()
        seconds = time.perf_counter() - t0
        means = {k: float(v) for k, v in sums.items()}
        mean_loss = mean_over_ranks(means.pop("loss") / max(1, steps), rt.device)
        loop.row = {"stage": n, "epoch": epoch + 1, "loss": round(mean_loss, 6), "lr": loop.scheduler.get_last_lr()[0],
                    "seconds": round(seconds, 2), "views_per_s": round(views / seconds, 1),
                    **stage.row(means, epoch + 1)}
        rows.append(loop.row)
        sampler.set_epoch(epoch + 1)  # the state saved is "next epoch to run"
        for hook in hooks:
            hook.after_epoch(loop)
        barrier()
        accuracy = f", train accuracy {loop.row['accuracy']:.3f}" if "accuracy" in loop.row else ""
        rt.log(f"stage {n} epoch {epoch + 1}/{s['epochs']}: loss {mean_loss:.4f}{accuracy}, "
               f"{loop.row['views_per_s']} views/s, {seconds:.1f} s")
    for hook in hooks:
        hook.after_stage(loop)
    return s["epochs"] - loop.start


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
