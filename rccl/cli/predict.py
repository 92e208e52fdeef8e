"""rccl-predict: the fake probability of each given image or video, one line per file."""
from __future__ import annotations

import argparse
import sys

from rccl.data.faces import DETECTOR_NAMES
from rccl.errors import RcclError
from rccl.model import ModelError
from rccl.predict import predict_files
from rccl.train.checkpoint import CheckpointError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rccl-predict",
        description="Detect the face in each image (or in evenly spaced frames of each video), crop it as "
                    "rccl-prep does, and print one tab-separated line per file: path, fake probability (mean "
                    "over the file's face crops), verdict at 0.5, number of face crops scored. A file that "
                    "cannot be scored prints 'n/a' and the reason; the exit status is then 1.")
    p.add_argument("--checkpoint", "--run", dest="run", required=True, metavar="RUN",
                   help="the run folder written by rccl-train")
    p.add_argument("files", nargs="+", metavar="FILE", help="images or videos")
    p.add_argument("--frames", type=int, default=32, help="frames sampled per video (default: %(default)s)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--detector", choices=DETECTOR_NAMES, default=None,
                   help="face detector (default: the one the run's training crops were found with, from its "
                        "prep.json; see docs/data.md)")
    p.add_argument("--report", default=None, metavar="DIR",
                   help="write one PNG per file into DIR: the sampled frames with the face box, the score over time")
    p.add_argument("--batch-size", type=int, default=32, help="crops per forward pass (default: %(default)s)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.frames < 1 or args.batch_size < 1:
        print("rccl-predict: error: --frames and --batch-size must be at least 1", file=sys.stderr)
        return 2
    reasons: dict[str, str] = {}
    try:
        results = predict_files(args.files, args.run, device=args.device, frames=args.frames,
                                batch_size=args.batch_size, on_skip=reasons.__setitem__,
                                face_detector=args.detector, report_dir=args.report,
                                on_faces=lambda path, found, sampled: print(
                                    f"rccl-predict: {path}: face in {found} of {sampled} sampled frame(s)",
                                    file=sys.stderr))
    except (FileNotFoundError, ValueError, CheckpointError, ModelError, RcclError) as e:
        print(f"rccl-predict: error: {e}", file=sys.stderr)
        return 2
    for r in results:
        if r.fake_probability is None:
            print(f"{r.path}\tn/a\tskipped: {reasons.get(r.path, 'not scored')}\t0")
        else:
            verdict = "fake" if r.fake_probability > 0.5 else "natural"
            print(f"{r.path}\t{r.fake_probability:.4f}\t{verdict}\t{r.n_faces}")
    return 1 if any(r.fake_probability is None for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
