"""rccl-eval: frame- and video-level metrics of a trained run per quality (the paper's Table 2), on the
run's own manifest or, for the cross-dataset protocol, on another one."""
from __future__ import annotations

import argparse
import sys

from rccl.cli.common import add_common_arguments, error, run_command
from rccl.evaluate import QUALITIES, evaluate_run

PROG = "rccl-eval"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Evaluate a run's stage-2 detector on a manifest's test crops, per quality: AUC, ACC, TPR, "
                    "TNR, FPR at threshold 0.5, EER and AP, frame level and video level (mean of frame scores). "
                    "On the run's own manifest: RUN/metrics.json and, under RUN/eval/, ROC and score-histogram "
                    "PNGs and per-crop scores. With --manifest OTHER (train on one dataset, test on another): the "
                    "same files under RUN/eval/NAME/, RUN/metrics.json untouched. RUN/eval/summary.md lists every "
                    "dataset evaluated for the run.")
    p.add_argument("--checkpoint", "--run", dest="run", required=True, metavar="RUN",
                   help="the run folder written by rccl-train (holds config.yaml and checkpoints/)")
    p.add_argument("--qualities", default=",".join(QUALITIES),
                   help="comma-separated qualities to evaluate (default: %(default)s)")
    p.add_argument("--split", default="test", help="manifest split to evaluate (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=64, help="crops per forward pass (default: %(default)s)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers reading crops (default: %(default)s)")
    p.add_argument("--manifest", default=None,
                   help="evaluate on this manifest (another dataset) instead of the one in RUN/config.yaml")
    p.add_argument("--name", default=None,
                   help="with --manifest: the folder RUN/eval/NAME (default: the manifest's dataset name)")
    p.add_argument("--paper-columns", action="store_true",
                   help="also print the table in the paper's Table 2 columns (its TPR = natural recall, its FPR = "
                        "fake recall)")
    add_common_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    qualities = [q.strip() for q in args.qualities.split(",") if q.strip()]
    if args.batch_size < 1:
        return error(PROG, f"--batch-size must be at least 1, got {args.batch_size}")

    def body() -> int:
        evaluate_run(args.run, qualities, args.split, args.device, args.batch_size, manifest=args.manifest,
                     name=args.name, num_workers=max(0, args.workers), progress=not args.no_progress,
                     paper_columns=args.paper_columns)
        return 0

    return run_command(PROG, args, body)


if __name__ == "__main__":
    sys.exit(main())
