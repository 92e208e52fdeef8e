"""Speed of the real-centric loss: the compiled op against the pure-PyTorch reference (eager, torch.compile
default, torch.compile mode="reduce-overhead"), for the forward, the backward and both, at several batch
sizes. On CUDA it also times CUDA-graph replay of the compiled op's step and the floor of any autograd
step, (z * z).sum().backward().

    python -m bench.miner_speed                    # N = 256, 1024, 4096, 16384 on the GPU if any, else CPU
    python -m bench.miner_speed --quick            # N = 256, 1024, fewer repetitions
    python -m bench.miner_speed --sizes 256 4096 --device cpu --threads 2

Run it from the repository root (`python -m`, or `python bench/miner_speed.py` with the package installed
or on PYTHONPATH, as bench/gpu_check.sh does).

Prints a table (median and the 10th-90th percentile spread, ms) and writes a JSON file naming the device,
torch version and commit (default bench/results/miner_speed_<device>.json).
"""
from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import rccl
from rccl.fileio import write_json
from rccl.functional import real_centric_loss

ROOT = Path(__file__).resolve().parents[1]

PHASES = ("forward", "backward", "both")


def make_inputs(n, d, k, m, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.zeros(n, dtype=torch.int64)
    labels[torch.randperm(n, generator=g)[: n // 2]] = 1
    unit = lambda *shape: F.normalize(torch.randn(*shape, generator=g), dim=-1)  # noqa: E731
    return dict(z=unit(n, d).to(device, dtype), labels=labels.to(device), center=unit(d).to(device, dtype),
                bank_real=unit(k, d).to(device, dtype), bank_fake=unit(k, d).to(device, dtype),
                lam=torch.rand(m, generator=g).to(device, dtype))


class Timer:
    """Wall time of a callable: CUDA events on the GPU, perf_counter on the CPU; or, with
    clock="process", the process's CPU time (robust on a shared machine, meaningful with --threads 1)."""

    def __init__(self, device, clock="wall"):
        self.cuda = device.type == "cuda"
        self.clock = time.process_time if clock == "process" else time.perf_counter

    def __call__(self, setup, work):
        state = setup()
        if self.cuda:
            torch.cuda.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            work(state)
            end.record()
            end.synchronize()
            return start.elapsed_time(end)
        t0 = self.clock()
        work(state)
        return (self.clock() - t0) * 1e3


def measure(timer, setup, work, reps, budget_s, warmup=2):
    for _ in range(warmup):
        timer(setup, work)
    times = [timer(setup, work)]
    # slow rows (large N through the reference) get fewer repetitions, never fewer than 3
    reps = max(3, min(reps, int(budget_s * 1e3 / max(times[0], 1e-3))))
    times += [timer(setup, work) for _ in range(reps - 1)]
    times.sort()
    q = statistics.quantiles(times, n=10) if len(times) >= 2 else [times[0]] * 9
    return dict(median_ms=statistics.median(times), p10_ms=q[0], p90_ms=q[-1], reps=len(times))


def loss_fns(device):
    """name -> callable(**inputs) returning the loss."""
    ref = lambda **kw: real_centric_loss(**kw, impl="reference")  # noqa: E731
    fns = {}
    if rccl.backends()[device.type]:
        fns["compiled op"] = lambda **kw: real_centric_loss(**kw, impl="compiled")
    fns["reference eager"] = ref
    fns["reference torch.compile"] = torch.compile(ref)
    fns["reference reduce-overhead"] = torch.compile(ref, mode="reduce-overhead")
    return fns


def phase_work(fn, inputs, phase):
    """(setup, work) for one phase; backward is timed alone, after an untimed forward."""
    z = inputs["z"]

    def fresh():
        leaf = z.detach().clone().requires_grad_(phase != "forward")
        return dict(inputs, z=leaf)

    if phase == "forward":
        return fresh, lambda kw: fn(**kw)
    if phase == "both":
        return fresh, lambda kw: fn(**kw).backward()
    return (lambda: fn(**fresh())), lambda loss: loss.backward()


def cuda_graph_step(inputs):
    """Capture forward + backward of the compiled op in a CUDA graph; return the replay callable."""
    z = inputs["z"].detach().clone().requires_grad_()
    static = dict(inputs, z=z)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            z.grad = None
            real_centric_loss(**static, impl="compiled").backward()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    z.grad = None
    with torch.cuda.graph(graph):
        real_centric_loss(**static, impl="compiled").backward()
    return graph.replay


def device_name(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or "CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {torch.get_num_threads()} threads"


def commit():
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "csrc", "rccl"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except OSError:
        return "unknown"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", help="batch sizes N (default 256 1024 4096 16384)")
    parser.add_argument("--quick", action="store_true", help="N = 256, 1024 and fewer repetitions")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16", "float64"])
    parser.add_argument("--dim", type=int, default=128, help="feature size D")
    parser.add_argument("--bank", type=int, default=16, help="K rows per bank")
    parser.add_argument("--mix", type=int, default=16, help="M mixed negatives")
    parser.add_argument("--reps", type=int, default=None, help="repetitions per row (default 30, quick 10)")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds per row; slow rows get fewer repetitions (default 20, quick 5)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    parser.add_argument("--clock", default="wall", choices=["wall", "process"],
                        help="CPU timing: wall time, or process CPU time (use with --threads 1 on a busy machine)")
    parser.add_argument("--only", nargs="+", help="run only these implementations (names as in the table)")
    parser.add_argument("--out", type=Path, default=None, help="JSON path")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sizes = args.sizes or ([256, 1024] if args.quick else [256, 1024, 4096, 16384])
    reps = args.reps or (10 if args.quick else 30)
    budget = args.budget or (5.0 if args.quick else 20.0)
    dtype = getattr(torch, args.dtype)
    if args.clock == "process" and device.type == "cuda":
        parser.error("--clock process times the CPU only")
    timer = Timer(device, args.clock)
    fns = loss_fns(device)
    if args.only:
        fns = {name: fn for name, fn in fns.items() if name in args.only}
    rows = []

    def record(impl, phase, n, result, peak=None):
        row = dict(impl=impl, phase=phase, N=n, **result)
        if peak is not None:
            row["peak_mem_mb"] = peak / 2**20
        rows.append(row)
        print(f"{impl:28s} {phase:9s} N={n:6d}  {result['median_ms']:10.3f} ms  "
              f"[{result['p10_ms']:.3f}, {result['p90_ms']:.3f}]  x{result['reps']}"
              + (f"  peak {row['peak_mem_mb']:.0f} MiB" if peak is not None else ""), flush=True)

    print(f"device: {device_name(device)}; torch {torch.__version__}; commit {commit()}; "
          f"D={args.dim} K={args.bank} M={args.mix} {args.dtype}; clock {args.clock}; "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    for n in sizes:
        inputs = make_inputs(n, args.dim, args.bank, args.mix, dtype, device)
        for impl, fn in fns.items():
            for phase in PHASES:
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                try:
                    setup, work = phase_work(fn, inputs, phase)
                    result = measure(timer, setup, work, reps, budget)
                except (RuntimeError, torch.OutOfMemoryError) as error:  # e.g. the reference out of memory
                    print(f"{impl:28s} {phase:9s} N={n:6d}  failed: {str(error).splitlines()[0][:120]}")
                    continue
                record(impl, phase, n, result, torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None)
        if device.type == "cuda":
            if "compiled op" in fns:
                replay = cuda_graph_step(inputs)
                record("compiled op, CUDA graph", "both", n, measure(timer, lambda: None, lambda _: replay(), reps, budget))
            z = inputs["z"]
            record("floor (z*z).sum().backward", "both", n, measure(
                timer, lambda: z.detach().clone().requires_grad_(), lambda leaf: (leaf * leaf).sum().backward(),
                reps, budget))

    by_key = {(r["impl"], r["phase"], r["N"]): r["median_ms"] for r in rows}
    print("\nspeed-up of the compiled op over the eager reference (median / median):")
    for n in sizes:
        parts = []
        for phase in PHASES:
            ours, ref = by_key.get(("compiled op", phase, n)), by_key.get(("reference eager", phase, n))
            if ours and ref:
                parts.append(f"{phase} {ref / ours:.2f}x")
        if parts:
            print(f"  N={n:6d}: " + ", ".join(parts))

    out = args.out or ROOT / "bench" / "results" / f"miner_speed_{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, dict(device=device_name(device), torch=torch.__version__, commit=commit(),
                         date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), clock=args.clock,
                         load_average=os.getloadavg(), dtype=args.dtype, D=args.dim,
                         K=args.bank, M=args.mix, command=shlex.join(["python", "-m", "bench.miner_speed"] + (argv or sys.argv[1:])),
                         rows=rows))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
