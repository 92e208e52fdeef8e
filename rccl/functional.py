"""The public functions of the real-centric loss. The math is in docs/method.md and rccl/reference.py.

    loss = real_centric_loss(z, labels, center, bank_real, bank_fake, lam, *,
                             neighbors=2, temperature=0.1, margin=0.2,
                             fusion="smooth", w=None, linear_neighbors=4, mixed_as="negatives", impl="auto")
    bank_real, bank_fake = update_hard_banks(z, labels, center, bank_real, bank_fake, k=16, impl="auto")

impl: "reference" (pure PyTorch), "compiled" (the C++/CUDA kernel for the tensors' device; an error if
this build lacks it), "auto" (compiled when built for that device, the reference otherwise).
The compiled op does the paper's method: fusion "smooth" with mixed_as "negatives" (any lam). The other
variants (fusion "linear" / "linear_smooth", mixed_as "fakes", the ablations of Tables 4 and 6) run on the
reference under "auto" and are refused under "compiled" with an error naming the argument.

Both paths get the same input checks here. The value checks (labels in {0, 1}, finite z, lam in [0, 1])
read data back to the host; they are skipped while torch.compile traces and during CUDA-graph capture,
and left to the compiled CPU kernel when it runs (it checks them in the same pass that reads the data,
and its errors are re-raised here as the same ValueError). The CUDA kernels check values with
device-side asserts instead, so a CUDA call never synchronises with the host; `set_cuda_host_checks(True)`
turns the host checks (a catchable ValueError, three synchronisations per call) on for CUDA as well.
"""
from __future__ import annotations

import math

import torch

from rccl import ops, reference
from rccl.errors import RcclError

IMPLS = ("auto", "reference", "compiled")
FEATURE_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


class LossArgumentError(RcclError, ValueError):
    """A bad value given to the loss functions; the message names the argument."""


class LossTypeError(RcclError, TypeError):
    """An argument of the wrong type or dtype; the message names the argument."""


class CompiledUnavailable(RcclError, RuntimeError):
    """impl='compiled' asked for what this build's kernels cannot do (no kernel for the device, or a
    variant the op does not implement)."""


def _fail(name: str, message: str, kind=LossArgumentError):
    raise kind(f"rccl: {name}: {message}")


def _check_tensor(name, value):
    if not isinstance(value, torch.Tensor):
        _fail(name, f"expected a torch.Tensor, got {type(value).__name__}", LossTypeError)


def _check_float(name, value, dims, device, d=None):
    _check_tensor(name, value)
    if value.dim() != dims:
        _fail(name, f"expected a {dims}-D tensor, got shape {tuple(value.shape)}")
    if not value.is_floating_point():
        _fail(name, f"expected a floating-point tensor, got {value.dtype}", LossTypeError)
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
        _fail("z", f"expected float16, bfloat16, float32 or float64, got {z.dtype}", LossTypeError)
    n, d = z.shape
    if d == 0:
        _fail("z", "feature size D must be at least 1")
    _check_tensor("labels", labels)
    if labels.dim() != 1 or labels.shape[0] != n:
        _fail("labels", f"expected shape ({n},) to match z's N, got {tuple(labels.shape)}")
    if labels.dtype != torch.int64:
        _fail("labels", f"expected int64 (0 = natural, 1 = fake), got {labels.dtype}", LossTypeError)
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
        raise CompiledUnavailable(
            f"rccl: impl='compiled' but this build has no {device.type} kernel: backends() = {ops.backends()}"
            f"{why}. Rebuild with `pip install --no-build-isolation -e .` or pass impl='reference'."
        )
    return built


# On CUDA the kernels check values with device-side asserts (asynchronous: no host synchronisation, but a
# failed assert ends the CUDA context). set_cuda_host_checks(True) switches the host-side checks back on for
# CUDA tensors too: a catchable ValueError at the cost of three synchronisations per call.
_cuda_host_checks = False


def set_cuda_host_checks(enabled: bool) -> bool:
    """Check the values of CUDA inputs (labels in {0, 1}, finite z, lam in [0, 1]) on the host before the
    compiled CUDA op runs (True: a catchable ValueError naming the argument, three host synchronisations
    per call; skipped under torch.compile tracing and CUDA-graph capture) or leave them to the kernels'
    device-side asserts (False, the default: no synchronisation). For the rest of the process; returns the
    previous setting."""
    global _cuda_host_checks
    if not isinstance(enabled, bool):
        _fail("enabled", f"expected True or False, got {enabled!r}", LossTypeError)
    previous, _cuda_host_checks = _cuda_host_checks, enabled
    return previous


def cuda_host_checks() -> bool:
    """Whether set_cuda_host_checks(True) is in force."""
    return _cuda_host_checks


def _kernel_checks_values(compiled: bool, z) -> bool:
    if not compiled:
        return False
    return z.device.type == "cpu" or (z.device.type == "cuda" and not _cuda_host_checks)


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
            raise LossArgumentError(message) from None
        raise


def _as_accumulation(tensor, z):
    """Centre, banks and lam enter the kernels in the accumulation dtype (so float32 buffers work with
    bfloat16 features under autocast)."""
    return tensor.detach().to(reference.accumulation_dtype(z.dtype)).contiguous()


def _check_variant_names(fusion, mixed_as):
    if fusion not in reference.FUSIONS:
        _fail("fusion", f"expected one of {', '.join(reference.FUSIONS)}, got {fusion!r}")
    if mixed_as not in reference.MIXED_AS:
        _fail("mixed_as", f"expected one of {', '.join(reference.MIXED_AS)}, got {mixed_as!r}")


def _check_fusion_weights(fusion, linear_neighbors, w, bank_real, bank_fake, z):
    if fusion == "smooth":
        return
    if isinstance(linear_neighbors, bool) or not isinstance(linear_neighbors, int) or linear_neighbors < 0:
        _fail("linear_neighbors", f"expected an int >= 0, got {linear_neighbors!r}")
    if w is None:
        _fail("w", f"fusion {fusion!r} needs the fusion weights w (one per bank row and neighbour rank)")
    _check_float("w", w, 1, z.device)
    want = reference.linear_weight_count(bank_real.shape[0], bank_fake.shape[0], linear_neighbors)
    if w.shape[0] != want:
        _fail("w", f"expected {want} weights ((K_real + K_fake) x linear_neighbors = "
                   f"({bank_real.shape[0]} + {bank_fake.shape[0]}) x {linear_neighbors}), got {w.shape[0]}")
    if _reading_values_allowed(z) and w.numel() and not bool(((w >= 0) & (w <= 1)).all()):
        _fail("w", f"fusion weights must lie in [0, 1], got min {w.min().item()} max {w.max().item()}")


def compiled_cannot_do(fusion: str = "smooth", mixed_as: str = "negatives") -> str | None:
    """None when the compiled op computes this variant, else the name of the argument it cannot do."""
    if fusion != "smooth":
        return "fusion"
    if mixed_as != "negatives":
        return "mixed_as"
    return None


# Devices whose compiled kernels compute on half-precision features as they arrive (CUDA: the similarity
# tiles and the backward's products on tensor cores, docs/cuda.md). Elsewhere a half-precision z would only
# be converted to float32 inside the kernel (the CPU) or the reference, so training hands the loss float32.
NATIVE_HALF_PRECISION_DEVICES = ("cuda",)
HALF_DTYPES = (torch.float16, torch.bfloat16)


def loss_feature_dtype(device_type: str, dtype: torch.dtype, impl: str = "auto", fusion: str = "smooth",
                       mixed_as: str = "negatives") -> torch.dtype:
    """The dtype a training step should hand real_centric_loss its features in, given the model's output
    dtype (the autocast dtype under autocast): that half precision where the compiled op will run on the
    device and takes it natively (CUDA), float32 for half precision anywhere else, `dtype` otherwise."""
    if dtype not in HALF_DTYPES:
        return dtype
    native = (device_type in NATIVE_HALF_PRECISION_DEVICES and impl != "reference"
              and compiled_cannot_do(fusion, mixed_as) is None and ops.has_backend(device_type))
    return dtype if native else torch.float32


def real_centric_loss(z, labels, center, bank_real, bank_fake, lam, *, neighbors=2, temperature=0.1, margin=0.2,
                      fusion="smooth", w=None, linear_neighbors=4, mixed_as="negatives", impl="auto"):
    """The real-centric margin supervised contrastive loss of a batch (see docs/method.md).

    z (N, D) L2-normalised features (float16/bfloat16/float32/float64); labels (N,) int64, 0 = natural,
    1 = fake; center (D,); bank_real, bank_fake (K, D) global hard features (K may be 0); lam (M,) mixing
    coefficients in [0, 1] (M may be 0). Returns a scalar: z's dtype for float32/float64, float32 for
    half precision. Only z receives a gradient.

    fusion: how a bank feature becomes a positive, "smooth" (the paper's), "linear" or "linear_smooth"
    (Table 4; both need w, ((K_real + K_fake) * linear_neighbors,) weights in [0, 1]); mixed_as: the mixed
    features are "negatives" (the paper's) or "fakes" (Table 6). Only smooth + negatives is compiled.
    """
    _check_tensor("z", z)
    if impl not in IMPLS:
        _fail("impl", f"expected one of {IMPLS}, got {impl!r}")
    _check_variant_names(fusion, mixed_as)
    refused = compiled_cannot_do(fusion, mixed_as)
    if refused is not None and impl == "compiled":
        value = {"fusion": fusion, "mixed_as": mixed_as}[refused]
        raise CompiledUnavailable(
            f"rccl: {refused}: impl='compiled' cannot do {refused}={value!r}: the compiled op computes "
            f"fusion='smooth' with mixed_as='negatives' only. Use impl='auto' (runs this variant on the "
            f"reference) or impl='reference'.")
    compiled = refused is None and _use_compiled(impl, z.device)
    check_inputs(z, labels, center, bank_real, bank_fake, lam, check_values=not _kernel_checks_values(compiled, z))
    _check_fusion_weights(fusion, linear_neighbors, w, bank_real, bank_fake, z)
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
    if w is not None and fusion != "smooth":
        w = _as_accumulation(w, z)
    return reference.real_centric_loss(z, labels, center, bank_real, bank_fake, lam, neighbors, temperature, margin,
                                       fusion=fusion, w=w if fusion != "smooth" else None,
                                       linear_neighbors=linear_neighbors, mixed_as=mixed_as)


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
