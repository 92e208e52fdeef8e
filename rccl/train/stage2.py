"""Stage 2: the projector dropped, the encoder frozen (eval mode: its batch-norm statistics stay those of
stage 1), a linear classifier on the encoder's features trained with cross-entropy on balanced batches.
Augmentation is geometric only here (crop and flip): the colour and blur of stage 1 serve the contrastive
views, while the classifier should see crops as evaluation does.

For the cross-entropy baseline (loss.kind ce) the classifier was trained end to end in stage 1, so stage 2
records that model as the detector without training.
"""
from __future__ import annotations

import copy
import time

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from rccl.data.loaders import build_train_loader
from rccl.data.pairing import ForgeryPairSampler
from rccl.train import checkpoint as ckpt
from rccl.train.distributed import barrier, mean_over_ranks
from rccl.train.loop import (EpochLog, Runtime, build_optimizer, build_scheduler, optimizer_step, restore, state_to_save,
                             stop_if_not_finite)
from rccl.train.stage1 import _reseed_other_ranks, per_rank_batch


def _stage2_config(cfg: dict) -> dict:
    cfg = copy.deepcopy(cfg)
    cfg["data"]["augment"].update(color_jitter_p=0.0, blur_p=0.0)
    return cfg


def run_stage2(rt: Runtime, model, records: list[dict], resume: dict | None, log: EpochLog) -> None:
    cfg = rt.cfg
    s2 = cfg["stage2"]
    model.to(rt.device)
    if cfg["loss"]["kind"] == "ce":
        if rt.dist.is_main:
            state = {"config": cfg, "model": model.state_dict(), "optimizer": {}, "scheduler": {}, "scaler": {},
                     "loss": {}, "sampler": {}, "rng": ckpt.rng_state(), "complete": True,
                     "metrics": {"note": "cross-entropy baseline: classifier trained end to end in stage 1"}}
            ckpt.save_checkpoint(rt.run_dir, 2, 0, state, cfg["train"]["keep_epochs"])
        barrier()
        rt.log("stage 2: cross-entropy baseline, the stage-1 classifier is the detector (nothing to train)")
        return
    encoder, head = model.encoder, model.classifier
    encoder.requires_grad_(False)
    sampler = ForgeryPairSampler(records, per_rank_batch(rt, s2, 2), "instance", cfg["train"]["seed"] + 1,
                                 rt.dist.rank, rt.dist.world_size)
    optimizer = build_optimizer(head.parameters(), s2)
    scheduler = build_scheduler(optimizer, s2, len(sampler))
    scaler = rt.grad_scaler()
    start = 0
    if resume is not None and not resume.get("complete"):
        start = restore(resume, model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler, sampler=sampler)
        _reseed_other_ranks(rt, start)
        rt.log(f"stage 2: resumed after epoch {start} of {s2['epochs']}")
    if start >= s2["epochs"]:
        return
    log.truncate_after(2, start)
    train_head: nn.Module = head
    if rt.dist.enabled:
        train_head = nn.parallel.DistributedDataParallel(
            head, device_ids=[rt.device.index] if rt.device.type == "cuda" else None)
    loader = build_train_loader(_stage2_config(cfg), records, sampler)
    last_saved = ckpt.last_path(rt.run_dir, 2) if resume is not None else None
    rt.log(f"stage 2: linear classifier on the frozen encoder, {len(sampler)} steps/epoch, "
           f"epochs {start + 1}..{s2['epochs']}")
    for epoch in range(start, s2["epochs"]):
        sampler.set_epoch(epoch)
        encoder.eval()
        head.train()
        t0, total, steps, correct, seen = time.perf_counter(), 0.0, 0, 0, 0
        bar = tqdm(loader, total=len(sampler), desc=f"stage 2 epoch {epoch + 1}/{s2['epochs']}", unit="step",
                   disable=not rt.progress, leave=False, dynamic_ncols=True)
        for step, batch in enumerate(bar):
            images = rt.to_input(torch.cat([batch["view1"], batch["view2"]]))
            labels = batch["label"].to(rt.device, non_blocking=True).repeat(2)
            with torch.no_grad(), rt.autocast():
                features = encoder(images)
            logits = train_head(features.float())
            loss = F.cross_entropy(logits, labels)
            stop_if_not_finite(loss, 2, epoch, step, last_saved, rt.device)
            optimizer_step(loss, optimizer, scaler, scheduler)
            total += float(loss.detach())
            steps += 1
            correct += int((logits.argmax(1) == labels).sum())
            seen += labels.numel()
            bar.set_postfix(loss=f"{total / steps:.4f}", acc=f"{correct / seen:.3f}")
        bar.close()
        seconds = time.perf_counter() - t0
        row = {"stage": 2, "epoch": epoch + 1, "loss": round(mean_over_ranks(total / max(1, steps), rt.device), 6),
               "lr": scheduler.get_last_lr()[0], "seconds": round(seconds, 2),
               "views_per_s": round(seen * rt.dist.world_size / seconds, 1),
               "accuracy": round(mean_over_ranks(correct / max(1, seen), rt.device), 4)}
        sampler.set_epoch(epoch + 1)
        if rt.dist.is_main:
            state = state_to_save(rt, model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                                  sampler=sampler, metrics=row)
            last_saved = ckpt.save_checkpoint(rt.run_dir, 2, epoch + 1, state, cfg["train"]["keep_epochs"])
            log.write(row)
        barrier()
        rt.log(f"stage 2 epoch {epoch + 1}/{s2['epochs']}: loss {row['loss']:.4f}, train accuracy "
               f"{row['accuracy']:.3f}, {seconds:.1f} s")
