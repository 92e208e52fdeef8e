"""A small case that runs every CUDA kernel path of the rccl ops once, for compute-sanitizer:

    compute-sanitizer --tool memcheck --error-exitcode 9 python -m bench.cuda_sanitize_case
    compute-sanitizer --tool racecheck --error-exitcode 9 python -m bench.cuda_sanitize_case --tiles large
    python -m bench.cuda_sanitize_case --dry-run     # no GPU: imports and arguments only

--tiles small|large|both (default both): the 32 x 32 tiles (ops.cpp's default for N <= 1024) or the 64 x 64
ones at every N (float accumulation; float64 always uses 32 x 32), set through
rccl::_cuda_set_small_tile_max_n; `both` runs every case with each.

Odd sizes (partial row, column and feature tiles), empty banks, an absent class, N = 1, several slices of
the nearest-natural search (N > 512), loss column splits and backward fold strips of several tiles
(N = 1100 with the 32 x 32 tiles) and all four dtypes; update_hard_banks while filling and when full.
It also checks the values against the reference, so a kernel that runs clean but computes garbage still
fails (exit status 1). A NaN centre (every centre similarity NaN: the rankings' worst case) runs too and
must match the reference. Kept small: under memcheck every kernel runs ~100x slower.
"""
from __future__ import annotations

import argparse
import sys

import torch

import rccl
from rccl import accuracy, reference
from rccl.accuracy import make_inputs

CASES = [  # (N, D, K, M, n_fake, dtype)
    (37, 20, 3, 5, None, torch.float32),
    (1, 7, 2, 2, None, torch.float32),
    (9, 5, 0, 0, 4, torch.float64),
    (600, 9, 2, 3, 200, torch.bfloat16),
    (70, 130, 4, 20, 6, torch.float16),
    (40, 12, 3, 3, 0, torch.float32),
    (90, 24, 3, 4, 30, torch.bfloat16),  # the tensor-core path at a size --small keeps
    # with the 32 x 32 tiles: 35 row tiles, 700 fold tiles > 528 target blocks, so fold strips of 2 tiles
    # (dZ_I in registers across tiles) and loss splits of 5 column tiles, the shape of large N
    (1100, 9, 2, 3, None, torch.float32),
]


def check_loss(N, D, K, M, n_fake, dtype, nan_centre=False) -> float:
    x = make_inputs(N, D=D, K=K, M=M, dtype=dtype, device="cuda", seed=N, n_fake=n_fake)
    if nan_centre:
        x["center"][0] = float("nan")
    acc = reference.accumulation_dtype(dtype)
    args = [x["z"], x["labels"]] + [x[k].to(acc) for k in ("center", "bank_real", "bank_fake", "lam")]
    loss, extra, extra_labels, lse = torch.ops.rccl.real_centric_loss(*args, 2, 0.1, 0.2)
    (grad,) = torch.autograd.grad(loss, x["z"])
    found = accuracy.errors((loss, extra, extra_labels, lse, grad), accuracy.reference_outputs(x, 2, 0.1, 0.2))
    assert found["labels_equal"], "extra_labels"
    return accuracy.worst(found)


def check_banks(N, K, k, dtype, nan_centre=False) -> None:
    x = make_inputs(N, D=11, K=K, M=0, dtype=dtype, device="cuda", seed=k, requires_grad=False)
    if nan_centre:
        x["center"][0] = float("nan")
    acc = reference.accumulation_dtype(dtype)
    got = torch.ops.rccl.update_hard_banks(x["z"], x["labels"], x["center"].to(acc), x["bank_real"].to(acc),
                                           x["bank_fake"].to(acc), k)
    expected = reference.update_hard_banks(x["z"], x["labels"], x["center"], x["bank_real"], x["bank_fake"], k)
    for g, e in zip(got, expected):
        assert g.shape == e.shape and torch.equal(g, e), "update_hard_banks"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", choices=["small", "large", "both"], default="both")
    parser.add_argument("--small", action="store_true",
                        help="only the cases with N <= 100 (under memcheck and racecheck each kernel runs ~100x "
                             "slower: the short run bench/gpu_check.sh makes)")
    parser.add_argument("--dry-run", action="store_true", help="check imports and arguments; run nothing")
    args = parser.parse_args(argv)
    cases = [case for case in CASES if case[0] <= 100] if args.small else CASES
    if args.dry_run:
        print(f"cuda_sanitize_case: dry run ok ({len(cases)} loss cases, tiles {args.tiles})")
        return 0
    if not torch.cuda.is_available() or not rccl.backends()["cuda"]:
        print(f"needs a GPU and the CUDA backend: cuda available {torch.cuda.is_available()}, "
              f"backends {rccl.backends()}")
        return 2
    worst = {}
    for tiles in (["small", "large"] if args.tiles == "both" else [args.tiles]):
        torch.ops.rccl._cuda_set_small_tile_max_n(1 << 40 if tiles == "small" else 0)
        for case in cases:
            worst[case[-1]] = max(worst.get(case[-1], 0.0), check_loss(*case))
        nan_case = check_loss(45, 16, 3, 4, 15, torch.float32, nan_centre=True)
        worst[torch.float32] = max(worst[torch.float32], nan_case)
        for N, K, k in ((30, 2, 8), (30, 8, 8), (0, 3, 2)):
            check_banks(N, K, k, torch.float32)
        check_banks(25, 4, 16, torch.bfloat16)
        check_banks(30, 4, 8, torch.float32, nan_centre=True)
        print(f"tiles {tiles}: done", flush=True)
    torch.cuda.synchronize()
    limits = accuracy.BOUNDS  # the bounds of the op tests and rccl-check
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
