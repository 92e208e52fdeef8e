"""Synchronised batch norm (train.sync_bn): in training mode every batch-norm layer normalises with the
statistics of the GLOBAL batch (all ranks), as one process with that batch would, instead of its rank's
share. Without it the method changes with the world size: with 8 ranks each BN, the projector's output
BN that keeps Sup. Con and the method out of their collapse among them, sees 1/8 of the batch.

On CUDA that is torch.nn.SyncBatchNorm (through timm's convert_sync_batchnorm, which keeps the activation
of timm's BatchNormAct2d). torch's layer refuses CPU tensors (and DDP refuses it on a CPU module), so on the
CPU (gloo) `CpuSyncBatchNorm` does the same: the per-channel sums of x and x^2 and the count are
all-reduced by an autograd function whose backward all-reduces the gradient, so autograd gives each rank
the gradient of the global batch's statistics. `convert` swaps every batch-norm
layer of a module, keeping its parameters, its buffers and hence the state_dict's names: checkpoints are
the same with and without it.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


class CpuSyncBatchNorm(_BatchNorm):
    """A batch norm of any dimension whose training-mode statistics are the process group's global batch's
    (eval mode, or one process: torch's own batch norm)."""

    process_group = None  # the whole world

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        group = self.process_group or dist.group.WORLD
        if not self.training or not (dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1):
            return super().forward(x)
        self._check_input_dim(x)
        return _cpu_sync_batch_norm(self, x, group)


class CpuSyncBatchNormAct(CpuSyncBatchNorm):
    """timm's BatchNormAct2d synchronised: the norm, then the layer's dropout and activation."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop(super().forward(x)))


class _SumOverRanks(torch.autograd.Function):
    """The sum of a tensor over the ranks, its gradient the sum of the ranks' gradients (what
    torch.distributed.nn.functional.all_reduce does, which torch now marks deprecated)."""

    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        total = x.clone()
        dist.all_reduce(total, group=group)
        return total

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


def _cpu_sync_batch_norm(bn: CpuSyncBatchNorm, x: torch.Tensor, group) -> torch.Tensor:
    dims = [0] + list(range(2, x.dim()))
    shape = [1, -1] + [1] * (x.dim() - 2)
    channels = x.shape[1]
    xf = x.float()
    # one all-reduce a layer (and one for its gradient): per channel the sum and the sum of squares, and the
    # count, in float64 (as torch's CPU batch norm accumulates), where E[x^2] - E[x]^2 loses nothing
    count = torch.tensor([xf.numel() / channels], dtype=torch.float64)
    total = _SumOverRanks.apply(torch.cat([xf.sum(dims, dtype=torch.float64), (xf * xf).sum(dims, dtype=torch.float64),
                                           count]), group)
    n = float(total[-1])
    mean = total[:channels] / n
    var = (total[channels:2 * channels] / n - mean * mean).clamp_min(0)  # biased: what BN divides by
    y = (xf - mean.float().view(shape)) * torch.rsqrt(var.float() + bn.eps).view(shape)
    if bn.affine:
        y = y * bn.weight.view(shape) + bn.bias.view(shape)
    if bn.track_running_stats:
        with torch.no_grad():
            bn.num_batches_tracked.add_(1)
            momentum = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
            bn.running_mean.lerp_(mean.to(bn.running_mean.dtype), momentum)
            bn.running_var.lerp_((var * (n / max(n - 1.0, 1.0))).to(bn.running_var.dtype), momentum)
    return y.to(x.dtype)


def convert(module: nn.Module, device: torch.device) -> nn.Module:
    """`module` with every batch-norm layer synchronised for `device` (torch's SyncBatchNorm on CUDA,
    CpuSyncBatchNorm on the CPU), sharing its parameters and buffers; the same object unless `module`
    is itself a batch norm."""
    if device.type == "cuda":
        from timm.layers import convert_sync_batchnorm

        return convert_sync_batchnorm(module)
    return _convert_cpu(module)


def _convert_cpu(module: nn.Module) -> nn.Module:
    out = module
    if isinstance(module, _BatchNorm) and not isinstance(module, CpuSyncBatchNorm):
        act = hasattr(module, "act") and hasattr(module, "drop")  # timm's BatchNormAct2d
        out = (CpuSyncBatchNormAct if act else CpuSyncBatchNorm)(module.num_features, module.eps, module.momentum,
                                                                 module.affine, module.track_running_stats)
        if act:
            out.act, out.drop = module.act, module.drop
        if module.affine:
            out.weight, out.bias = module.weight, module.bias
        out.running_mean, out.running_var = module.running_mean, module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, _convert_cpu(child))
    return out
