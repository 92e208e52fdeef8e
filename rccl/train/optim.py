"""The optimiser, its learning-rate schedule and one update step (the same for both stages)."""
from __future__ import annotations

import math

import torch


def param_groups(params, decay_norm_and_bias: bool = True) -> list:
    """The parameters as SGD takes them: one group (weight decay on all), or, with decay_norm_and_bias
    false, the weight matrices and kernels (ndim > 1) decayed and the rest (norm scales and shifts, biases:
    ndim <= 1, timm's param_groups_weight_decay rule) in a group without weight decay."""
    params = [p for p in params]
    if decay_norm_and_bias:
        return params
    groups = [{"params": [p for p in params if p.ndim > 1]},
              {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def build_optimizer(params, stage_cfg: dict, decay_norm_and_bias: bool = True) -> torch.optim.Optimizer:
    return torch.optim.SGD(param_groups(params, decay_norm_and_bias), lr=stage_cfg["lr"],
                           momentum=stage_cfg["momentum"], weight_decay=stage_cfg["weight_decay"])


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


def backward(loss: torch.Tensor, optimizer, scaler) -> None:
    """The step's gradients: zeroed, then backward through the (float16-only) GradScaler."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()


def update(optimizer, scaler, scheduler) -> None:
    """The update from the gradients in place (the GradScaler skips it on non-finite ones), then the LR
    schedule's step."""
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
