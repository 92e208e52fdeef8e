"""The public functions of the real-centric loss. The math is in docs/method.md and rccl/reference.py.

    loss = real_centric_loss(z, labels, center, bank_real, bank_fake, lam, *,
                             neighbors=2, temperature=0.1, margin=0.2, impl="auto")
    bank_real, bank_fake = update_hard_banks(z, labels, center, bank_real, bank_fake, k=16, impl="auto")

impl: "reference" (pure PyTorch), "compiled" (the C++/CUDA kernel for the tensors' device; an error if
this build lacks it), "auto" (compiled when built for that device, the reference otherwise).

Both paths get the same input checks here. The value checks (labels in {0, 1}, finite z, lam in [0, 1])
read data back to the host; they are skipped while torch.compile traces and during CUDA-graph capture,
and left to the compiled CPU kernel when it runs (it checks them in the same pass that reads the data,
and its errors are re-raised here as the same ValueError). The CUDA kernels check values with
device-side asserts instead, so a CUDA call never synchronises with the host; set RCCL_CUDA_HOST_CHECKS=1
for the host checks (a catchable ValueError, three synchronisations per call) on CUDA as well.
"""
from __future__ import annotations

import math
import os

import torch

from rccl import ops, reference

IMPLS = ("auto", "reference", "compiled")
FEATURE_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _fail(name: str, message: str, kind=ValueError):
    raise kind(f"rccl: {name}: {message}")


def _check_tensor(name, value):
    if not isinstance(value, torch.Tensor):
        _fail(name, f"expected a torch.Tensor, got {type(value).__name__}", TypeError)


def _check_float(name, value, dims, device, d=None):
    _check_tensor(name, value)
    if value.dim() != dims:
        _fail(name, f"expected a {dims}-D tensor, got shape {tuple(value.shape)}")
    if not value.is_floating_point():
        _fail(name, f"expected a floating-point tensor, got {value.dtype}", TypeError)
    if value.device != device:
        _fail(name, f"is on {value.device} but z is on {device}: all inputs must be on one device")
    if d is not None and value.shape[-1] != d:
        _fail(name, f"expected feature size D = {d} (z's), got shape {tuple(value.shape)}")


def _reading_values_allowed(z) -> bool:
    if torch.compiler.is_compiling():
        return False
    return not (z.is_cuda and torch.cuda.is_current_stream_capturing())


def check_inputs(z, labels, center, bank_real, bank_fake, lam=None, check_values=True) -> None:
    """Raise a ValueError/TypeError naming the argument at fault; return None when the inputs are fine."""
    _check_tensor("z", z)
    if z.dim() != 2:
        _fail("z", f"expected a 2-D tensor (N, D), got shape {tuple(z.shape)}")
    if z.dtype not in FEATURE_DTYPES:
        _fail("z", f"expected float16, bfloat16, float32 or float64, got {z.dtype}", TypeError)
    n, d = z.shape
    if d == 0:
        _fail("z", "feature size D must be at least 1")
    _check_tensor("labels", labels)
    if labels.dim() != 1 or labels.shape[0] != n:
        _fail("labels", f"expected shape ({n},) to match z's N, got {tuple(labels.shape)}")
    if labels.dtype != torch.int64:
        _fail("labels", f"expected int64 (0 = natural, 1 = fake), got {labels.dtype}", TypeError)
    if labels.device != z.device:
        _fail("labels", f"is on {labels.device} but z is on {z.device}: all inputs must be on one device")
    _check_float("center", center, 1, z.device)
    if center.shape[0] != d:
        _fail("center", f"expected shape ({d},) to match z's D, got {tuple(center.shape)}")
    _check_float("bank_real", bank_real, 2, z.device, d)
    _check_float("bank_fake", bank_fake, 2, z.device, d)
    if lam is not None:
        _check_float("lam", lam, 1, z.device)
    if not check_values or not _reading_values_allowed(z) or n == 0:
        return
    if bool(((labels != 0) & (labels != 1)).any()):
        bad = labels[(labels != 0) & (labels != 1)].unique()[:5].tolist()
        _fail("labels", f"must be 0 (natural) or 1 (fake), found {bad}")
    if not bool(torch.isfinite(z).all()):
        _fail("z", "contains NaN or infinite values")
    if lam is not None and lam.numel() and not bool(((lam >= 0) & (lam <= 1)).all()):
        _fail("lam", f"mixing coefficients must lie in [0, 1], got min {lam.min().item()} max {lam.max().item()}")


def _use_compiled(impl: str, device: torch.device) -> bool:
    if impl not in IMPLS:
        _fail("impl", f"expected one of {IMPLS}, got {impl!r}")
    if impl == "reference":
        return False
    built = ops.has_backend(device.type)
    if impl == "compiled" and not built:
        why = f" ({ops.load_error})" if ops.load_error else ""
        raise RuntimeError(
            f"rccl: impl='compiled' but this build has no {device.type} kernel: backends() = {ops.backends()}"
            f"{why}. Rebuild with `pip install --no-build-isolation -e .` or pass impl='reference'."
        )
    return built


# On CUDA the kernels check values with device-side asserts (asynchronous: no host synchronisation, but a
# failed assert ends the CUDA context). RCCL_CUDA_HOST_CHECKS=1 switches the host-side checks back on for
# CUDA tensors too: a catchable ValueError at the cost of three synchronisations per call.
CUDA_HOST_CHECKS = os.environ.get("RCCL_CUDA_HOST_CHECKS", "0") == "1"


def _kernel_checks_values(compiled: bool, z) -> bool:
    if not compiled:
        return False
    return z.device.type == "cpu" or (z.device.type == "cuda" and not CUDA_HOST_CHECKS)


def _call_kernel(op, *args):
    """Run a compiled op; its argument errors ("rccl: <name>: ...") become the ValueError the reference
    path raises."""
    if torch.compiler.is_compiling():  # traced: the error surfaces when the graph runs
        return op(*args)
    try:
        return op(*args)
    except RuntimeError as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else ""
        if message.startswith("rccl: "):
            raise ValueError(message) from None
        raise


def _as_accumulation(tensor, z):
    """Centre, banks and lam enter the kernels in the accumulation dtype (so float32 buffers work with
    bfloat16 features under autocast)."""
    return tensor.detach().to(reference.accumulation_dtype(z.dtype)).contiguous()


def real_centric_loss(z, labels, center, bank_real, bank_fake, lam, *, neighbors=2, temperature=0.1, margin=0.2,
                      impl="auto"):
    """The real-centric margin supervised contrastive loss of a batch (see docs/method.md).

    z (N, D) L2-normalised features (float16/bfloat16/float32/float64); labels (N,) int64, 0 = natural,
    1 = fake; center (D,); bank_real, bank_fake (K, D) global hard features (K may be 0); lam (M,) mixing
    coefficients in [0, 1] (M may be 0). Returns a scalar: z's dtype for float32/float64, float32 for
    half precision. Only z receives a gradient.
    """
    _check_tensor("z", z)
    compiled = _use_compiled(impl, z.device)
    check_inputs(z, labels, center, bank_real, bank_fake, lam, check_values=not _kernel_checks_values(compiled, z))
    if isinstance(neighbors, bool) or not isinstance(neighbors, int) or neighbors < 0:
        _fail("neighbors", f"expected an int >= 0, got {neighbors!r}")
    if not isinstance(temperature, (int, float)) or not math.isfinite(temperature) or temperature <= 0:
        _fail("temperature", f"expected a finite number > 0, got {temperature!r}")
    if not isinstance(margin, (int, float)) or not math.isfinite(margin):
        _fail("margin", f"expected a finite number, got {margin!r}")
    center, bank_real, bank_fake, lam = (_as_accumulation(t, z) for t in (center, bank_real, bank_fake, lam))
    if compiled:
        return _call_kernel(torch.ops.rccl.real_centric_loss, z, labels, center, bank_real, bank_fake, lam,
                            int(neighbors), float(temperature), float(margin))[0]
    return reference.real_centric_loss(z, labels, center, bank_real, bank_fake, lam, neighbors, temperature, margin)


def update_hard_banks(z, labels, center, bank_real, bank_fake, k=16, impl="auto"):
    """New (bank_real, bank_fake): the k candidates (old bank + batch naturals) least similar to `center`,
    and the k (old bank + batch fakes) most similar. Each has min(k, K + n_class) rows, detached, in the
    accumulation dtype (float32 for half-precision z, else z's dtype); their order is not part of the
    contract. Once a bank holds k rows its shape no longer depends on the batch.
    """
    _check_tensor("z", z)
    compiled = _use_compiled(impl, z.device)
    check_inputs(z, labels, center, bank_real, bank_fake, check_values=not _kernel_checks_values(compiled, z))
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        _fail("k", f"expected an int >= 0, got {k!r}")
    z = z.detach()
    center, bank_real, bank_fake = (_as_accumulation(t, z) for t in (center, bank_real, bank_fake))
    if compiled:
        return tuple(_call_kernel(torch.ops.rccl.update_hard_banks, z, labels, center, bank_real, bank_fake, int(k)))
    return reference.update_hard_banks(z, labels, center, bank_real, bank_fake, k)
