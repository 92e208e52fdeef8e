"""rccl-eval: frame- and video-level metrics of a trained run per quality (the paper's Table 2)."""
from __future__ import annotations

import argparse
import sys

from rccl.data.loaders import CropError
from rccl.data.manifest import ManifestError
from rccl.evaluate import QUALITIES, EvaluationError, evaluate_run
from rccl.metrics import MetricsError
from rccl.model import ModelError
from rccl.train.checkpoint import CheckpointError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rccl-eval",
        description="Evaluate a run's stage-2 detector on its manifest's test crops, per quality: AUC, ACC, TPR, "
                    "TNR, FPR at threshold 0.5, EER and AP, frame level and video level (mean of frame scores). "
                    "Writes RUN/metrics.json and, under RUN/eval/, ROC and score-histogram PNGs and per-crop scores.")
    p.add_argument("--checkpoint", "--run", dest="run", required=True, metavar="RUN",
                   help="the run folder written by rccl-train (holds config.yaml and checkpoints/)")
    p.add_argument("--qualities", default=",".join(QUALITIES),
                   help="comma-separated qualities to evaluate (default: %(default)s)")
    p.add_argument("--split", default="test", help="manifest split to evaluate (default: %(default)s)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--batch-size", type=int, default=64, help="crops per forward pass (default: %(default)s)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers reading crops (default: %(default)s)")
    p.add_argument("--manifest", default=None, help="score this manifest instead of the one in RUN/config.yaml")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    qualities = [q.strip() for q in args.qualities.split(",") if q.strip()]
    if args.batch_size < 1:
        print(f"rccl-eval: error: --batch-size must be at least 1, got {args.batch_size}", file=sys.stderr)
        return 2
    try:
        evaluate_run(args.run, qualities, args.split, args.device, args.batch_size, manifest=args.manifest,
                     num_workers=max(0, args.workers), progress=not args.no_progress)
    except (EvaluationError, ManifestError, MetricsError, CropError, CheckpointError, ModelError) as e:
        print(f"rccl-eval: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
