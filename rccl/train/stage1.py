"""Stage 1: the encoder and projector trained with the real-centric loss (loss.kind rccl), the plain
supervised contrastive loss (supcon), or, for the cross-entropy baseline (ce), the encoder and the
linear classifier trained end to end.

A step: both views of the batch through the shared encoder and projector (the paper's symmetric
two-stream architecture), the features all-gathered across ranks with their gradient, the loss on the
global batch, SGD. The loss module's centre and banks are reset at the start of every epoch.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from rccl.data.loaders import build_train_loader
from rccl.data.pairing import ForgeryPairSampler
from rccl.loss import RealCentricLoss
from rccl.train import collapse
from rccl.train.distributed import gather_no_grad, gather_with_grad
from rccl.train.engine import Stage
from rccl.train.runtime import Runtime, TrainingError


def contrastive_step(net: nn.Module, loss_fn: RealCentricLoss, view1: torch.Tensor, view2: torch.Tensor,
                     labels: torch.Tensor, autocast) -> tuple[torch.Tensor, dict]:
    """The loss of one batch (both views, gathered over ranks) and the collapse watch's sums; the caller
    runs backward and the step."""
    with autocast:
        z = net(torch.cat([view1, view2]))
    # the autocast dtype on CUDA where the compiled op takes it (its tensor-core path), float32 elsewhere
    z = one_process_order(gather_with_grad(z.to(loss_fn.feature_dtype(z))))
    all_labels = one_process_order(gather_no_grad(torch.cat([labels, labels])))
    collapsed = loss_fn.collapsed_value(all_labels)  # before the call, which updates the banks
    loss = loss_fn(z, all_labels)
    return loss, collapse.step_sums(loss, collapsed, z, all_labels)


def one_process_order(x: torch.Tensor) -> torch.Tensor:
    """Rows gathered from the ranks (each rank's [view1; view2], rank after rank) in the order one process
    has them for the global batch: every first view, then every second view (each in global-batch order,
    the ranks' shares being consecutive). Nothing moves in one process."""
    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    if world == 1:
        return x
    return x.reshape(world, 2, -1, *x.shape[1:]).transpose(0, 1).reshape(x.shape)


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


def build_stage1(rt: Runtime, model, records: list[dict]) -> Stage:
    """Stage 1 for the engine: the embedder (encoder + projector) and the contrastive loss, or for
    loss.kind ce the encoder and the classifier with cross-entropy."""
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

    def step(train_net: nn.Module, batch: dict):
        v1, v2 = rt.to_input(batch["view1"]), rt.to_input(batch["view2"])
        labels = batch["label"].to(rt.device, non_blocking=True)
        if loss_fn is None:
            return cross_entropy_step(train_net, v1, v2, labels, rt.autocast()), {}
        return contrastive_step(train_net, loss_fn, v1, v2, labels, rt.autocast())

    def row(sums: dict, epoch: int) -> dict:
        fields = collapse.epoch_fields(sums)
        warning = collapse.collapse_warning(fields, epoch, kind, 2 * s1["batch_size"])
        if warning:
            rt.warn(warning)
        return {**fields, "pairing": " ".join(f"{k}:{v}" for k, v in sorted(sampler.stats.items()))}

    return Stage(number=1, net=net, params=list(net.parameters()), sampler=sampler,
                 loader=build_train_loader(cfg, records, sampler), step=step, set_modes=net.train,
                 describe=f"{kind} loss", loss_fn=loss_fn, compile=bool(cfg["model"]["compile"]), row=row)
