"""The CUDA rows of the miner benchmark: the compiled CUDA op called eagerly and replayed from a captured
CUDA graph, against the floor that autograd sets (a trivial forward+backward) and the eager reference, and
the peak extra memory. Checks the targets of issue #3 and says PASS/FAIL for each.

    python -m bench.cuda_speed                      # N = 256, 1024, 4096, 16384; D = 128, K = 16, M = 16
    python -m bench.cuda_speed --sizes 256 --out bench/results/cuda_speed.json
    python -m bench.cuda_speed --small-tile-max-n 0 # 64 x 64 tiles at every N (default: 32 x 32 up to 1024)
    python -m bench.cuda_speed --dry-run            # no GPU: imports, arguments, the inputs on the CPU

Timing: CUDA events around `--inner` back-to-back calls (so an eager row includes the host's launch cost,
as a training loop sees it), repeated `--repeats` times after warm-up; the median and the spread (min-max)
per call. Rows:
  floor eager / floor graph   (z * z).sum().backward() at N = 256 (the autograd engine's host cost)
  op eager fwd / bwd / fwd+bwd  torch.ops.rccl.real_centric_loss (+ its backward through autograd)
  api eager fwd+bwd           rccl.functional.real_centric_loss(impl="compiled"): adds the input checks,
                              whose value checks read back to the host
  op graph fwd / fwd+bwd      the same captured in a CUDA graph and replayed
  reference eager fwd+bwd     rccl.reference on the same GPU
  reference compiled fwd+bwd  the same through torch.compile (with --compile)
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import torch

import rccl
from rccl import reference
from rccl.fileio import append_json_line, write_json
from rccl.accuracy import make_inputs
from rccl.functional import real_centric_loss
from rccl.timing import capture, time_calls

ROOT = Path(__file__).resolve().parents[1]

OPTIONS = (2, 0.1, 0.2)  # neighbors, temperature, margin
TARGETS_GRAPH_US = {256: 40.0, 4096: 150.0, 16384: 2000.0}
EAGER_OVER_FLOOR = 1.2
PEAK_MIB_AT_16384 = 64.0


def op_args(x):
    acc = reference.accumulation_dtype(x["z"].dtype)
    return [x["z"], x["labels"]] + [x[k].to(acc) for k in ("center", "bank_real", "bank_fake", "lam")]


def floor_rows(inner, repeats) -> dict:
    z = torch.randn(256, 128, device="cuda", requires_grad=True)

    def step():
        z.grad = None
        (z * z).sum().backward()

    eager = time_calls(step, inner, repeats)
    graph = capture(lambda: (z * z).sum().backward(), z)
    return {"floor eager fwd+bwd": eager, "floor graph fwd+bwd": time_calls(graph.replay, inner, repeats)}


def op_rows(N, D, K, M, dtype, inner, repeats, with_reference, with_compile=False) -> dict:
    x = make_inputs(N, D=D, K=K, M=M, dtype=dtype, device="cuda", seed=0)
    args = op_args(x)
    z = x["z"]
    rows = {}

    def forward():
        return torch.ops.rccl.real_centric_loss(*args, *OPTIONS)

    with torch.no_grad():
        rows["op eager fwd"] = time_calls(forward, inner, repeats)
    loss, extra, extra_labels, lse = forward()
    grad_loss = torch.ones((), device="cuda", dtype=loss.dtype)
    backward_args = (grad_loss, z.detach(), x["labels"], extra, extra_labels, lse, *OPTIONS[1:])
    rows["op eager bwd"] = time_calls(lambda: torch.ops.rccl._real_centric_loss_backward(*backward_args), inner,
                                      repeats)

    def forward_backward():
        z.grad = None
        forward()[0].backward()

    rows["op eager fwd+bwd"] = time_calls(forward_backward, inner, repeats)
    rest = {k: v for k, v in x.items() if k != "z"}

    def api_forward_backward():
        z.grad = None
        real_centric_loss(z, **rest, impl="compiled").backward()

    rows["api eager fwd+bwd"] = time_calls(api_forward_backward, inner, repeats)
    with torch.no_grad():
        graph_fwd = capture(forward, None)
    rows["op graph fwd"] = time_calls(graph_fwd.replay, inner, repeats)
    graph = capture(lambda: forward()[0].backward(), z)
    rows["op graph fwd+bwd"] = time_calls(graph.replay, inner, repeats)
    if with_reference:
        def reference_step():
            z.grad = None
            reference.real_centric_loss(z, *args[1:], *OPTIONS).backward()

        rows["reference eager fwd+bwd"] = time_calls(reference_step, max(1, inner // 10), repeats)
    if with_compile:
        compiled = torch.compile(reference.real_centric_loss)

        def compiled_step():
            z.grad = None
            compiled(z, *args[1:], *OPTIONS).backward()

        rows["reference compiled fwd+bwd"] = time_calls(compiled_step, max(1, inner // 10), repeats)
    return rows


def peak_extra_mib(N, D, K, M, dtype) -> float:
    x = make_inputs(N, D=D, K=K, M=M, dtype=dtype, device="cuda", seed=1)
    args = op_args(x)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    torch.ops.rccl.real_centric_loss(*args, *OPTIONS)[0].backward()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - before) / 2**20


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def verdicts(results: dict, sizes) -> list[str]:
    lines = []
    for N, target in TARGETS_GRAPH_US.items():
        if N in sizes:
            got = results["sizes"][str(N)]["op graph fwd+bwd"]["median_us"]
            lines.append(f"{'PASS' if got <= target else 'FAIL'}  graph fwd+bwd N={N}: {got:.1f} us (target <= {target:g})")
    if 256 in sizes:
        floor = results["floor"]["floor eager fwd+bwd"]["median_us"]
        for row in ("op eager fwd+bwd", "api eager fwd+bwd"):
            got = results["sizes"]["256"][row]["median_us"]
            ok = got <= EAGER_OVER_FLOOR * floor
            lines.append(f"{'PASS' if ok else 'FAIL'}  {row} N=256: {got:.1f} us = {got / floor:.2f}x the floor "
                         f"{floor:.1f} us (target <= {EAGER_OVER_FLOOR}x)")
    if "peak_extra_mib_16384" in results:
        got = results["peak_extra_mib_16384"]
        lines.append(f"{'PASS' if got < PEAK_MIB_AT_16384 else 'FAIL'}  peak extra memory fwd+bwd N=16384: "
                     f"{got:.1f} MiB (target < {PEAK_MIB_AT_16384:g})")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1024, 4096, 16384])
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--bank", type=int, default=16, help="K: rows of each bank")
    parser.add_argument("--mix", type=int, default=16, help="M: mixing coefficients")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    parser.add_argument("--inner", type=int, default=50, help="back-to-back calls per timing")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--no-reference", action="store_true", help="skip the eager reference rows")
    parser.add_argument("--compile", action="store_true", help="add the torch.compile'd reference rows")
    parser.add_argument("--small-tile-max-n", type=int, default=None,
                        help="batches up to this many rows use the 32 x 32 tiles (the build's default: 1024)")
    parser.add_argument("--dry-run", action="store_true",
                        help="no GPU needed: check the arguments, imports and inputs on the CPU, time nothing")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "cuda_speed.json")
    parser.add_argument("--jsonl", type=Path, default=None,
                        help="also append each size's rows here as JSON lines as soon as they are measured "
                             "(a run cut short by a time limit keeps them)")
    args = parser.parse_args(argv)
    if args.dry_run:
        for N in args.sizes:
            x = make_inputs(min(N, 64), D=args.dim, K=args.bank, M=args.mix, dtype=getattr(torch, args.dtype))
            op_args(x)
        print(f"cuda_speed: dry run ok (sizes {args.sizes}, backends {rccl.backends()})")
        return 0
    if not torch.cuda.is_available() or not rccl.backends()["cuda"]:
        print(f"cuda_speed: needs a GPU and the CUDA backend (cuda available: {torch.cuda.is_available()}, "
              f"backends: {rccl.backends()})")
        return 2
    dtype = getattr(torch, args.dtype)
    if args.small_tile_max_n is not None:
        torch.ops.rccl._cuda_set_small_tile_max_n(args.small_tile_max_n)
    results = {
        "device": torch.cuda.get_device_name(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "commit": git_commit(), "dtype": args.dtype, "D": args.dim, "K": args.bank, "M": args.mix,
        "inner": args.inner, "repeats": args.repeats, "small_tile_max_n": args.small_tile_max_n,
        "floor": floor_rows(args.inner, args.repeats), "sizes": {},
    }
    meta = {k: results[k] for k in ("device", "torch", "commit", "dtype", "D", "K", "M", "small_tile_max_n")}

    def record(N, rows):
        if args.jsonl:
            for row, t in rows.items():
                append_json_line(args.jsonl, {"kind": "cuda_speed", **meta, "N": N, "row": row, **t})

    record(256, results["floor"])
    for N in args.sizes:
        inner = args.inner if N <= 4096 else max(5, args.inner // 10)
        results["sizes"][str(N)] = op_rows(N, args.dim, args.bank, args.mix, dtype, inner, args.repeats,
                                           not args.no_reference, args.compile)
        record(N, results["sizes"][str(N)])
        print(f"N={N} done: op graph fwd+bwd {results['sizes'][str(N)]['op graph fwd+bwd']['median_us']:.1f} us",
              file=sys.stderr, flush=True)
    if 16384 in args.sizes:
        results["peak_extra_mib_16384"] = peak_extra_mib(16384, args.dim, args.bank, args.mix, dtype)
        record(16384, {"peak extra MiB fwd+bwd": {"median_us": None, "mib": results["peak_extra_mib_16384"]}})
    results["verdicts"] = verdicts(results, args.sizes)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, results)

    print(f"\n{results['device']}, torch {results['torch']}, commit {results['commit']}, {args.dtype}, "
          f"D={args.dim} K={args.bank} M={args.mix}; per call, median [min-max] in us")
    for row, t in results["floor"].items():
        print(f"  {row:28s} N=256   {t['median_us']:9.1f} [{t['min_us']:.1f}-{t['max_us']:.1f}]")
    for N, rows in results["sizes"].items():
        for row, t in rows.items():
            print(f"  {row:28s} N={N:<6s}{t['median_us']:9.1f} [{t['min_us']:.1f}-{t['max_us']:.1f}]")
    for line in results["verdicts"]:
        print(line)
    print(f"json: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
