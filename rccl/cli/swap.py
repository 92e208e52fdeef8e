"""rccl-swap: face swaps of real photos -> a labelled `folder` tree (see docs/face_swap.md)."""
from __future__ import annotations

import argparse
import os
import sys
import time

from rccl.cli.common import add_common_arguments, refuse_accelerator, run_command
from rccl.data.swap import BLENDS, BOX_MODES, MOUTHS, ORDERS, SwapSettings, make_swap_tree
from rccl.data.swap.tree import SUMMARY


def build_parser() -> argparse.ArgumentParser:
    d = SwapSettings()
    p = argparse.ArgumentParser(
        prog="rccl-swap",
        description="Make face swaps of natural photos (each target gets a donor's face: 68 landmarks, a "
                    "piecewise-affine warp, colour transfer, a feathered or Poisson blend) and write a labelled "
                    "tree in the folder layout: OUT/real/, OUT/fake/faceswap/, splits.json, forgeries.json and a "
                    "report. Then: rccl-prep --dataset folder --root OUT. Deterministic by seed.")
    p.add_argument("photos", help="a folder of photos (searched recursively) or a text file listing photo paths, "
                                  "one a line (relative to the file's folder or absolute)")
    p.add_argument("--out", required=True, help="the tree's folder (new or empty)")
    p.add_argument("--swaps-per-target", type=int, default=d.swaps, help=f"donors per target photo (default: {d.swaps})")
    p.add_argument("--limit", type=int, default=None,
                   help="use the first N photos (in --order) that have usable landmarks (default: all)")
    p.add_argument("--order", choices=ORDERS, default=d.order,
                   help="the order photos are read and --limit counts in: a seeded draw or sorted by path "
                        f"(default: {d.order})")
    for split, f in zip(("train", "val", "test"), d.fractions):
        p.add_argument(f"--{split}", type=float, default=f, help=f"fraction of the photos in {split} (default: {f})")
    p.add_argument("--seed", type=int, default=d.seed, help=f"(default: {d.seed})")
    p.add_argument("--pair-within", default=None, metavar="REGEX",
                   help="pair a target only with donors whose file names give the same match of REGEX (its groups): "
                        "e.g. UTKFace's gender and race, '^\\d+_(\\d)_(\\d)_' (default: any photo of the split)")
    p.add_argument("--box", choices=BOX_MODES, default=d.box,
                   help="where the landmarks are fitted: dlib's detected face (retried padded), the whole frame "
                        f"(tight face crops), or the frame where dlib finds none (default: {d.box})")
    p.add_argument("--blend", choices=BLENDS, default=d.blend,
                   help=f"feathered mask or Poisson (OpenCV seamlessClone) (default: {d.blend})")
    p.add_argument("--mouth", choices=MOUTHS, default=d.mouth,
                   help="an open target mouth keeps its own inside between the donor's lips (target), or the "
                        f"whole face is the donor's (donor, as FF++'s FaceSwap) (default: {d.mouth})")
    p.add_argument("--workers", type=int, default=0, help="processes (default: up to 2)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier rccl-swap tree in --out")
    add_common_arguments(p, device_help="rccl-swap computes on the CPU only (dlib, OpenCV): cpu or auto")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        refused = refuse_accelerator("rccl-swap", args, "dlib and OpenCV")
        if refused is not None:
            return refused
        settings = SwapSettings(swaps=args.swaps_per_target, fractions=(args.train, args.val, args.test),
                                seed=args.seed, limit=args.limit, order=args.order, pair_within=args.pair_within,
                                box=args.box, blend=args.blend, mouth=args.mouth)
        t0 = time.perf_counter()
        make_swap_tree(args.photos, args.out, settings, workers=args.workers or min(2, os.cpu_count() or 1),
                       overwrite=args.overwrite, progress=not args.no_progress)
        print(open(os.path.join(args.out, SUMMARY), encoding="utf-8").read(), end="")  # the result
        print(f"rccl-swap: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        return 0

    return run_command("rccl-swap", args, body)


if __name__ == "__main__":
    sys.exit(main())
