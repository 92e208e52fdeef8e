"""rccl-synth: write a small synthetic deepfake dataset in the Celeb-DF-v2 layout (see docs/data.md)."""
from __future__ import annotations

import argparse
import sys

from rccl.cli.common import add_common_arguments, error, run_command
from rccl.data.synth import make_synthetic


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rccl-synth",
        description="Make a synthetic Celeb-DF-v2-shaped tree (Celeb-real, Celeb-synthesis, YouTube-real, "
                    "List_of_testing_videos.txt): natural videos of several identities with camera motion, and "
                    "fakes with another identity's face blended in (seams, colour mismatch, blur). Then run "
                    "rccl-prep --dataset synthetic --root OUT. Deterministic by seed; a finished tree is reused.")
    p.add_argument("--out", required=True, help="folder to write the tree to")
    p.add_argument("--faces", default=None, metavar="DIR",
                   help="a folder with one subfolder of photos per identity (real faces dlib can detect); "
                        "default: procedural faces")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--identities", type=int, default=8, help="number of identities (default: %(default)s)")
    p.add_argument("--videos-per-identity", type=int, default=5,
                   help="natural videos per identity; each also gets one fake (default: %(default)s)")
    p.add_argument("--test-videos-per-identity", type=int, default=1, help="of those, in the test list (default: 1)")
    p.add_argument("--youtube", type=int, default=4, help="YouTube-real videos (unknown identity) (default: 4)")
    p.add_argument("--frames", type=int, default=32, help="frames per video (default: %(default)s)")
    p.add_argument("--size", type=int, default=128, help="frame side in pixels (default: %(default)s)")
    p.add_argument("--artifact-strength", type=float, default=1.0,
                   help="scale of the blending artefacts of the fakes; 0 leaves only the identity swap "
                        "(default: %(default)s)")
    p.add_argument("--workers", type=int, default=0, help="processes (default: up to 2)")
    add_common_arguments(p, device=False)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        try:
            out = make_synthetic(args.out, seed=args.seed, n_identities=args.identities,
                                 videos_per_identity=args.videos_per_identity,
                                 test_videos_per_identity=args.test_videos_per_identity, n_youtube=args.youtube,
                                 n_frames=args.frames, size=args.size, artifact_strength=args.artifact_strength,
                                 faces_dir=args.faces, workers=args.workers or None, progress=not args.no_progress)
        except ValueError as e:  # rccl.data.synth rejects bad values with a plain ValueError (not yet an RcclError)
            return error("rccl-synth", str(e))
        print(f"rccl-synth: wrote {out}; next: rccl-prep --dataset synthetic --root {out} --out {out}-prep")
        return 0

    return run_command("rccl-synth", args, body)


if __name__ == "__main__":
    sys.exit(main())
