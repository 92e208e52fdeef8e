"""Per-call times of a function: CUDA events around back-to-back calls on a GPU, the wall clock on the
CPU, and a CUDA graph of a step. Shared by `rccl-check --speed` and bench/cuda_speed.py."""
from __future__ import annotations

import statistics
import time

import torch


def time_calls(fn, inner: int, repeats: int, warmup: int = 3) -> dict:
    """Per-call microseconds of fn on the GPU: median and min-max over `repeats` runs of `inner`
    back-to-back calls (so an eager call includes the host's launch cost, as a training loop sees it)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    samples = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(inner):
            fn()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end) * 1000.0 / inner)
    return {"median_us": statistics.median(samples), "min_us": min(samples), "max_us": max(samples)}


def time_calls_cpu(fn, inner: int, repeats: int, warmup: int = 1) -> dict:
    """time_calls' figures for a function that runs on the CPU (wall clock, perf_counter)."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - start) * 1e6 / inner)
    return {"median_us": statistics.median(samples), "min_us": min(samples), "max_us": max(samples)}


def capture(fn, z: torch.Tensor | None):
    """A CUDA graph of fn (warmed up on a side stream first); z.grad is reset so backward allocates in
    the graph's pool."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            if z is not None:
                z.grad = None
            fn()
    torch.cuda.current_stream().wait_stream(side)
    if z is not None:
        z.grad = None
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph
