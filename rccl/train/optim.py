"""The optimiser, its learning-rate schedule and one update step (the same for both stages)."""
from __future__ import annotations

import math

import torch


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


def optimizer_step(loss: torch.Tensor, optimizer, scaler, scheduler) -> None:
    """One update: backward through the (float16-only) GradScaler, step, LR schedule."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
