"""Several training ranks on the CPU for the tests (imported as `ranks`): each rank a forked process with
torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), so rccl forms its gloo
process group from the environment exactly as under torchrun, without the seconds of a fresh interpreter
per rank. A rank that hangs (ranks whose collectives stopped matching) is killed at the deadline and the
call fails, so a hang is a failure, not a stuck suite.
"""
from __future__ import annotations

import multiprocessing
import os
import socket
import sys
import time
import traceback
from typing import Callable

import torch


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(fn: Callable, rank: int, world: int, port: int, args: tuple) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    try:
        code = fn(rank, *args)
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(int(code or 0))


def run_ranks(fn: Callable, *args, world: int = 2, timeout: float = 180, allow_hang: bool = False) -> list[int]:
    """fn(rank, *args) on `world` forked ranks; their exit codes (fn's return value, 1 on an exception,
    -9 for a rank that SIGKILLed itself). Ranks still running at the deadline are killed; that raises
    AssertionError naming them, unless allow_hang (a run whose rank was killed on purpose: its peers may
    wait in a collective until then)."""
    ctx = multiprocessing.get_context("fork")
    port = free_port()
    procs = [ctx.Process(target=_rank_main, args=(fn, r, world, port, args)) for r in range(world)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + timeout
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    hung = [r for r, p in enumerate(procs) if p.is_alive()]
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join()
    assert allow_hang or not hung, f"rank(s) {hung} still running after {timeout:.0f} s: the ranks hung"
    return [p.exitcode for p in procs]
