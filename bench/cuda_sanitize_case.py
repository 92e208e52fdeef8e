"""A small case that runs every CUDA kernel path of the rccl ops once, for compute-sanitizer:

    compute-sanitizer --tool memcheck --error-exitcode 9 python bench/cuda_sanitize_case.py
    compute-sanitizer --tool racecheck --error-exitcode 9 python bench/cuda_sanitize_case.py

Odd sizes (partial row, column and feature tiles), empty banks, an absent class, N = 1, several slices of
the nearest-natural search (N > 512) and all four dtypes; update_hard_banks while filling and when full.
It also checks the values against the reference, so a kernel that runs clean but computes garbage still
fails (exit status 1). Kept small: under memcheck every kernel runs ~100x slower.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import rccl  # noqa: E402
from conftest import make_inputs  # noqa: E402
from rccl import reference  # noqa: E402

CASES = [  # (N, D, K, M, n_fake, dtype)
    (37, 20, 3, 5, None, torch.float32),
    (1, 7, 2, 2, None, torch.float32),
    (9, 5, 0, 0, 4, torch.float64),
    (600, 9, 2, 3, 200, torch.bfloat16),
    (70, 130, 4, 20, 6, torch.float16),
    (40, 12, 3, 3, 0, torch.float32),
]


def check_loss(N, D, K, M, n_fake, dtype) -> float:
    x = make_inputs(N, D=D, K=K, M=M, dtype=dtype, device="cuda", seed=N, n_fake=n_fake)
    acc = reference.accumulation_dtype(dtype)
    args = [x["z"], x["labels"]] + [x[k].to(acc) for k in ("center", "bank_real", "bank_fake", "lam")]
    loss, extra, extra_labels, lse = torch.ops.rccl.real_centric_loss(*args, 2, 0.1, 0.2)
    (grad,) = torch.autograd.grad(loss, x["z"])
    z64 = x["z"].detach().double().requires_grad_(True)
    ref = reference.real_centric_loss_outputs(z64, x["labels"], *[a.double() for a in args[2:]], 2, 0.1, 0.2)
    (ref_grad,) = torch.autograd.grad(ref[0], z64)
    assert torch.equal(extra_labels, ref[2]), "extra_labels"
    loss_error = abs(loss.double() - ref[0]).item() / max(abs(ref[0].item()), 1e-12)
    grad_error = ((grad.double() - ref_grad).norm() / ref_grad.norm().clamp(min=1e-12)).item()
    return max(loss_error, grad_error)


def check_banks(N, K, k, dtype) -> None:
    x = make_inputs(N, D=11, K=K, M=0, dtype=dtype, device="cuda", seed=k, requires_grad=False)
    acc = reference.accumulation_dtype(dtype)
    got = torch.ops.rccl.update_hard_banks(x["z"], x["labels"], x["center"].to(acc), x["bank_real"].to(acc),
                                           x["bank_fake"].to(acc), k)
    expected = reference.update_hard_banks(x["z"], x["labels"], x["center"], x["bank_real"], x["bank_fake"], k)
    for g, e in zip(got, expected):
        assert g.shape == e.shape and torch.equal(g, e), "update_hard_banks"


def main() -> int:
    if not torch.cuda.is_available() or not rccl.backends()["cuda"]:
        print(f"needs a GPU and the CUDA backend: cuda available {torch.cuda.is_available()}, "
              f"backends {rccl.backends()}")
        return 2
    worst = {}
    for case in CASES:
        worst[case[-1]] = max(worst.get(case[-1], 0.0), check_loss(*case))
    for N, K, k in ((30, 2, 8), (30, 8, 8), (0, 3, 2)):
        check_banks(N, K, k, torch.float32)
    check_banks(25, 4, 16, torch.bfloat16)
    torch.cuda.synchronize()
    limits = {torch.float32: 1e-4, torch.float64: 1e-9, torch.float16: 2e-2, torch.bfloat16: 5e-2}
    failed = [f"{dtype}: {error:.2e} > {limits[dtype]:.0e}" for dtype, error in worst.items() if error > limits[dtype]]
    for dtype, error in worst.items():
        print(f"{str(dtype):16s} worst relative error vs float64 reference {error:.2e}")
    if failed:
        print("FAILED:", "; ".join(failed))
        return 1
    print("sanitize case: all kernel paths ran, values match the reference")
    return 0


if __name__ == "__main__":
    sys.exit(main())
