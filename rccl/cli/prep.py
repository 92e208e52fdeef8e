"""rccl-prep: turn a deepfake video dataset into face crops and a manifest (see docs/data.md)."""
from __future__ import annotations

import argparse
import logging
import sys

from rccl.cli.common import add_common_arguments, error, run_command
from rccl.data.faces import DEFAULT_DETECTOR, DETECTOR_NAMES
from rccl.data.layouts import DATASETS, QUALITIES
from rccl.data.prep.config import PrepError
from rccl.data.prep import BOX_MODES, PrepConfig, run_prep

log = logging.getLogger("rccl.prep")


def decoder_for_device(decoder: str, device: str | None) -> str:
    """--device says where rccl-prep's GPU-capable step (video decoding) may run: cpu makes --decoder auto
    PyAV and refuses dali; cuda asks for NVDEC (DALI) and refuses pyav; auto (the default) leaves it to
    --decoder. Face detection and cropping run on the CPU either way."""
    device = (device or "auto").split(":")[0]
    if device not in ("auto", "cpu", "cuda"):
        raise PrepError(f"--device {device}: expected auto, cpu or cuda")
    if device == "cpu":
        if decoder == "dali":
            raise PrepError("--decoder dali decodes on the GPU, but --device cpu asks for the CPU; drop one of them")
        return "pyav"
    if device == "cuda":
        if decoder == "pyav":
            raise PrepError("--decoder pyav decodes on the CPU, but --device cuda asks for the GPU; drop one of them")
        return "dali"
    return decoder


def _shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard must look like I/N (e.g. 0/4), got {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise argparse.ArgumentTypeError(f"--shard I/N needs 0 <= I < N, got {text}")
    return i, n


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rccl-prep",
        description="Decode evenly spaced pairs of consecutive frames of every video, find the face with dlib on "
                    "the raw video, and write square face crops for each quality plus OUT/manifest.jsonl. Makes "
                    "the c23/c40 copies with libx264 where the dataset ships raw only (Celeb-DF-v2, synthetic). "
                    "Resumable: a rerun does only what is missing.")
    p.add_argument("--dataset", required=True, choices=DATASETS + ("deepfakebench",),
                   help="tree layout: celebdf (Celeb-DF-v2), celebdf1 (Celeb-DF v1), ffpp (FaceForensics++), dfd "
                        "(FF++'s DeepFakeDetection), dfdc (DFDC parts or its sample folder), folder (ROOT/real/** "
                        "and ROOT/fake/**), synthetic (rccl-synth), deepfakebench (ROOT: DeepfakeBench's dataset JSON, "
                        "imported without re-cropping); see docs/data.md")
    p.add_argument("--root", required=True, help="the dataset's root folder, as distributed")
    p.add_argument("--out", required=True, help="output folder: crops/, manifest.jsonl, ...")
    p.add_argument("--qualities", default=",".join(QUALITIES), help="comma-separated (default: %(default)s)")
    p.add_argument("--workers", type=int, default=0, help="processes (default: one per CPU core)")
    p.add_argument("--shard", type=_shard, default=(0, 1), metavar="I/N",
                   help="do only every N-th video starting at I (several machines or jobs); default 0/1")
    p.add_argument("--pairs", type=int, default=16, dest="pairs_per_video",
                   help="pairs of consecutive frames per video, evenly spaced (default: %(default)s)")
    p.add_argument("--crop-size", type=int, default=320, help="side of the square crops (default: %(default)s)")
    p.add_argument("--enlarge", type=float, default=1.3,
                   help="face box enlargement about its centre (default: %(default)s)")
    p.add_argument("--detector", choices=DETECTOR_NAMES, default=DEFAULT_DETECTOR,
                   help="face detector (measured in docs/data.md): dlib (HOG), mtcnn, dlib+mtcnn (HOG, MTCNN where "
                        "HOG finds none), dlib-cnn (needs face_recognition_models) (default: %(default)s)")
    p.add_argument("--detect-size", type=int, default=640,
                   help="longer side of the frame as dlib's HOG sees it (default: %(default)s)")
    p.add_argument("--crop-format", choices=("png", "jpg"), default="png",
                   help="png: lossless (default); jpg: smaller, decodes on the GPU with DALI (see docs/data.md)")
    p.add_argument("--jpeg-quality", type=int, default=98, help="JPEG quality with --crop-format jpg (default: 98)")
    p.add_argument("--compression", choices=("qp", "crf"), default="qp",
                   help="rate control of the c23/c40 copies made here: qp = constant quantiser as in the paper "
                        "(-qp 23/40), crf = constant rate factor as FaceForensics++ (default: %(default)s)")
    p.add_argument("--preset", default="medium", help="x264 preset of the copies (default: %(default)s)")
    p.add_argument("--boxes", choices=BOX_MODES, default="auto",
                   help="detect: dlib; truth: a synthetic tree's true boxes; auto: truth for procedural synthetic "
                        "faces, detect otherwise (default)")
    p.add_argument("--decoder", choices=("pyav", "dali", "auto"), default="pyav",
                   help="video decoding: pyav (CPU, default), dali (NVDEC on the GPU), auto (dali when possible)")
    p.add_argument("--ffpp-splits", default=None,
                   help="folder with FaceForensics++'s train/val/test.json (default: ROOT/splits)")
    p.add_argument("--frames-root", default=None,
                   help="deepfakebench: the folder its relative frame paths start from (default: the JSON's folder)")
    p.add_argument("--retry-skipped", action="store_true", help="try again the videos an earlier run skipped")
    p.add_argument("--no-landmarks", action="store_false", dest="landmarks",
                   help="do not fit the 68 facial landmarks per crop (self-blending, data.fakes=sbi, needs them)")
    add_common_arguments(p, device_help="where video decoding runs: cpu (PyAV), cuda (NVDEC through DALI), auto "
                                         "(--decoder decides; the default). Face detection runs on the CPU")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        if args.dataset == "deepfakebench":
            from rccl.data.deepfakebench import import_deepfakebench

            log.info(f"rccl-prep: {import_deepfakebench(args.root, args.out, frames_root=args.frames_root)}")
            return 0
        cfg = PrepConfig(dataset=args.dataset, root=args.root, out=args.out,
                         qualities=tuple(q.strip() for q in args.qualities.split(",") if q.strip()),
                         pairs_per_video=args.pairs_per_video, crop_size=args.crop_size, enlarge=args.enlarge,
                         detect_size=args.detect_size, crop_format=args.crop_format,
                         jpeg_quality=args.jpeg_quality, compression=args.compression, preset=args.preset,
                         workers=args.workers, shard=args.shard, ffpp_splits=args.ffpp_splits,
                         retry_skipped=args.retry_skipped, boxes=args.boxes,
                         decoder=decoder_for_device(args.decoder, args.device), detector=args.detector,
                         landmarks=args.landmarks)
        try:
            summary = run_prep(cfg, progress=not args.no_progress, log=log.info)
        except ValueError as e:  # a value rccl.data rejects with a plain ValueError (not an RcclError)
            return error("rccl-prep", str(e))
        return 0 if summary.rows > 0 else 1

    return run_command("rccl-prep", args, body,
                       interrupted="interrupted; what was finished is kept, rerun to continue")

if __name__ == "__main__":
    sys.exit(main())
