"""rccl-synth: write a small synthetic deepfake dataset in the Celeb-DF-v2 layout (see docs/data.md)."""
from __future__ import annotations

import argparse
import sys

from rccl.cli.common import add_common_arguments, refuse_accelerator, run_command
from rccl.data.synth import PRESETS, TRACES, SynthConfig, make_synthetic, preset

# flag -> make_synthetic keyword; a flag not given takes the preset's value, else SynthConfig's default
FLAGS = {"seed": "seed", "identities": "n_identities", "videos_per_identity": "videos_per_identity",
         "test_videos_per_identity": "test_videos_per_identity", "youtube": "n_youtube", "frames": "n_frames",
         "size": "size", "artifact_strength": "artifact_strength", "traces": "traces",
         "generator_down": "generator_down", "seam_scale": "seam_scale", "checker_scale": "checker_scale"}


def build_parser() -> argparse.ArgumentParser:
    d = SynthConfig()
    p = argparse.ArgumentParser(
        prog="rccl-synth",
        description="Make a synthetic Celeb-DF-v2-shaped tree (Celeb-real, Celeb-synthesis, YouTube-real, "
                    "List_of_testing_videos.txt): natural videos of several identities with camera motion, and "
                    "fakes with another identity's face blended in (seams, colour mismatch, blur). Then run "
                    "rccl-prep --dataset synthetic --root OUT. Deterministic by seed; a finished tree is reused.")
    p.add_argument("--out", required=True, help="folder to write the tree to")
    p.add_argument("--preset", choices=tuple(PRESETS), default=None,
                   help="start from a named set: 'demo' (what rccl-train's demo uses), 'compression' (the "
                        "paper-tables benchmark: fakes whose traces c40 erases, 106 test videos); the flags "
                        "below override its values")
    p.add_argument("--faces", default=None, metavar="DIR",
                   help="a folder with one subfolder of photos per identity (real faces dlib can detect); "
                        "default: procedural faces")
    p.add_argument("--seed", type=int, default=None, help=f"(default: {d.seed})")
    p.add_argument("--identities", type=int, default=None, help=f"number of identities (default: {d.n_identities})")
    p.add_argument("--videos-per-identity", type=int, default=None,
                   help=f"natural videos per identity; each also gets one fake (default: {d.videos_per_identity})")
    p.add_argument("--test-videos-per-identity", type=int, default=None,
                   help=f"of those, in the test list (default: {d.test_videos_per_identity})")
    p.add_argument("--youtube", type=int, default=None,
                   help=f"YouTube-real videos (unknown identity) (default: {d.n_youtube})")
    p.add_argument("--frames", type=int, default=None, help=f"frames per video (default: {d.n_frames})")
    p.add_argument("--size", type=int, default=None, help=f"frame side in pixels (default: {d.size})")
    p.add_argument("--artifact-strength", type=float, default=None,
                   help="scale of the blending artefacts of the fakes; 0 leaves only the identity swap "
                        f"(default: {d.artifact_strength})")
    p.add_argument("--traces", choices=TRACES, default=None,
                   help="robust: traces that survive compression (the demo's); fragile: traces heavy "
                        "compression erases, on a swap that brings the other identity's colouring (the "
                        "compression preset before issue 10); lookalike: the same traces on a look-alike swap "
                        f"(the compression preset's) (default: {d.traces})")
    p.add_argument("--generator-down", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                   help="fragile/lookalike fakes: the generator's resolution loss, a factor drawn per video "
                        f"from [LO, HI]; 1 1 = none (default: {' '.join(map(str, d.generator_down))})")
    p.add_argument("--seam-scale", type=float, default=None,
                   help=f"fragile/lookalike fakes: multiplier of the blending seam's noise (default: {d.seam_scale})")
    p.add_argument("--checker-scale", type=float, default=None,
                   help="fragile/lookalike fakes: multiplier of the upsampling checkerboard "
                        f"(default: {d.checker_scale})")
    p.add_argument("--workers", type=int, default=0, help="processes (default: up to 2)")
    add_common_arguments(p, device_help="rccl-synth computes on the CPU only (numpy, libx264): cpu or auto; cuda is "
                                         "refused")
    return p


def synth_kwargs(args: argparse.Namespace) -> dict:
    """make_synthetic's keywords: the preset's values (if any), then every flag given."""
    kw = dict(preset(args.preset)["synth"]) if args.preset else {}
    kw.update({key: getattr(args, flag) for flag, key in FLAGS.items() if getattr(args, flag) is not None})
    return kw


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        refused = refuse_accelerator("rccl-synth", args, "numpy and libx264")
        if refused is not None:
            return refused
        out = make_synthetic(args.out, faces_dir=args.faces, workers=args.workers or None,
                             progress=not args.no_progress, **synth_kwargs(args))
        print(f"rccl-synth: wrote {out}; next: rccl-prep --dataset synthetic --root {out} --out {out}-prep")  # the result
        return 0

    return run_command("rccl-synth", args, body)


if __name__ == "__main__":
    sys.exit(main())
