"""Synchronised batch norm (train.sync_bn): in training mode every batch-norm layer normalises with the
statistics of the GLOBAL batch (all ranks), as one process with that batch would, instead of its rank's
share. Without it the method changes with the world size: with 8 ranks each BN, the projector's output
BN that keeps Sup. Con and the method out of their collapse among them, sees 1/8 of the batch.

torch.nn.SyncBatchNorm computes this on CUDA (and a few accelerators) and refuses CPU tensors; here the
same layer also runs on the CPU (gloo): the per-channel sum and sum of squared deviations are all-reduced
through torch.distributed.nn.functional.all_reduce, whose backward all-reduces the gradient, so autograd
gives each rank the gradient of the global batch's statistics. `convert` swaps every batch-norm layer of
a module for this one (timm's BatchNormAct2d keeps its activation and dropout), keeping the parameters,
the buffers and hence the state_dict's names: checkpoints are the same with and without it.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


class SyncBatchNorm(nn.SyncBatchNorm):
    """torch's SyncBatchNorm where torch runs it, the statistics all-reduced with autograd on the CPU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or not self.training or not (dist.is_available() and dist.is_initialized()
                                                               and dist.get_world_size(self._group()) > 1):
            return super().forward(x)
        self._check_input_dim(x)
        return _cpu_sync_batch_norm(self, x)

    def _group(self):
        return self.process_group or dist.group.WORLD


class SyncBatchNormAct(SyncBatchNorm):
    """timm's BatchNormAct2d synchronised: the norm, then the layer's dropout and activation."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop(super().forward(x)))


def _cpu_sync_batch_norm(bn: SyncBatchNorm, x: torch.Tensor) -> torch.Tensor:
    from torch.distributed.nn.functional import all_reduce

    group = bn._group()
    dims = [0] + list(range(2, x.dim()))
    shape = [1, -1] + [1] * (x.dim() - 2)
    xf = x.float()
    count = torch.tensor([float(xf.numel() // xf.shape[1])], dtype=torch.float64)
    dist.all_reduce(count, group=group)
    n = count.item()
    # sums in float64 (as torch's CPU batch norm accumulates), two passes: the mean, then the deviations
    mean = (all_reduce(xf.sum(dims, dtype=torch.float64), group=group) / n).float()
    centred = xf - mean.view(shape)
    var = (all_reduce((centred * centred).sum(dims, dtype=torch.float64), group=group) / n).float()  # biased
    y = centred * torch.rsqrt(var + bn.eps).view(shape)
    if bn.affine:
        y = y * bn.weight.view(shape) + bn.bias.view(shape)
    if bn.track_running_stats:
        with torch.no_grad():
            bn.num_batches_tracked.add_(1)
            momentum = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
            bn.running_mean.lerp_(mean.detach().to(bn.running_mean.dtype), momentum)
            unbiased = var.detach() * (n / max(n - 1.0, 1.0))
            bn.running_var.lerp_(unbiased.to(bn.running_var.dtype), momentum)
    return y.to(x.dtype)


def convert(module: nn.Module) -> nn.Module:
    """`module` with every batch-norm layer (torch's BatchNorm{1,2,3}d, timm's BatchNormAct2d) replaced by
    SyncBatchNorm / SyncBatchNormAct sharing its parameters and buffers; the same object unless `module`
    is itself a batch norm."""
    out = module
    if isinstance(module, _BatchNorm) and not isinstance(module, SyncBatchNorm):
        act = hasattr(module, "act") and hasattr(module, "drop")  # timm's BatchNormAct2d
        out = (SyncBatchNormAct if act else SyncBatchNorm)(module.num_features, module.eps, module.momentum,
                                                           module.affine, module.track_running_stats)
        if act:
            out.act, out.drop = module.act, module.drop
        if module.affine:
            out.weight, out.bias = module.weight, module.bias
        out.running_mean, out.running_var = module.running_mean, module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, convert(child))
    return out
