"""Loads the compiled library rccl._C (the op schemas, the autograd and whichever kernels this build
has) and wires the Python side of the ops: the fake (meta) kernels. Importing this never fails because the
library or a backend is missing: `backends()` says what is there and `load_error` says why not.
"""
from __future__ import annotations

import torch

OPS = ("real_centric_loss", "_real_centric_loss_backward", "update_hard_banks")

load_error: str | None = None
try:
    from rccl import _C  # noqa: F401  (runs the TORCH_LIBRARY registrations)
except ImportError as error:  # not built, or built against another torch
    load_error = f"{type(error).__name__}: {error}"

library_loaded = load_error is None

if library_loaded:
    from rccl.ops import _registrations  # noqa: F401,E402


def _has_kernel(dispatch_key: str) -> bool:
    if not library_loaded:
        return False
    try:
        return all(torch._C._dispatch_has_kernel_for_dispatch_key(f"rccl::{op}", dispatch_key) for op in OPS)
    except RuntimeError:  # the schema itself is not registered
        return False


# Kernels register when rccl._C loads and never change after: look once (torch.compile cannot trace the
# dispatcher query, and has_backend runs on every call of rccl.functional).
_BACKENDS = {"cpu": _has_kernel("CPU"), "cuda": _has_kernel("CUDA")}


def backends() -> dict:
    """{"cpu": bool, "cuda": bool}: which compiled kernels are registered for every rccl op."""
    return dict(_BACKENDS)


def has_backend(device_type: str) -> bool:
    return _BACKENDS.get(device_type, False)
