"""rccl-predict: the fake probability of each given image or video, one line per file."""
from __future__ import annotations

import argparse
import logging
import sys

from rccl.cli.common import add_common_arguments, error, run_command
from rccl.data.faces import DETECTOR_NAMES
from rccl.predict import predict_files

PROG = "rccl-predict"
log = logging.getLogger("rccl.predict")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Detect the face in each image (or in evenly spaced frames of each video), crop it as "
                    "rccl-prep does, and print one tab-separated line per file: path, fake probability (mean "
                    "over the file's face crops), verdict at 0.5, number of face crops scored. A file that "
                    "cannot be scored prints 'n/a' and the reason; the exit status is then 1.")
    p.add_argument("--checkpoint", "--run", dest="run", required=True, metavar="RUN",
                   help="the run folder written by rccl-train")
    p.add_argument("files", nargs="+", metavar="FILE", help="images or videos")
    p.add_argument("--frames", type=int, default=32, help="frames sampled per video (default: %(default)s)")
    p.add_argument("--detector", choices=DETECTOR_NAMES, default=None,
                   help="face detector (default: the one the run's training crops were found with, from its "
                        "prep.json; see docs/data.md)")
    p.add_argument("--report", default=None, metavar="DIR",
                   help="write one PNG per file into DIR: the sampled frames with the face box, the score over time")
    p.add_argument("--batch-size", type=int, default=32, help="crops per forward pass (default: %(default)s)")
    add_common_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.frames < 1 or args.batch_size < 1:
        return error(PROG, "--frames and --batch-size must be at least 1")

    def body() -> int:
        reasons: dict[str, str] = {}
        results = predict_files(args.files, args.run, device=args.device, frames=args.frames,
                                batch_size=args.batch_size, on_skip=reasons.__setitem__,
                                progress=not args.no_progress, face_detector=args.detector, report_dir=args.report,
                                on_faces=lambda path, found, sampled: log.info(
                                    "%s: face in %d of %d sampled frame(s)", path, found, sampled))
        for r in results:
            if r.fake_probability is None:
                print(f"{r.path}\tn/a\tskipped: {reasons.get(r.path, 'not scored')}\t0")
            else:
                verdict = "fake" if r.fake_probability > 0.5 else "natural"
                print(f"{r.path}\t{r.fake_probability:.4f}\t{verdict}\t{r.n_faces}")
        return 1 if any(r.fake_probability is None for r in results) else 0

    return run_command(PROG, args, body)


if __name__ == "__main__":
    sys.exit(main())
