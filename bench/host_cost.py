"""The host cost of one call of the op (the dispatcher, its C++ autograd node, the glue's checks and
allocations) next to autograd's own floor, on the CPU with next to no kernel work (N = 2, D = 4):

    python -m bench.host_cost            # one torch thread, 200 calls x 7 repeats, median [min-max] in us

Rows: the floor `(z * z).sum().backward()`; the op's forward+backward through torch.ops.rccl; the same
through rccl.functional.real_centric_loss(impl="compiled") (adds the input checks). docs/cuda.md, "For the
eager target", quotes them; on a GPU bench/cuda_speed.py's "floor" and "api eager" rows are the same question.
"""
from __future__ import annotations

import argparse
import sys

import torch

import rccl
from rccl.accuracy import make_inputs
from rccl.functional import real_centric_loss
from rccl.timing import time_calls_cpu


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    if not rccl.backends()["cpu"]:
        print(f"host_cost: needs the compiled CPU kernels (backends {rccl.backends()})")
        return 2
    torch.set_num_threads(1)
    x = make_inputs(2, D=4, K=0, M=0, seed=0)
    z = x["z"]
    rest = {k: v for k, v in x.items() if k != "z"}
    args_op = [rest[k] for k in ("labels", "center", "bank_real", "bank_fake", "lam")]

    def floor():
        z.grad = None
        (z * z).sum().backward()

    def op():
        z.grad = None
        torch.ops.rccl.real_centric_loss(z, *args_op, 2, 0.1, 0.2)[0].backward()

    def api():
        z.grad = None
        real_centric_loss(z, **rest, impl="compiled").backward()

    for name, fn in (("floor (z * z).sum().backward()", floor), ("op fwd+bwd (torch.ops.rccl)", op),
                     ("api fwd+bwd (rccl.functional)", api)):
        t = time_calls_cpu(fn, args.calls, args.repeats, warmup=20)
        print(f"{name:34s} {t['median_us']:8.1f} us  [{t['min_us']:.1f}-{t['max_us']:.1f}]", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
