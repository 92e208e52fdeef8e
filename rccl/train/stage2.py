"""Stage 2: the projector dropped, the encoder frozen (eval mode: its batch-norm statistics stay those of
stage 1), a linear classifier on the encoder's features trained with cross-entropy on balanced batches.
Augmentation is geometric only here (crop and flip): the colour, blur and JPEG distortions of stage 1 serve the contrastive
views, while the classifier should see crops as evaluation does.

For the cross-entropy baseline (loss.kind ce) the classifier was trained end to end in stage 1, so stage 2
records that model as the detector without training.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from rccl.data.loaders import build_train_loader
from rccl.data.pairing import ForgeryPairSampler
from rccl import checkpoint as ckpt
from rccl.train.distributed import barrier, mean_over_ranks
from rccl.train.engine import Stage
from rccl.train.runtime import Runtime
from rccl.train.stage1 import per_rank_batch

# every photometric distortion of stage 1, off in stage 2: what is left is the crop and the flip
PHOTOMETRIC_OFF = {"color_jitter_p": 0.0, "blur_p": 0.0, "jpeg_p": 0.0}


def stage2_config(cfg: dict) -> dict:
    """The config stage 2's loader sees: stage 1's augmentation with only the crop and the flip left."""
    cfg = copy.deepcopy(cfg)
    cfg["data"]["augment"].update(PHOTOMETRIC_OFF)
    return cfg


def build_stage2(rt: Runtime, model, records: list[dict]) -> Stage:
    """Stage 2 for the engine: the linear head on the frozen encoder's features, cross-entropy."""
    cfg = rt.cfg
    encoder, head = model.encoder, model.classifier
    encoder.requires_grad_(False)
    sampler = ForgeryPairSampler(records, per_rank_batch(rt, cfg["stage2"], 2), "instance", cfg["train"]["seed"] + 1,
                                 rt.dist.rank, rt.dist.world_size)

    def set_modes():
        encoder.eval()  # batch-norm statistics stay those of stage 1
        head.train()

    def step(train_head, batch: dict):
        images = rt.to_input(torch.cat([batch["view1"], batch["view2"]]))
        labels = batch["label"].to(rt.device, non_blocking=True).repeat(2)
        with torch.no_grad(), rt.autocast():
            features = encoder(images)
        logits = train_head(features.float())
        loss = F.cross_entropy(logits, labels)
        return loss, {"correct": (logits.argmax(1) == labels).sum(), "seen": labels.numel()}

    def row(sums: dict, epoch: int) -> dict:
        return {"accuracy": round(mean_over_ranks(sums["correct"] / max(1.0, sums["seen"]), rt.device), 4)}

    # compile=False: the head is one Linear layer; compiling it costs more than it saves
    return Stage(number=2, net=head, params=list(head.parameters()), sampler=sampler,
                 loader=build_train_loader(stage2_config(cfg), records, sampler), step=step, set_modes=set_modes,
                 describe="linear classifier on the frozen encoder", row=row)


def save_ce_detector(rt: Runtime, model, rows: list[dict]) -> None:
    """The cross-entropy baseline's stage 2: the stage-1 model (encoder + classifier trained end to end) is
    the detector; it is saved as a complete stage-2 checkpoint without training. `model` must hold the
    stage-1 weights (the runner loads them from the run before any stage runs)."""
    if rt.dist.is_main:
        state = ckpt.training_state(rt.cfg, model, log=rows, complete=True,
                                    metrics={"note": "cross-entropy baseline: classifier trained end to end in stage 1"})
        rt.run.save_checkpoint(2, 0, state, rt.cfg["train"]["keep_epochs"])
    barrier()
    rt.log("stage 2: cross-entropy baseline, the stage-1 classifier is the detector (nothing to train)")
