"""Fake (meta) kernels for the rccl ops, so that they work with torch.compile and torch.library.opcheck
(the autograd is registered in C++, csrc/rccl.cpp). The shapes here must match the schemas' comments in csrc/rccl.cpp."""
from __future__ import annotations

import torch

from rccl.reference import accumulation_dtype


@torch.library.register_fake("rccl::real_centric_loss")
def _real_centric_loss_fake(z, labels, center, bank_real, bank_fake, lam, neighbors, temperature, margin):
    acc = accumulation_dtype(z.dtype)
    rows = bank_real.shape[0] + bank_fake.shape[0] + lam.shape[0]
    return (
        z.new_empty((), dtype=acc),
        z.new_empty((rows, z.shape[1]), dtype=acc),
        z.new_empty((rows,), dtype=torch.int64),
        z.new_empty((z.shape[0],), dtype=acc),
    )


@torch.library.register_fake("rccl::_real_centric_loss_with_grad")
def _real_centric_loss_with_grad_fake(z, labels, center, bank_real, bank_fake, lam, neighbors, temperature, margin):
    outputs = _real_centric_loss_fake(z, labels, center, bank_real, bank_fake, lam, neighbors, temperature, margin)
    return (*outputs, torch.empty_like(z, memory_format=torch.contiguous_format))


@torch.library.register_fake("rccl::_real_centric_loss_backward")
def _real_centric_loss_backward_fake(grad_loss, z, labels, extra, extra_labels, lse, temperature, margin):
    return torch.empty_like(z, memory_format=torch.contiguous_format)


def _bank_rows(bank_rows: int, batch_rows: int, k: int):
    """min(k, K + n_c): static once the bank is full (K >= k), data-dependent (n_c) before that."""
    if bank_rows >= k:
        return k
    ctx = torch.library.get_ctx()
    return ctx.new_dynamic_size(min=bank_rows, max=min(k, bank_rows + batch_rows))


@torch.library.register_fake("rccl::update_hard_banks")
def _update_hard_banks_fake(z, labels, center, bank_real, bank_fake, k):
    acc = accumulation_dtype(z.dtype)
    real_rows = _bank_rows(bank_real.shape[0], z.shape[0], k)
    fake_rows = _bank_rows(bank_fake.shape[0], z.shape[0], k)
    return z.new_empty((real_rows, z.shape[1]), dtype=acc), z.new_empty((fake_rows, z.shape[1]), dtype=acc)

# The autograd of real_centric_loss is registered in C++ (csrc/rccl.cpp, TORCH_LIBRARY_IMPL(rccl, Autograd, m)):
# a Python register_autograd cost ~0.7 ms per CPU step, as much as the N = 256 step itself.
