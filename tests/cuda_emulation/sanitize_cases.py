"""Small cases of the emulated kernels for a sanitized build, run in a child process that preloads the
sanitizer's runtime (tests/test_op_cuda_sanitize.py starts it):

    LD_PRELOAD=$(g++ -print-file-name=libtsan.so) python -m tests.cuda_emulation.sanitize_cases --variant tsan

Each case checks its values against the float64 reference too, so a build that runs clean but computes
garbage still fails (exit status 1). A sanitizer report ends the process with the sanitizer's own exit
status (66 for ThreadSanitizer as sanitizer_env sets it, 1 or an abort for AddressSanitizer/UBSan).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from rccl import accuracy, reference
from tests.conftest import make_inputs
from tests.cuda_emulation import emulated

LIMITS = accuracy.BOUNDS  # the op tests' and rccl-check's bounds

# name: (N, D, K, M, n_fake, neighbors, dtype, small_tile_max_n[, target_blocks])
LOSS_CASES = {
    "small_tiles": (47, 16, 4, 4, None, 2, torch.float32, 1024),  # 2 row blocks of 32: the last-block merge
    "large_tiles": (70, 20, 2, 3, 9, 2, torch.float32, 0),        # 2 row blocks of 64, a partial column tile
    "float64": (33, 16, 3, 3, 3, 10, torch.float64, 1024),        # neighbors > class: the whole-class sum
    "bfloat16": (40, 24, 2, 2, None, 2, torch.bfloat16, 1024),
    "float16": (21, 8, 2, 5, 4, 2, torch.float16, 1024),          # M > fakes: zero rows labelled -1
    # few target blocks: 2 column splits of 2 tiles each (merged by the row tile's last split) and fold
    # strips of 2 tiles (dZ_I kept in registers across tiles, dZ_J by atomics), as large N runs on a GPU
    "strips": (70, 20, 2, 3, 9, 2, torch.float32, 1024, 6),
    # the tensor-core path on 64 x 64 tiles: wmma fragments for S and the fold's H products, a fold strip
    # of three tiles (the diagonal, an off-diagonal batch tile, the extra tile on CUDA cores), D = 40: a
    # partial feature chunk
    "bfloat16_tensor_cores": (70, 40, 2, 3, 9, 2, torch.bfloat16, 0, 2),
}
BANK_CASES = {"banks_filling": (30, 4, 8, 10), "banks_full": (23, 6, 4, None)}  # (N, K_old, k, n_fake)


def run_loss_case(library: Path, name: str, seed: int) -> list[str]:
    N, D, K, M, n_fake, neighbors, dtype, small_tile_max_n, *target = LOSS_CASES[name]
    ops = emulated.EmulatedOps(library, small_tile_max_n=small_tile_max_n, seed=seed, target_blocks=(target or [0])[0])
    x = make_inputs(N, D=D, K=K, M=M, dtype=dtype, seed=N + D, n_fake=n_fake, requires_grad=False)
    r = emulated.compare(ops, x, neighbors, verbose=True)
    bad = [k for k in accuracy.ERROR_KEYS if not r[k] <= LIMITS[dtype]]
    return bad + [k for k in ("labels_equal", "lse_inf_equal") if not r[k]]


def run_bank_case(library: Path, name: str, seed: int) -> list[str]:
    N, K_old, k, n_fake = BANK_CASES[name]
    ops = emulated.EmulatedOps(library, seed=seed)
    x = make_inputs(N, D=24, K=K_old, M=0, seed=N + k, n_fake=n_fake, requires_grad=False)
    got = ops.update_hard_banks(x["z"], x["labels"], x["center"], x["bank_real"], x["bank_fake"], k)
    expected = reference.update_hard_banks(x["z"], x["labels"], x["center"], x["bank_real"], x["bank_fake"], k)
    ok = all(g.shape == e.shape and torch.equal(g, e) for g, e in zip(got, expected))
    print(f"{name}: {'ok' if ok else 'MISMATCH'}", flush=True)
    return [] if ok else ["rows"]


def run_overflow_case(library: Path, seed: int) -> list[str]:
    """Finite inputs whose similarities overflow to NaN (inf - inf): every ranking must still write every
    index it later reads (an unwritten one is 0xff.. = -1, an out-of-bounds row under AddressSanitizer)."""
    ops = emulated.EmulatedOps(library, seed=seed)
    x = make_inputs(40, D=8, K=2, M=3, n_fake=12, requires_grad=False)
    big = torch.tensor([3e38, -3e38] * 4)
    x["z"][x["labels"] == 1] = big  # float32 finite, but every fake's similarity to the centre overflows
    x["center"] = big.abs()  # z . centre = inf - inf = NaN
    x["bank_real"][0] = big
    _, extra, extra_labels, lse = ops.real_centric_loss(*x.values(), 2, 0.1, 0.2)
    got = ops.update_hard_banks(x["z"], x["labels"], x["center"], x["bank_real"], x["bank_fake"], 6)
    problems = []
    if not bool(((extra_labels >= -1) & (extra_labels <= 2)).all()):
        problems.append(f"extra_labels not all written: {extra_labels.tolist()}")
    if any(g.shape != (6, 8) for g in got):
        problems.append("bank shapes")
    print(f"overflow: extra_labels={extra_labels.tolist()}", flush=True)
    return problems


def run_nan_centre_case(library: Path, seed: int) -> list[str]:
    """A NaN centre makes every centre similarity NaN: the fakes' ranking and the banks' ranking must
    still give every rank to exactly one candidate (torch.sort's order: NaN ties, broken by index), so the
    results equal the reference's."""
    ops = emulated.EmulatedOps(library, seed=seed)
    x = make_inputs(40, D=8, K=3, M=4, n_fake=15, requires_grad=False)
    x["center"][2] = float("nan")
    r = emulated.compare(ops, x, 2, verbose=True)
    bad = [k for k in accuracy.ERROR_KEYS if not r[k] <= LIMITS[torch.float32]]
    bad += [k for k in ("labels_equal", "lse_inf_equal") if not r[k]]
    got = ops.update_hard_banks(x["z"], x["labels"], x["center"], x["bank_real"], x["bank_fake"], 8)
    expected = reference.update_hard_banks(x["z"], x["labels"], x["center"], x["bank_real"], x["bank_fake"], 8)
    if not all(g.shape == e.shape and torch.equal(g, e) for g, e in zip(got, expected)):
        bad.append("update_hard_banks rows")
    return bad


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=sorted(emulated.FLAGS), default="plain")
    parser.add_argument("--kernels", type=Path, default=emulated.KERNELS, help="folder of the kernel sources")
    parser.add_argument("--cases", nargs="+", default=[*LOSS_CASES, *BANK_CASES, "overflow", "nan_centre"])
    parser.add_argument("--seed", type=int, default=0, help="seed of the block order")
    args = parser.parse_args(argv)
    library = emulated.build(kernels=args.kernels, variant=args.variant)
    failures = []
    for name in args.cases:
        if name in LOSS_CASES:
            bad = run_loss_case(library, name, args.seed)
        elif name in BANK_CASES:
            bad = run_bank_case(library, name, args.seed)
        elif name == "overflow":
            bad = run_overflow_case(library, args.seed)
        elif name == "nan_centre":
            bad = run_nan_centre_case(library, args.seed)
        else:
            parser.error(f"unknown case {name!r}")
        if bad:
            failures.append(f"{name}: {bad}")
    print("FAILURES:" if failures else "sanitized cases match the reference", *failures, sep="\n  ", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
