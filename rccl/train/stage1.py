"""Stage 1: the encoder and projector trained with the real-centric loss (loss.kind rccl), the plain
supervised contrastive loss (supcon), or, for the cross-entropy baseline (ce), the encoder and the
linear classifier trained end to end.

A step: both views of the batch through the shared encoder and projector (the paper's symmetric
two-stream architecture), the features all-gathered across ranks with their gradient, the loss on the
global batch, SGD. The loss module's centre and banks are reset at the start of every epoch.
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from rccl.data.loaders import build_train_loader
from rccl.data.pairing import ForgeryPairSampler
from rccl.loss import RealCentricLoss
from rccl.train import checkpoint as ckpt
from rccl.train.distributed import barrier, gather_no_grad, gather_with_grad, mean_over_ranks
from rccl.train.loop import (EpochLog, Runtime, TrainingError, build_optimizer, build_scheduler, optimizer_step,
                             restore, state_to_save, stop_if_not_finite)


def contrastive_step(net: nn.Module, loss_fn: RealCentricLoss, view1: torch.Tensor, view2: torch.Tensor,
                     labels: torch.Tensor, autocast) -> torch.Tensor:
    """The loss of one batch (both views, gathered over ranks); the caller runs backward and the step."""
    with autocast:
        z = net(torch.cat([view1, view2]))
    z = gather_with_grad(z.float())
    all_labels = gather_no_grad(torch.cat([labels, labels]))
    return loss_fn(z, all_labels)


def cross_entropy_step(net: nn.Module, view1, view2, labels, autocast) -> torch.Tensor:
    with autocast:
        logits = net(torch.cat([view1, view2]))
    return F.cross_entropy(logits.float(), torch.cat([labels, labels]))


def per_rank_batch(rt: Runtime, stage_cfg: dict, stage: int) -> int:
    world = rt.dist.world_size
    if stage_cfg["batch_size"] % (2 * world):
        raise TrainingError(f"stage{stage}.batch_size={stage_cfg['batch_size']} must split into {world} rank(s) "
                            f"of an even size (half natural, half fake)")
    return stage_cfg["batch_size"] // world


def _reseed_other_ranks(rt: Runtime, epoch: int) -> None:
    # A checkpoint carries rank 0's RNG; other ranks derive theirs so their augmentations differ.
    if rt.dist.rank > 0:
        torch.manual_seed(rt.cfg["train"]["seed"] * 1000003 + epoch * 101 + rt.dist.rank)


def run_stage1(rt: Runtime, model, records: list[dict], resume: dict | None, log: EpochLog) -> None:
    cfg = rt.cfg
    s1 = cfg["stage1"]
    kind = cfg["loss"]["kind"]
    if kind == "ce":
        net: nn.Module = nn.Sequential(model.encoder, model.classifier)
        loss_fn = None
    else:
        net = model.embedder()
        loss_fn = RealCentricLoss.from_config(cfg["loss"], cfg["model"]["proj_dim"]).to(rt.device)
    model.to(rt.device)
    if cfg["model"]["channels_last"]:
        model.to(memory_format=torch.channels_last)
    sampler = ForgeryPairSampler(records, per_rank_batch(rt, s1, 1), cfg["data"]["pairing"], cfg["train"]["seed"],
                                 rt.dist.rank, rt.dist.world_size)
    optimizer = build_optimizer(net.parameters(), s1)
    scheduler = build_scheduler(optimizer, s1, len(sampler))
    scaler = rt.grad_scaler()
    start = 0
    if resume is not None:
        start = restore(resume, model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                        sampler=sampler, loss_fn=loss_fn)
        _reseed_other_ranks(rt, start)
        rt.log(f"stage 1: resumed after epoch {start} of {s1['epochs']}")
    if start >= s1["epochs"]:
        return
    log.truncate_after(1, start)
    train_net = net
    if rt.dist.enabled:
        train_net = nn.parallel.DistributedDataParallel(
            net, device_ids=[rt.device.index] if rt.device.type == "cuda" else None)
    if cfg["model"]["compile"]:
        train_net = torch.compile(train_net)
    loader = build_train_loader(cfg, records, sampler)
    last_saved = ckpt.last_path(rt.run_dir, 1) if resume is not None else None
    rt.log(f"stage 1: {kind} loss, {len(sampler)} steps/epoch of {s1['batch_size']} anchors (x2 views), "
           f"epochs {start + 1}..{s1['epochs']}")
    for epoch in range(start, s1["epochs"]):
        sampler.set_epoch(epoch)
        if loss_fn is not None:
            loss_fn.reset()
        net.train()
        t0, total, steps, views = time.perf_counter(), 0.0, 0, 0
        bar = tqdm(loader, total=len(sampler), desc=f"stage 1 epoch {epoch + 1}/{s1['epochs']}", unit="step",
                   disable=not rt.progress, leave=False, dynamic_ncols=True)
        for step, batch in enumerate(bar):
            v1, v2 = rt.to_input(batch["view1"]), rt.to_input(batch["view2"])
            labels = batch["label"].to(rt.device, non_blocking=True)
            if loss_fn is None:
                loss = cross_entropy_step(train_net, v1, v2, labels, rt.autocast())
            else:
                loss = contrastive_step(train_net, loss_fn, v1, v2, labels, rt.autocast())
            stop_if_not_finite(loss, 1, epoch, step, last_saved, rt.device)
            optimizer_step(loss, optimizer, scaler, scheduler)
            total += float(loss.detach())
            steps += 1
            views += 2 * v1.shape[0] * rt.dist.world_size
            if step % max(1, cfg["train"]["log_every"]) == 0:
                bar.set_postfix(loss=f"{total / steps:.4f}", lr=f"{scheduler.get_last_lr()[0]:.4g}")
        bar.close()
        seconds = time.perf_counter() - t0
        mean_loss = mean_over_ranks(total / max(1, steps), rt.device)
        row = {"stage": 1, "epoch": epoch + 1, "loss": round(mean_loss, 6), "lr": scheduler.get_last_lr()[0],
               "seconds": round(seconds, 2), "views_per_s": round(views / seconds, 1),
               "pairing": " ".join(f"{k}:{v}" for k, v in sorted(sampler.stats.items()))}
        sampler.set_epoch(epoch + 1)  # the state saved is "next epoch to run"
        if rt.dist.is_main:
            state = state_to_save(rt, model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                                  sampler=sampler, loss_fn=loss_fn, metrics=row)
            last_saved = ckpt.save_checkpoint(rt.run_dir, 1, epoch + 1, state, cfg["train"]["keep_epochs"])
            log.write(row)
        barrier()
        rt.log(f"stage 1 epoch {epoch + 1}/{s1['epochs']}: loss {mean_loss:.4f}, {row['views_per_s']} views/s, "
               f"{seconds:.1f} s")
