"""`rccl-check`: are this build's compiled kernels right on this machine?

    rccl-check                          # every compiled backend x every dtype x a few shapes
    rccl-check --speed                  # + forward+backward times against the eager reference
    python -m rccl.check --backend cuda --dtype bfloat16 --jsonl check.jsonl

For every compiled backend of this build that can run here (CPU; CUDA when a GPU is visible) and every
feature dtype (float64, float32, bfloat16, float16), the op (rccl.functional.real_centric_loss,
impl="compiled": its loss, its extra outputs and its gradient through autograd) and the hard-bank update
(update_hard_banks) run on a few shapes (odd N and D, empty banks, an absent class, N = 1, several row
tiles; on CUDA with both tile sizes, 32 x 32 and 64 x 64), and are compared with the float64 reference
(rccl.reference) on the same inputs. The bounds are rccl.accuracy's, the ones the test suite applies.
One table (backend, dtype, tiles, what, shape, worst error, bound, pass/FAIL) is printed; the exit status
is 0 when every row passes, 1 on a mismatch, 2 when nothing could be checked.

--speed adds, on CUDA, the op's eager and CUDA-graph forward+backward at N = 256, 4096, 16384 (D = 128,
K = M = 16) in float32 and bfloat16, against the eager reference; on the CPU the compiled CPU kernel
against the reference at N = 256, 1024. --jsonl PATH writes each row as one JSON line as soon as it is
measured (a run cut short keeps what it measured).

Imports nothing beyond torch and rccl's core (no video, face or DALI packages), so it runs on a machine
that has only torch and this build.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import sys
from dataclasses import dataclass

import torch

from rccl import accuracy, ops, reference
from rccl.fileio import append_json_line
from rccl.functional import FEATURE_DTYPES, real_centric_loss, update_hard_banks
from rccl.timing import capture, time_calls, time_calls_cpu

OPTIONS = dict(neighbors=2, temperature=0.1, margin=0.2)
GRAD_LOSS = 0.7  # an incoming gradient other than 1, so that the backward's scaling is checked too
DTYPE_NAMES = {str(d).removeprefix("torch."): d for d in FEATURE_DTYPES}


@dataclass(frozen=True)
class LossCase:
    name: str
    N: int
    D: int
    K: int
    M: int
    n_fake: int | None = None
    neighbors: int = 2

    def shape(self) -> str:
        return f"N={self.N} D={self.D} K={self.K} M={self.M}" + (f" fakes={self.n_fake}" if self.n_fake is not None
                                                                  else "")


@dataclass(frozen=True)
class BankCase:
    name: str
    N: int
    K: int
    k: int
    n_fake: int | None = None

    def shape(self) -> str:
        return f"N={self.N} K={self.K} k={self.k}" + (f" fakes={self.n_fake}" if self.n_fake is not None else "")


LOSS_CASES = (
    LossCase("odd N and D", 47, 13, 4, 5),
    LossCase("empty banks, no lam", 33, 20, 0, 0),
    LossCase("no naturals", 24, 9, 3, 3, n_fake=24),
    LossCase("N = 1", 1, 7, 2, 2),
    LossCase("neighbors > fakes", 33, 16, 4, 4, n_fake=3, neighbors=10),
    LossCase("several row tiles, D > 128", 150, 130, 16, 16),
)
BANK_CASES = (
    BankCase("filling", 47, 4, 16),
    BankCase("full", 47, 16, 16),
    BankCase("no fakes", 30, 8, 4, n_fake=0),
    BankCase("empty batch", 0, 6, 4, n_fake=0),
)


class Backend:
    """A compiled backend as the check sees it: the op's outputs and gradient, and the bank update, on
    inputs of its device, under one of its tile settings."""

    name: str = ""
    device: str = "cpu"
    tile_settings: tuple[str, ...] = ("-",)

    def tiles_for(self, dtype: torch.dtype) -> tuple[str, ...]:
        return self.tile_settings

    def loss_outputs(self, x: dict, case: LossCase, tiles: str):
        """(loss, extra, extra_labels, lse, grad z for an incoming gradient GRAD_LOSS)."""
        raise NotImplementedError

    def hard_banks(self, x: dict, k: int, tiles: str):
        raise NotImplementedError


class CompiledBackend(Backend):
    """The kernels this build registered for a device, called as users call them: rccl.functional with
    impl="compiled" (its checks, its autograd), and the op itself for the extra outputs."""

    def __init__(self, device: str):
        self.name = device
        self.device = device
        # 32 x 32 tiles for batches up to the build's threshold, 64 x 64 above (float accumulation only)
        self.tile_settings = ("32x32", "64x64") if device == "cuda" else ("-",)

    def tiles_for(self, dtype):
        return ("32x32",) if self.device == "cuda" and dtype == torch.float64 else self.tile_settings

    @contextlib.contextmanager
    def _tiles(self, tiles: str):
        if self.device != "cuda":
            yield
            return
        previous = torch.ops.rccl._cuda_set_small_tile_max_n(1 << 40 if tiles == "32x32" else 0)
        try:
            yield
        finally:
            torch.ops.rccl._cuda_set_small_tile_max_n(previous)

    def loss_outputs(self, x, case, tiles):
        z = x["z"].detach().requires_grad_(True)
        rest = {k: v for k, v in x.items() if k != "z"}
        with self._tiles(tiles):
            loss = real_centric_loss(z, **rest, neighbors=case.neighbors, temperature=OPTIONS["temperature"],
                                     margin=OPTIONS["margin"], impl="compiled")
            (grad,) = torch.autograd.grad(loss, z, torch.tensor(GRAD_LOSS, device=z.device, dtype=loss.dtype),
                                          allow_unused=True)
            acc = reference.accumulation_dtype(z.dtype)
            with torch.no_grad():
                _, extra, extra_labels, lse = torch.ops.rccl.real_centric_loss(
                    z, x["labels"], *(x[k].to(acc) for k in ("center", "bank_real", "bank_fake", "lam")),
                    case.neighbors, OPTIONS["temperature"], OPTIONS["margin"])
        return loss, extra, extra_labels, lse, torch.zeros_like(z) if grad is None else grad

    def hard_banks(self, x, k, tiles):
        with self._tiles(tiles):
            return update_hard_banks(x["z"], x["labels"], x["center"], x["bank_real"], x["bank_fake"], k=k,
                                     impl="compiled")


def available_backends() -> tuple[list[Backend], list[str]]:
    """(the compiled backends that can run here, a note for each built one that cannot)."""
    runnable, notes = [], []
    built = ops.backends()
    if not any(built.values()):
        notes.append(f"this build has no compiled kernels ({ops.load_error or 'rccl._C registered none'}); "
                     f"rebuild with `pip install --no-build-isolation -e .`")
    if built["cpu"]:
        runnable.append(CompiledBackend("cpu"))
    if built["cuda"]:
        if torch.cuda.is_available():
            runnable.append(CompiledBackend("cuda"))
        else:
            notes.append("cuda: the kernels are built but no GPU is visible (torch.cuda.is_available() is False): "
                         "not checked")
    return runnable, notes


def _row(backend, dtype, tiles, what, case, error, bound, ok) -> dict:
    return {"backend": backend.name, "dtype": str(dtype).removeprefix("torch."), "tiles": tiles, "what": what,
            "case": case.name, "shape": case.shape(), "worst_error": error, "bound": bound, "pass": ok}


def check_loss(backend: Backend, dtype, tiles: str, case: LossCase, seed: int) -> dict:
    x = accuracy.make_inputs(case.N, D=case.D, K=case.K, M=case.M, dtype=dtype, device=backend.device, seed=seed,
                             n_fake=case.n_fake, requires_grad=False)
    try:
        found = accuracy.errors(backend.loss_outputs(x, case, tiles),
                                accuracy.reference_outputs(x, case.neighbors, OPTIONS["temperature"],
                                                           OPTIONS["margin"], grad_loss=GRAD_LOSS))
        error = accuracy.worst(found)
    except Exception as failure:  # noqa: BLE001  (a kernel that raises is a failed row, not a crash)
        row = _row(backend, dtype, tiles, "loss fwd+bwd", case, math.inf, accuracy.BOUNDS[dtype], False)
        row["error"] = f"{type(failure).__name__}: {str(failure).strip().splitlines()[0] if str(failure) else ''}"
        return row
    return _row(backend, dtype, tiles, "loss fwd+bwd", case, error, accuracy.BOUNDS[dtype],
                error <= accuracy.BOUNDS[dtype])


def check_banks(backend: Backend, dtype, tiles: str, case: BankCase, seed: int) -> dict:
    """The bank update keeps copies of candidate rows: it must equal the reference exactly (bound 0)."""
    x = accuracy.make_inputs(case.N, D=11, K=case.K, M=0, dtype=dtype, device=backend.device, seed=seed,
                             n_fake=case.n_fake, requires_grad=False)
    expected = reference.update_hard_banks(*(x[k].cpu() for k in ("z", "labels", "center", "bank_real",
                                                                  "bank_fake")), case.k)
    try:
        got = [t.detach().cpu() for t in backend.hard_banks(x, case.k, tiles)]
        error = max((g.double() - e.double()).abs().max().item() if g.shape == e.shape and g.numel() else
                    (0.0 if g.shape == e.shape else math.inf) for g, e in zip(got, expected))
        error = math.inf if error != error else error
    except Exception as failure:  # noqa: BLE001
        row = _row(backend, dtype, tiles, "bank update", case, math.inf, 0.0, False)
        row["error"] = f"{type(failure).__name__}: {str(failure).strip().splitlines()[0] if str(failure) else ''}"
        return row
    return _row(backend, dtype, tiles, "bank update", case, error, 0.0, error == 0.0)


def check_backend(backend: Backend, dtypes=FEATURE_DTYPES, loss_cases=LOSS_CASES, bank_cases=BANK_CASES):
    """Yield one result row at a time (loss cases, then bank cases, per dtype and tile setting)."""
    for dtype in dtypes:
        for tiles in backend.tiles_for(dtype):
            for seed, case in enumerate(loss_cases):
                yield check_loss(backend, dtype, tiles, case, seed)
            for seed, case in enumerate(bank_cases):
                yield check_banks(backend, dtype, tiles, case, seed)


HEADER = f"{'backend':<16} {'dtype':<9} {'tiles':<6} {'what':<13} {'shape':<34} {'worst error':>11} " \
         f"{'bound':>7}  result"


def format_row(row: dict) -> str:
    bound = "exact" if row["bound"] == 0 else f"{row['bound']:.0e}"
    line = (f"{row['backend']:<16} {row['dtype']:<9} {row['tiles']:<6} {row['what']:<13} {row['shape']:<34} "
            f"{row['worst_error']:>11.2e} {bound:>7}  {'pass' if row['pass'] else 'FAIL'}")
    return line + (f"  ({row['error']})" if "error" in row else "")


# ---- --speed -------------------------------------------------------------------------------------------

SPEED_SHAPE = dict(D=128, K=16, M=16)


def speed_rows(backend: Backend, dtype, sizes):
    """Yield {backend, dtype, N, op eager, op graph (CUDA), reference eager} fwd+bwd medians (us)."""
    for N in sizes:
        x = accuracy.make_inputs(N, **SPEED_SHAPE, dtype=dtype, device=backend.device, seed=N)
        z = x["z"]
        rest = {k: v for k, v in x.items() if k != "z"}
        acc = reference.accumulation_dtype(dtype)
        ref_rest = [rest["labels"]] + [rest[k].to(acc) for k in ("center", "bank_real", "bank_fake", "lam")]

        def op_step():
            z.grad = None
            real_centric_loss(z, **rest, **OPTIONS, impl="compiled").backward()

        def reference_step():
            z.grad = None
            reference.real_centric_loss(z, *ref_rest, *OPTIONS.values()).backward()

        row = {"backend": backend.name, "dtype": str(dtype).removeprefix("torch."), "N": N, **SPEED_SHAPE}
        if backend.device == "cuda":
            inner = 20 if N <= 4096 else 5
            row["op eager fwd+bwd us"] = time_calls(op_step, inner, 5)["median_us"]
            graph = capture(lambda: real_centric_loss(z, **rest, **OPTIONS, impl="compiled").backward(), z)
            row["op graph fwd+bwd us"] = time_calls(graph.replay, inner, 5)["median_us"]
            row["reference eager fwd+bwd us"] = time_calls(reference_step, max(1, inner // 4), 3)["median_us"]
        else:
            row["op eager fwd+bwd us"] = time_calls_cpu(op_step, 3, 3)["median_us"]
            row["reference eager fwd+bwd us"] = time_calls_cpu(reference_step, 1, 3)["median_us"]
        yield row


def format_speed(row: dict) -> str:
    graph = row.get("op graph fwd+bwd us")
    ref = row["reference eager fwd+bwd us"]
    best = min(row["op eager fwd+bwd us"], graph if graph is not None else math.inf)
    return (f"{row['backend']:<16} {row['dtype']:<9} N={row['N']:<6} op eager {row['op eager fwd+bwd us']:10.1f} us  "
            f"op graph {'-' if graph is None else f'{graph:.1f}':>10} us  reference eager {ref:10.1f} us  "
            f"speed-up {ref / best:6.1f}x")


def main(argv=None, backends: list[Backend] | None = None) -> int:
    """The command line; `backends` replaces the detected ones (tests: an emulated or a broken backend)."""
    parser = argparse.ArgumentParser(prog="rccl-check", description=__doc__.splitlines()[0],
                                     epilog="See docs/cuda.md, 'Checking a build'.")
    parser.add_argument("--backend", action="append", choices=["cpu", "cuda"],
                        help="check only this backend (repeatable; default: every one that can run here)")
    parser.add_argument("--dtype", action="append", choices=list(DTYPE_NAMES),
                        help="check only this feature dtype (repeatable; default: all four)")
    parser.add_argument("--speed", action="store_true", help="also time forward+backward against the reference")
    parser.add_argument("--sizes", type=int, nargs="+", default=None,
                        help="batch sizes for --speed (default: CUDA 256 4096 16384, CPU 256 1024)")
    parser.add_argument("--jsonl", default=None, help="also append every row to this file as one JSON line")
    args = parser.parse_args(argv)
    if args.sizes is not None and any(n < 1 for n in args.sizes):
        parser.error(f"--sizes: every batch size must be >= 1, got {args.sizes}")

    notes = []
    if backends is None:
        backends, notes = available_backends()
    if args.backend:
        missing = [b for b in args.backend if b not in {be.device for be in backends}]
        if missing:
            print(f"rccl-check: error: backend {', '.join(missing)} cannot run here: "
                  f"{'; '.join(notes) or f'backends() = {ops.backends()}'}", file=sys.stderr)
            return 2
        backends = [b for b in backends if b.device in args.backend]
    for note in notes:
        print(f"note: {note}")
    if not backends:
        print("rccl-check: nothing to check: no compiled backend can run here", file=sys.stderr)
        return 2
    dtypes = [DTYPE_NAMES[d] for d in args.dtype] if args.dtype else list(FEATURE_DTYPES)

    def record(row):
        if args.jsonl:
            append_json_line(args.jsonl, row)

    print(f"rccl-check: torch {torch.__version__}, backends() = {ops.backends()}"
          + (f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""))
    print(HEADER)
    failures = 0
    for backend in backends:
        for row in check_backend(backend, dtypes):
            failures += not row["pass"]
            record({"kind": "check", **row})
            print(format_row(row), flush=True)
    if args.speed:
        print("\nforward+backward per call, median (D = 128, K = M = 16)")
        for backend in backends:
            sizes = args.sizes or ([256, 4096, 16384] if backend.device == "cuda" else [256, 1024])
            speed_dtypes = [torch.float32, torch.bfloat16] if backend.device == "cuda" else [torch.float32]
            for dtype in speed_dtypes:
                for row in speed_rows(backend, dtype, sizes):
                    record({"kind": "speed", **row})
                    print(format_speed(row), flush=True)
    verdict = "all rows pass" if not failures else f"{failures} row(s) FAIL: the kernels disagree with the reference"
    print(f"rccl-check: {verdict}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
