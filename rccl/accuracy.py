"""How close a compiled kernel must come to the reference, and the inputs it is checked on: the one
definition that the op tests (tests/test_op_*.py), the CUDA emulation (tests/cuda_emulation), `rccl-check`
(rccl/check.py) and bench/cuda_sanitize_case.py share.

    x = make_inputs(47, D=13, K=4, M=5, dtype=torch.bfloat16, device="cuda", seed=0)
    expected = reference_outputs(x, neighbors=2, temperature=0.1, margin=0.2, grad_loss=0.7)
    found = errors((loss, extra, extra_labels, lse, grad), expected)
    passed(found, torch.bfloat16)

The errors are taken against the float64 reference on the SAME (already rounded) inputs, so they measure
the kernel's arithmetic, not the rounding of its inputs:
  loss   |loss - ref| / |ref|               extra  max |extra - ref| (unit rows: absolute = relative)
  lse    max |lse - ref| over finite ones   grad   ||grad - ref|| / ||ref||  (max |grad| when ref is 0)
and the two exact checks: the same extra rows with the same roles (extra_labels), -inf in lse where the
reference has it. Half precision: the loss is float32-exact from the rounded inputs, the gradient is
rounded to z's dtype (and on CUDA's tensor cores the backward's H too), hence the looser bounds there.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from rccl import reference

# The worst of the four relative errors above, per z dtype (docs/cuda.md, "Accuracy", gives the measured
# values: float64 ~1e-16, float32 ~2e-7, bfloat16 ~2e-3, float16 ~3e-4 on the gradient).
BOUNDS = {torch.float64: 1e-9, torch.float32: 1e-4, torch.bfloat16: 1e-2, torch.float16: 2e-3}

# STYLE.md's low-precision rule, for features that arrive rounded (autocast): against the float64 oracle on
# the unrounded features, our error is at most LOW_PRECISION_FACTOR x that of the reference computed from
# the same rounded features, plus LOW_PRECISION_FLOOR (the reference's own error can be ~0 by luck).
LOW_PRECISION_FACTOR = 2.0
LOW_PRECISION_FLOOR = 1e-6

ERROR_KEYS = ("loss", "extra", "lse", "grad")


def make_inputs(N, D=16, K=4, M=4, dtype=torch.float32, device="cpu", *, seed=0, n_fake=None, K_fake=None,
                duplicates=0, requires_grad=True):
    """Seeded random inputs of real_centric_loss, as a dict of its argument names (z, labels, center,
    bank_real, bank_fake, lam), so `real_centric_loss(**make_inputs(...))` works.

    N batch size; D feature size; K rows of bank_real (and of bank_fake unless K_fake is given); M mixing
    coefficients. n_fake: how many fakes (default: a random count with both classes when N >= 2; 0 or N
    makes a class absent). duplicates: copy that many batch rows onto others, so that dot products tie
    exactly and the lowest-index tie-break is exercised. z, banks and center are unit vectors; z gets
    requires_grad when asked. Everything is generated in float64 on the CPU, then cast and moved, so the
    same seed gives the same values on every device.
    """
    g = torch.Generator().manual_seed(seed)
    K_fake = K if K_fake is None else K_fake
    z = F.normalize(torch.randn(N, D, generator=g, dtype=torch.float64), dim=1)
    if duplicates and N >= 2:
        src = torch.randint(0, N, (duplicates,), generator=g)
        dst = torch.randint(0, N, (duplicates,), generator=g)
        z[dst] = z[src]
    if n_fake is None:
        n_fake = int(torch.randint(1, N, (), generator=g)) if N >= 2 else int(torch.randint(0, 2, (), generator=g))
    labels = torch.zeros(N, dtype=torch.int64)
    labels[torch.randperm(N, generator=g)[:n_fake]] = 1
    center = F.normalize(torch.randn(D, generator=g, dtype=torch.float64), dim=0)
    bank_real = F.normalize(torch.randn(K, D, generator=g, dtype=torch.float64), dim=1)
    bank_fake = F.normalize(torch.randn(K_fake, D, generator=g, dtype=torch.float64), dim=1)
    lam = torch.rand(M, generator=g, dtype=torch.float64)

    def put(t, float_dtype):
        return t.to(device=device, dtype=float_dtype)

    z = put(z, dtype).requires_grad_(requires_grad)
    return dict(z=z, labels=labels.to(device), center=put(center, dtype), bank_real=put(bank_real, dtype),
                bank_fake=put(bank_fake, dtype), lam=put(lam, dtype))


def reference_outputs(x: dict, neighbors: int, temperature: float, margin: float, grad_loss: float = 1.0):
    """(loss, extra, extra_labels, lse, grad z): the float64 reference on the inputs `x` as they are
    (already rounded to their dtype), on the CPU; grad for an incoming gradient `grad_loss`."""
    z64 = x["z"].detach().cpu().double().requires_grad_(True)
    rest = [x[k].detach().cpu().double() for k in ("center", "bank_real", "bank_fake", "lam")]
    loss, extra, extra_labels, lse = reference.real_centric_loss_outputs(
        z64, x["labels"].cpu(), *rest, neighbors, temperature, margin)
    (grad,) = torch.autograd.grad(loss, z64, allow_unused=True)
    grad = torch.zeros_like(z64) if grad is None else grad_loss * grad
    return loss.detach(), extra, extra_labels, lse, grad


def errors(found, expected) -> dict:
    """The errors of a kernel's (loss, extra, extra_labels, lse, grad) against reference_outputs'."""
    loss, extra, extra_labels, lse, grad = (t.detach().cpu() for t in found)
    ref_loss, ref_extra, ref_labels, ref_lse, ref_grad = expected
    finite = torch.isfinite(ref_lse)
    return {
        "labels_equal": torch.equal(extra_labels, ref_labels),
        "lse_inf_equal": torch.equal(torch.isinf(lse), torch.isinf(ref_lse)),
        "loss": abs(loss.double() - ref_loss).item() / max(abs(ref_loss.item()), 1e-12),
        "extra": (extra.double() - ref_extra).abs().max().item() if extra.numel() else 0.0,
        "lse": (lse.double()[finite] - ref_lse[finite]).abs().max().item() if finite.any() else 0.0,
        "grad": ((grad.double() - ref_grad).norm() / ref_grad.norm().clamp(min=1e-30)).item()
        if ref_grad.abs().max() > 0 else grad.double().abs().max().item(),
    }


def worst(found: dict) -> float:
    """The largest of the relative errors (inf when an exact check failed, NaN counted as inf)."""
    if not (found["labels_equal"] and found["lse_inf_equal"]):
        return float("inf")
    values = [found[k] for k in ERROR_KEYS]
    return max(float("inf") if v != v else v for v in values)


def passed(found: dict, dtype: torch.dtype) -> bool:
    """Whether errors() is within the bound of z's dtype."""
    return worst(found) <= BOUNDS[dtype]


def within_low_precision_bound(ours: float, reference_in_low_precision: float) -> bool:
    """STYLE.md's rule (see LOW_PRECISION_FACTOR), for one error (loss or gradient) against the oracle."""
    return ours <= LOW_PRECISION_FACTOR * reference_in_low_precision + LOW_PRECISION_FLOOR
